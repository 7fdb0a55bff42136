//! A private Redis Cluster for the tests: three masters with a replica each,
//! six `redis-server` children in cluster mode on free loopback ports, joined
//! with `redis-cli --cluster create`, nothing kept on disk but each node's own
//! `nodes.conf` in a temporary directory. A test kills a master (SIGKILL) and
//! waits for its replica to take over, as a crashed shard would be replaced.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};

/// How long a node may be unreachable before the cluster fails it over: short,
/// so a test's failover takes a couple of seconds (production: 15 s).
const NODE_TIMEOUT_MS: u32 = 1000;

/// A master's port and the slot ranges it serves.
type Master = (u16, Vec<(u16, u16)>);

pub struct RedisCluster {
    dir: PathBuf,
    nodes: Vec<(u16, Option<Child>)>,
    /// TLS only, between nodes too, and a password: `None` for a plain cluster.
    password: Option<String>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every slot is served.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// The same cluster reachable only over TLS (clients and the cluster bus;
    /// certificates from a fresh CA: [`ca_file`](Self::ca_file)) and only with
    /// a password, as one on a shared network runs.
    pub async fn start_secured() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(secured: bool) -> anyhow::Result<Self> {
        let ports = cluster_ports()?;
        let dir = std::env::temp_dir().join(format!(
            "wxpay-redis-cluster-{}-{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {dir:?}"))?;
        let mut cluster = Self {
            dir,
            nodes: Vec::new(),
            password: secured.then(|| format!("pw-{}", ulid::Ulid::new())),
        };
        if secured {
            let ca = wechat_sandbox::TestCa::new("wxpay test Redis Cluster CA")?;
            let node = ca.issue_server(&["localhost", "127.0.0.1"])?;
            // A node dials the others' cluster bus and its replica's master
            // as a TLS client, and they check its certificate: one for that.
            let peer = ca.issue_client("redis-cluster-node")?;
            std::fs::write(cluster.dir.join("ca.pem"), ca.cert_pem())?;
            for (name, cert) in [("node", &node), ("peer", &peer)] {
                std::fs::write(cluster.dir.join(format!("{name}.pem")), cert.cert_pem())?;
                std::fs::write(
                    cluster.dir.join(format!("{name}.key")),
                    secrecy::ExposeSecret::expose_secret(&cert.key_pem()),
                )?;
            }
        }
        for port in ports {
            let mut command = Command::new("redis-server");
            match &cluster.password {
                None => command.args(["--port", &port.to_string()]),
                Some(password) => command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .arg("--tls-cert-file")
                    .arg(cluster.dir.join("node.pem"))
                    .arg("--tls-key-file")
                    .arg(cluster.dir.join("node.key"))
                    .arg("--tls-client-cert-file")
                    .arg(cluster.dir.join("peer.pem"))
                    .arg("--tls-client-key-file")
                    .arg(cluster.dir.join("peer.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(cluster.dir.join("ca.pem"))
                    .args(["--tls-auth-clients", "no"])
                    .args(["--requirepass", password, "--masterauth", password]),
            };
            let child = command
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                // A replica can take over only once it has synced: start the
                // (diskless) sync at once rather than after Redis's 5 s delay.
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start redis-server (Debian: apt-get install redis-server)")?;
            cluster.nodes.push((port, Some(child)));
        }
        for port in ports {
            wait_listening(port).await?;
        }
        let mut create = cluster.redis_cli();
        create.args(["--cluster", "create"]);
        for port in ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("cannot run redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        cluster.until_served(Duration::from_secs(30)).await?;
        cluster
            .until_replicas_synced(Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    /// `redis+cluster://` with every node as a seed (what `REDIS_CLUSTER_URLS`
    /// becomes); `rediss+cluster://:PASSWORD@…` for a secured cluster.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        match &self.password {
            None => format!("redis+cluster://{}", seeds.join(",")),
            Some(password) => format!("rediss+cluster://:{password}@{}", seeds.join(",")),
        }
    }

    /// The PEM file of the CA a secured cluster's certificates chain to.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.password.as_ref().map(|_| self.dir.join("ca.pem"))
    }

    /// `redis-cli` with what this cluster asks of a client, given a minute at
    /// most (`--cluster create` waits for ever for nodes that cannot meet).
    fn redis_cli(&self) -> Command {
        let mut command = Command::new("timeout");
        command.args(["60", "redis-cli"]);
        if let Some(password) = &self.password {
            command
                .arg("--tls")
                .arg("--cacert")
                .arg(self.dir.join("ca.pem"))
                .args(["-a", password, "--no-auth-warning"]);
        }
        command
    }

    fn cli(&self, port: u16, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .redis_cli()
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .context("cannot run redis-cli")?;
        if !out.status.success() {
            bail!("redis-cli {args:?} failed");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The port of the master that serves `key`'s slot (a sharded channel's too).
    pub fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let port = self.any_alive()?;
        let slot: u16 = self
            .cli(port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .context("CLUSTER KEYSLOT")?;
        self.masters()?
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|(port, _)| port)
            .with_context(|| format!("no master serves slot {slot}"))
    }

    /// SIGKILL to the node on `port`.
    pub fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.nodes {
            if *p == port {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }

    /// Waits until every slot has a reachable master again (after a kill: the
    /// dead master's replica promoted) and the cluster says `ok`.
    pub async fn until_served(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.served().unwrap_or(false) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the cluster did not serve every slot within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every replica's link to its master is up (its first sync
    /// done): before that, a dead master's replica would refuse to take over.
    async fn until_replicas_synced(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut synced = 0;
            for port in self.alive() {
                let info = self.cli(port, &["INFO", "replication"])?;
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    synced += 1;
                }
            }
            if synced == self.nodes.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the replicas did not sync within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn served(&self) -> anyhow::Result<bool> {
        let port = self.any_alive()?;
        if !self
            .cli(port, &["CLUSTER", "INFO"])?
            .contains("cluster_state:ok")
        {
            return Ok(false);
        }
        let alive: Vec<u16> = self.alive().collect();
        let masters = self.masters()?;
        let covered: u32 = masters
            .iter()
            .filter(|(port, _)| alive.contains(port))
            .flat_map(|(_, ranges)| ranges.iter().map(|(a, b)| u32::from(b - a) + 1))
            .sum();
        Ok(covered == 16384)
    }

    /// Each master's port and slot ranges, from `CLUSTER NODES` (failed ones left out).
    fn masters(&self) -> anyhow::Result<Vec<Master>> {
        let nodes = self.cli(self.any_alive()?, &["CLUSTER", "NODES"])?;
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                continue;
            }
            let flags = fields[2];
            if !flags.contains("master") || flags.contains("fail") {
                continue;
            }
            let Some(port) = fields[1]
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect();
            masters.push((port, ranges));
        }
        Ok(masters)
    }

    fn alive(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
    }

    fn any_alive(&self) -> anyhow::Result<u16> {
        self.alive().next().context("every node is dead")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|(p, _)| *p).collect();
        for port in ports {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Six ports whose cluster-bus twins (port + 10000, which every node also
/// listens on) are free too, below the ephemeral range so the twins exist.
fn cluster_ports() -> anyhow::Result<[u16; 6]> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    let mut ports = Vec::new();
    let mut candidate = 20_000 + (seed % 20_000) as u16;
    for _ in 0..2_000 {
        candidate = if candidate >= 44_000 {
            20_000
        } else {
            candidate + 7
        };
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(candidate) && free(candidate + 10_000) {
            ports.push(candidate);
            if ports.len() == 6 {
                let mut out = [0; 6];
                out.copy_from_slice(&ports);
                return Ok(out);
            }
        }
    }
    bail!("no six free port pairs for a Redis Cluster")
}

async fn wait_listening(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("redis-server did not listen on {port}")
}
