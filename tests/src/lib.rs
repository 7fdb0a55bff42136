//! The end-to-end harness: runs the real binaries (`wechat-sandbox`,
//! `payment-service`, `gateway`, `poller`) as child processes, each on a free port,
//! against a fresh Postgres database and the local Redis, configured through the
//! environment exactly as a deployment configures them.
//!
//! It owns: finding (and building) the binaries, the [`Process`] guard that kills
//! a child when a test ends however it ends, and [`Stack`], which starts the four
//! services and waits until each one reports ready (gRPC health, `/readyz`).
//! It must not reach into the services' libraries to run them: the point of these
//! tests is the binaries as shipped, with their `main`, configuration and signals.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use payment_service::reconciler::ReconcilerConfig;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};
use wxpay_core::wechat::{ApiKey, Merchant, SignType};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient,
};

/// The merchant every process of a stack shares (the sandbox accepts only it).
/// The key is a test key, only ever valid against the sandbox.
pub const APP_ID: &str = "wx0123456789abcdef";
pub const MCH_ID: &str = "1900000109";
pub const API_KEY: &str = "sandboxtestkey0123456789abcdefgh";

/// [`APP_ID`], [`MCH_ID`] and [`API_KEY`] as the merchant they make.
pub fn merchant() -> Merchant {
    let api_key = match ApiKey::parse(API_KEY) {
        Ok(key) => key,
        Err(reason) => unreachable!("the harness's test key is valid: {reason}"),
    };
    Merchant {
        app_id: APP_ID.to_owned(),
        mch_id: MCH_ID.to_owned(),
        api_key,
    }
}

/// The workspace's binaries, each started by [`Stack::start`].
pub const BINARIES: [&str; 4] = ["wechat-sandbox", "payment-service", "gateway", "poller"];

/// How long a service may take to become ready: it runs the migrations on a
/// fresh database first, and the machine may be busy building or testing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where cargo puts the debug binaries (`CARGO_TARGET_DIR` honoured).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug").join(name)
}

/// Builds the binaries once per test process. `cargo test -p e2e-tests` does not
/// build other packages' binaries, and a stale binary would test old code; a
/// build that is up to date takes about a second. `scripts/test.sh` builds them
/// before `cargo test`, so there this is a no-op.
pub fn build_binaries() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args(["build", "--quiet", "--bins"]);
            for bin in BINARIES {
                cmd.args(["-p", bin]);
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("cargo build --bins failed: {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A port nobody listens on right now. Another process could take it before the
/// child binds it; the child then fails to start and the test says so.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` distinct free ports: all are held until all are chosen, so none repeats.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A running binary, killed when dropped (a failed assertion must not leave
/// servers behind). Its stdout and stderr go to a log file shown on failure.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Process {
    /// Starts `target/debug/<name>` with exactly `env` (nothing inherited, so a
    /// developer's shell or `.env` cannot change what is tested).
    pub fn spawn(name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let path = binary(name);
        let dir = std::env::temp_dir().join("wxpay-e2e");
        std::fs::create_dir_all(&dir)?;
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(&path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            // The binaries load `.env` from the working directory and its parents:
            // run them where there is none.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines the process printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends SIGTERM (what `docker stop` and Kubernetes send) and waits up to
    /// `within` for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} still running {within:?} after SIGTERM; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `probe` until it succeeds, failing early (with the log) if the
    /// process exits, and after [`READY_TIMEOUT`].
    async fn wait_ready<F, Fut>(&mut self, mut probe: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if probe().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `POLLER_FALLBACK_DELAY_MS`: how long a watched order waits for its
    /// notification before the poller asks WeChat (through QueryOrder).
    pub fallback_delay: Duration,
    /// `POLLER_FALLBACK_MAX_DELAY_MS`: the cap of the fallback's backoff.
    pub fallback_max_delay: Duration,
    /// `RECONCILE_*`: when payment-service's reconciler asks WeChat itself.
    pub reconcile: ReconcilerConfig,
}

impl Default for StackOptions {
    /// A fallback and a reconciler far beyond any test's duration, so a status
    /// change can only have come through the notification path.
    fn default() -> Self {
        Self {
            fallback_delay: Duration::from_secs(600),
            fallback_max_delay: Duration::from_secs(600),
            reconcile: ReconcilerConfig {
                after: Duration::from_secs(600),
                ..ReconcilerConfig::default()
            },
        }
    }
}

/// The four binaries, wired as in docker-compose.yml: the sandbox plays WeChat,
/// payment-service calls it and gives it the gateway as `notify_url`, the poller
/// falls back to payment-service's QueryOrder.
///
/// Fields drop in declaration order: the poller and gateway go before the
/// services they call.
#[derive(Debug)]
pub struct Stack {
    pub poller: Process,
    pub gateway: Process,
    pub payment: Process,
    pub sandbox: Process,
    pub sandbox_url: String,
    /// The stack's own fresh database, for tests that act as an operator would.
    pub database_url: String,
    pub payment_url: String,
    pub gateway_url: String,
    pub poller_url: String,
    http: reqwest::Client,
}

impl Stack {
    /// Starts every binary on its own free ports against a fresh database, and
    /// returns once each reports ready.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        build_binaries()?;
        let database_url = wxpay_store::testing::fresh_database_url().await?;
        let redis_url = wxpay_store::testing::redis_url();
        let [sandbox_port, payment_port, gateway_port, poller_port, metrics_port] = free_ports()?;
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        // The same settings type the single-process stack runs from: which binary
        // gets which URL is decided once, in `wxpay::split`.
        let settings = wxpay::Settings {
            storage: wxpay::Storage::Postgres(database_url.clone()),
            bus: wxpay::Bus::Redis(redis_url),
            merchant: merchant(),
            sign_type: SignType::HmacSha256,
            payment_addr: local(payment_port),
            gateway_addr: local(gateway_port),
            poller_addr: local(poller_port),
            poller_metrics_addr: local(metrics_port),
            sandbox_addr: local(sandbox_port),
            api_token: None,
            // WeChat's retry schedule 1000 times faster: a retried notification
            // arrives in milliseconds instead of 15 s.
            sandbox_time_factor: 1000,
            fallback_delay: options.fallback_delay,
            fallback_max_delay: options.fallback_max_delay,
            reconcile: options.reconcile.clone(),
        };
        let env = settings.split_env()?;
        let with_logs = |mut env: Vec<(&'static str, String)>| {
            env.push(("RUST_LOG", "info".to_owned()));
            env
        };
        let url = |port| format!("http://127.0.0.1:{port}");
        let (sandbox_url, payment_url, gateway_url, poller_url) = (
            url(sandbox_port),
            url(payment_port),
            url(gateway_port),
            url(poller_port),
        );
        let mut sandbox = Process::spawn("wechat-sandbox", &with_logs(env.sandbox))?;
        let mut payment = Process::spawn("payment-service", &with_logs(env.payment))?;
        let mut gateway = Process::spawn("gateway", &with_logs(env.gateway))?;
        let mut poller = Process::spawn("poller", &with_logs(env.poller))?;

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        sandbox
            .wait_ready(|| http_ok(&http, format!("{sandbox_url}/sandbox/faults")))
            .await?;
        payment
            .wait_ready(|| grpc_serving(&payment_url, "wxpay.v1.PaymentService"))
            .await?;
        gateway
            .wait_ready(|| http_ok(&http, format!("{gateway_url}/readyz")))
            .await?;
        poller
            .wait_ready(|| grpc_serving(&poller_url, "wxpay.v1.OrderStatusService"))
            .await?;

        Ok(Self {
            poller,
            gateway,
            payment,
            sandbox,
            sandbox_url,
            database_url,
            payment_url,
            gateway_url,
            poller_url,
            http,
        })
    }

    pub async fn payments(&self) -> anyhow::Result<PaymentServiceClient<Channel>> {
        Ok(PaymentServiceClient::new(connect(&self.payment_url).await?))
    }

    pub async fn watcher(&self) -> anyhow::Result<OrderStatusServiceClient<Channel>> {
        Ok(OrderStatusServiceClient::new(
            connect(&self.poller_url).await?,
        ))
    }

    /// The sandbox's control API: `POST /sandbox/orders/{no}/{action}` with a JSON
    /// body (`pay`, `fail`, `userpaying`), returning the order as the sandbox sees it.
    pub async fn sandbox_post(
        &self,
        out_trade_no: &str,
        action: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let res = self
            .http
            .post(format!(
                "{}/sandbox/orders/{out_trade_no}/{action}",
                self.sandbox_url
            ))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            bail!("sandbox {action} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET` on the sandbox's control API (`/sandbox/...`), as JSON.
    pub async fn sandbox_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.sandbox_url))
            .send()
            .await?
            .error_for_status()?;
        Ok(res.json().await?)
    }
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

async fn http_ok(http: &reqwest::Client, url: String) -> bool {
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

/// grpc.health.v1 `Check` for `service`, as a load balancer would probe.
async fn grpc_serving(url: &str, service: &str) -> bool {
    let Ok(channel) = connect(url).await else {
        return false;
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().status() == ServingStatus::Serving)
}
