//! What the figures were measured on: cores, memory, CPU model, kernel, load,
//! and the versions of rustc, Postgres and Redis, with the date.

use std::process::Command;

use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub memory: String,
    pub cpu_model: String,
    pub kernel: String,
    pub load_at_start: String,
    pub rustc: String,
    pub postgres: String,
    pub redis: String,
    pub date: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
}

fn command(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Redis' version from `INFO server`, spoken in raw RESP to avoid a client dependency.
async fn redis_version(redis_url: &str) -> String {
    // A cluster URL (`redis+cluster://a:1,b:2`): its first seed answers for all.
    let hostport = redis_url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .next()
        .unwrap_or_default()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:6379")
        .to_owned();
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(&hostport).await?;
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n").await?;
        let mut buf = vec![0u8; 8192];
        let n = s.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), probe).await {
        Ok(Ok(text)) => field(&text, "redis_version")
            .unwrap_or("unknown")
            .to_owned(),
        _ => "unknown".into(),
    }
}

impl Machine {
    pub async fn describe(pool: &PgPool, redis_url: &str) -> Self {
        let meminfo = read("/proc/meminfo");
        let memory = field(&meminfo, "MemTotal")
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let cpuinfo = read("/proc/cpuinfo");
        let postgres: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(pool)
            .await
            .unwrap_or_else(|_| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory,
            cpu_model: field(&cpuinfo, "model name")
                .unwrap_or("unknown")
                .to_owned(),
            kernel: command("uname", &["-r"]),
            load_at_start: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            rustc: command("rustc", &["--version"]),
            postgres,
            redis: match wxpay_store::events::cluster_nodes(redis_url) {
                Some(seeds) => format!(
                    "{} (a Redis Cluster: {} seed nodes, sharded pub/sub)",
                    redis_version(redis_url).await,
                    seeds.len()
                ),
                None => redis_version(redis_url).await,
            },
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "| machine | |\n|---|---|\n\
             | date | {} |\n| cores (nproc) | {} |\n| memory | {} |\n| CPU | {} |\n\
             | kernel | {} |\n| load average at start (1/5/15 min) | {} |\n\
             | rustc | {} |\n| PostgreSQL | {} |\n| Redis | {} |\n",
            self.date,
            self.nproc,
            self.memory,
            self.cpu_model,
            self.kernel,
            self.load_at_start,
            self.rustc,
            self.postgres,
            self.redis
        )
    }
}
