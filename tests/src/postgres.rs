//! A private PostgreSQL server for the tests that crash the database itself:
//! its own data directory (initdb) and loopback port, killed with SIGKILL on
//! every one of its processes at once, as a power cut leaves it, and started
//! again on the same directory, so what survives is what its WAL made durable.
//! Never the shared server other tests use.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use sqlx::Connection;

pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// The postmaster (this process's own child, so it is reaped here).
    child: Option<std::process::Child>,
    /// `max_connections` at every (re)start.
    max_connections: u32,
}

impl PrivatePostgres {
    /// initdb into a new directory under the system temp dir, then start.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_max_connections(200).await
    }

    /// [`start`](Self::start) with the server's `max_connections`: the chaos
    /// soak runs every replica on a budget of 100, as a small managed server has.
    pub async fn start_with_max_connections(max_connections: u32) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let port = crate::free_port()?;
        let dir = std::env::temp_dir().join(format!("wxpay-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut pg = Self {
            port,
            dir,
            bin,
            child: None,
            max_connections,
        };
        pg.own_dir()?;
        let status = pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("initdb")?;
        if !status.success() {
            bail!("initdb failed: {status}");
        }
        pg.restart().await?;
        Ok(pg)
    }

    /// The server's `postgres` database: the stack's own, nothing else uses it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// SIGKILL to the postmaster and every child of it: no checkpoint, no WAL flush, no
    /// goodbye to clients. What was not yet written to the WAL is gone.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // Stopped first, so it forks nothing new while its backends die;
            // then every child (backends, WAL writer, checkpointer) and itself.
            signal("-STOP", pid);
            let children = children_of(pid);
            for c in &children {
                signal("-KILL", *c);
            }
            signal("-KILL", pid);
            let _ = child.kill();
            let _ = child.wait();
            // The restart refuses to start while any of them still holds the
            // shared memory: wait until each is gone (or a zombie, detached).
            for _ in 0..200 {
                if children.iter().all(|c| !alive(*c)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Starts the server on the same directory and port (crash recovery runs
    /// first when it was killed) and waits until it answers a query.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill_9();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            // Durable as a production server is: the test is about what fsync keeps.
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .arg("-c")
            .arg(format!("max_connections={}", self.max_connections))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(self.dir.join("log"))?))
            .process_group(0)
            .spawn()
            .context("starting postgres")?;
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut c) = sqlx::postgres::PgConnection::connect(&self.url()).await {
                if sqlx::query("SELECT 1").execute(&mut c).await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "postgres did not answer on {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        )
    }

    /// Postgres refuses to run as root: when the tests are root (CI), the
    /// server runs as the `postgres` account the Debian package creates, and
    /// the directory is handed to it.
    fn own_dir(&self) -> anyhow::Result<()> {
        if !is_root() {
            return Ok(());
        }
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.dir)
            .status()
            .context("chown")?;
        if !status.success() {
            bail!("cannot hand {} to the postgres account", self.dir.display());
        }
        Ok(())
    }

    /// The tool as the account that owns the directory. Switched by the
    /// child itself (setuid, not runuser), so the postmaster is this process's
    /// own child and is reaped here: an unreaped postmaster would stay a
    /// zombie whose pid still "runs", and the restart would refuse the lock file.
    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = postgres_account() {
            c.uid(uid).gid(gid);
        }
        c
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill_9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn children_of(pid: u32) -> Vec<u32> {
    Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Running (not exited, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    id(&["-u"]).is_some_and(|uid| uid == 0)
}

/// The `postgres` account's uid and gid, when running as root.
fn postgres_account() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The server binaries: Debian keeps them under /usr/lib/postgresql/<major>/bin
/// (newest first), else `pg_config --bindir`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    found.sort();
    if let Some(dir) = found.pop() {
        return Ok(dir);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .context("no PostgreSQL server binaries (Debian: apt-get install postgresql)")?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if Path::new(&dir).join("postgres").exists() {
        Ok(dir)
    } else {
        bail!("no postgres binary in {}", dir.display())
    }
}
