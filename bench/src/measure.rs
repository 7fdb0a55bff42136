//! Measuring tools shared by the scenarios: latency percentiles, CPU time of this
//! process (getrusage) and of other processes by name (/proc/PID/stat), resident
//! memory of a child (/proc/PID/status), and the file-descriptor limit.

use std::time::{Duration, Instant};

/// p50 / p99 / max of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub mean: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// Nearest-rank percentiles; an empty set summarizes to zeros (and `n = 0`, which
/// the report shows, so a scenario that measured nothing cannot pass silently).
pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let rank = |p: f64| {
        let i = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[i - 1]
    };
    Summary {
        n: samples.len(),
        mean,
        p50: rank(0.50),
        p99: rank(0.99),
        max: samples[samples.len() - 1],
    }
}

/// Milliseconds with enough digits for sub-millisecond figures.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// CPU time (user + system) this process has used so far, every thread included.
pub fn self_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// utime + stime of one process from /proc/PID/stat.
pub fn cpu_of_pid(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after `) `.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / clock_ticks()))
}

/// Summed CPU time of every process whose name is `comm` (postgres backends, redis-server).
/// Backends that exit inside a window take their CPU with them, so the figure is a floor.
pub fn cpu_of_comm(comm: &str) -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
        .filter_map(cpu_of_pid)
        .sum()
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmRSS line {line:?}"))?
        .parse()?;
    Ok(kib * 1024)
}

/// Raises RLIMIT_NOFILE as far as allowed (children inherit it): 100k streams
/// over ~700 connections need more sockets than the usual 1024, and 10,000
/// WebSocket clients in this process hold 20,000 (both ends), exactly a
/// common hard limit, leaving the notification sender none. Root may raise the
/// hard limit itself, up to the kernel's `fs.nr_open`; anyone else gets the
/// soft limit raised to the hard one.
pub fn raise_nofile() -> u64 {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let wanted = nr_open.min(4 * 1024 * 1024);
        if wanted > lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return wanted;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// Busy CPU time of the whole machine (every core) from /proc/stat: user, nice,
/// system, irq, softirq and steal; idle and iowait excluded.
pub fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let Some(line) = stat.lines().next() else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let ticks: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum();
    Duration::from_micros(ticks * 1_000_000 / clock_ticks())
}

/// CPU used by this process, Postgres, Redis and the whole machine at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    at: Instant,
    bench: Duration,
    postgres: Duration,
    redis: Duration,
    machine: Duration,
}

/// CPU over a window, in percent of one core (200% = both cores of a 2-core machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    pub bench: f64,
    pub postgres: f64,
    pub redis: f64,
    /// Everything else on the machine (other jobs, the kernel's own threads): a run
    /// where this is large was disturbed.
    pub others: f64,
}

impl CpuSnapshot {
    pub fn take() -> Self {
        Self {
            at: Instant::now(),
            bench: self_cpu(),
            postgres: cpu_of_comm("postgres"),
            redis: cpu_of_comm("redis-server"),
            machine: machine_busy(),
        }
    }

    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let wall = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let pct = |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() / wall * 100.0;
        let (bench, postgres, redis) = (
            pct(self.bench, earlier.bench),
            pct(self.postgres, earlier.postgres),
            pct(self.redis, earlier.redis),
        );
        CpuUse {
            bench,
            postgres,
            redis,
            others: (pct(self.machine, earlier.machine) - bench - postgres - redis).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = summarize((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
    }

    #[test]
    fn this_process_uses_cpu() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(self_cpu() > Duration::ZERO);
        assert!(cpu_of_pid(std::process::id()).is_some());
    }
}
