//! The deployment the soak breaks: the sandbox, two payment-services, two
//! gateways and two pollers as real processes, a private Postgres that every
//! one of them reaches only through a [`Proxy`] the soak can cut, a private
//! Redis it can restart, and round-robin proxies in front of each pair (the
//! sandbox's notify_url, the clients' payment-service, the watchers' poller).
//! It starts, kills and restarts processes; what to break when is `faults`'.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::sync::Mutex;
use wxpay_core::{watch_token::WatchSecret, wechat::SignType};

use payment_service::reconciler::ReconcilerConfig;

use crate::{
    build_binaries, free_ports, merchant,
    probes::{grpc_serving, http_ok},
    PrivatePostgres, PrivateRedis, Process, WATCH_TOKEN_SECRET,
};

use super::proxy::Proxy;

/// How a service says it is ready.
#[derive(Debug, Clone)]
enum Probe {
    Grpc { url: String, service: &'static str },
    Http(String),
}

impl Probe {
    async fn ready(&self, http: &reqwest::Client) -> bool {
        match self {
            Probe::Grpc { url, service } => grpc_serving(url, service).await,
            Probe::Http(url) => http_ok(http, url.clone()).await,
        }
    }
}

/// One replica: its binary, the environment it is always started with, and
/// the running process (`None` while killed).
pub struct Service {
    pub name: String,
    binary: &'static str,
    env: Vec<(&'static str, String)>,
    probe: Probe,
    process: Option<Process>,
    /// Every log file this replica wrote, one per start.
    pub logs: Vec<std::path::PathBuf>,
}

impl Service {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let process = Process::spawn(self.binary, &self.env)?;
        self.logs.push(process.log_path().to_owned());
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL; false if it was not running.
    pub fn kill_9(&mut self) -> bool {
        match self.process.take() {
            Some(mut p) => {
                let _ = p.kill_9();
                true
            }
            None => false,
        }
    }

    pub fn is_up(&mut self) -> bool {
        match &mut self.process {
            Some(p) => p.exited().is_none(),
            None => false,
        }
    }

    /// Starts it again (with the same environment) unless it runs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_up() {
            return Ok(());
        }
        self.process = None;
        self.spawn()
    }
}

pub struct Deployment {
    pub postgres: Mutex<PrivatePostgres>,
    pub redis: Arc<Mutex<PrivateRedis>>,
    pub sandbox: Process,
    pub sandbox_url: String,
    /// Straight to Postgres (not through the proxy): the verdict's reads.
    pub database_url: String,
    pub services: Vec<Arc<Mutex<Service>>>,
    pub postgres_proxy: Proxy,
    pub gateways: Proxy,
    pub payments: Proxy,
    pub pollers: Proxy,
    /// The pollers' WebSocket / SSE side.
    pub pollers_http: Proxy,
    http: reqwest::Client,
    /// The merchants file and the v3 key files; removed on drop.
    dir: std::path::PathBuf,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The reconciler at its shortest: every second, for orders two seconds old,
/// its lease and claims three seconds (renewed every second while it works),
/// so a killed or cut-off replica's work is taken over within about three.
fn reconcile() -> ReconcilerConfig {
    ReconcilerConfig {
        interval: Duration::from_secs(1),
        after: Duration::from_secs(2),
        lease: Duration::from_secs(3),
        ..ReconcilerConfig::default()
    }
}

fn set(
    env: &[(&'static str, String)],
    changes: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = env
        .iter()
        .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
        .cloned()
        .collect();
    env.extend(changes.iter().cloned());
    env
}

/// The v3 merchant beside the harness's v2 `default`: refunds need a v3
/// merchant here (a v2 refund needs a client certificate the sandbox's plain
/// listener does not take). Public-key mode; the sandbox writes its key files
/// into the soak's directory at start, as WeChat hands them out.
pub const V3_MERCHANT: &str = "v3-shop";

fn merchants_file(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let d = dir.display();
    let path = dir.join("merchants.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[merchant]]
name = "{V3_MERCHANT}"
api_version = "v3"
app_id = "wx5000000000000500"
mch_id = "1900000500"
apiv3_key = "chaos-apiv3-key-0123456789abcdef"
private_key = "{d}/apiclient_key.pem"
serial_no = "6C2E7F4FAD9183C5BE2F40618CAD2E3F40516273"
wechatpay_public_key = "{d}/pub_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_0119000005002026120700000000"
"#
        ),
    )?;
    Ok(path)
}

impl Deployment {
    pub async fn start() -> anyhow::Result<Self> {
        build_binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "wxpay-chaos-{}-{}",
            std::process::id(),
            crate::free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let merchants = merchants_file(&dir)?;
        let postgres = PrivatePostgres::start_with_max_connections(100).await?;
        let redis = PrivateRedis::start().await?;
        let database_url = postgres.url();
        let pg_port: u16 = database_url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .context("the private Postgres URL has a port")?;
        let postgres_proxy = Proxy::start(vec![local(pg_port)]).await?;
        let proxied_db = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            postgres_proxy.addr().port()
        );
        let [sandbox, ps1, ps2, gw1, gw1m, gw2, gw2m, p1, p1m, p1h, p2, p2m, p2h] = free_ports()?;
        let gateways = Proxy::start(vec![local(gw1), local(gw2)]).await?;
        let payments = Proxy::start(vec![local(ps1), local(ps2)]).await?;
        let pollers = Proxy::start(vec![local(p1), local(p2)]).await?;
        let pollers_http = Proxy::start(vec![local(p1h), local(p2h)]).await?;
        let settings = wxpay::Settings {
            storage: wxpay::Storage::Postgres(proxied_db),
            bus: wxpay::Bus::Redis(redis.url()),
            merchant: merchant(),
            sign_type: SignType::HmacSha256,
            merchants: Vec::new(),
            merchants_file: Some(merchants),
            // The pollers reach payment-service, and WeChat the gateways,
            // through the round-robin proxies; each replica's own address is
            // set below.
            payment_addr: payments.addr(),
            gateway_addr: gateways.addr(),
            gateway_metrics_addr: local(gw1m),
            poller_addr: local(p1),
            poller_metrics_addr: local(p1m),
            poller_http_addr: local(p1h),
            watch_secret: Some(
                WatchSecret::new(WATCH_TOKEN_SECRET)
                    .context("the harness's watch secret is long enough")?,
            ),
            sandbox_addr: local(sandbox),
            api_token: None,
            api_read_token: None,
            api_callers: Vec::new(),
            api_callers_file: None,
            sandbox_time_factor: 1000,
            sandbox_refund_settle: None,
            fallback_delay: Duration::from_secs(2),
            fallback_max_delay: Duration::from_secs(5),
            reconcile: reconcile(),
            console: None,
        };
        let split = settings.split_env()?;
        let common = |env: &[(&'static str, String)]| {
            set(
                env,
                &[
                    ("RUST_LOG", "info".to_owned()),
                    // Six processes on one server of 100 connections: 72,
                    // with room for the driver's verdict and superusers.
                    ("DATABASE_MAX_CONNECTIONS", "12".to_owned()),
                ],
            )
        };
        let sandbox_env = set(
            &common(&split.sandbox),
            &[
                ("SANDBOX_CLOSE_MIN_AGE_SECONDS", "0".to_owned()),
                // A refund nobody settles settles itself, as WeChat's do.
                ("SANDBOX_REFUND_SETTLE_MS", "3000".to_owned()),
            ],
        );
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut sandbox_process = Process::spawn("wechat-sandbox", &sandbox_env)?;
        let sandbox_url = url(sandbox);
        let probe = format!("{sandbox_url}/sandbox/faults");
        sandbox_process
            .wait_ready(|| http_ok(&http, probe.clone()))
            .await?;

        let mut services = Vec::new();
        for (i, port) in [ps1, ps2].into_iter().enumerate() {
            services.push(Service {
                name: format!("payment-service#{}", i + 1),
                binary: "payment-service",
                env: set(
                    &common(&split.payment),
                    &[("PAYMENT_ADDR", local(port).to_string())],
                ),
                probe: Probe::Grpc {
                    url: url(port),
                    service: "wxpay.v1.PaymentService",
                },
                process: None,
                logs: Vec::new(),
            });
        }
        for (i, (port, metrics)) in [(gw1, gw1m), (gw2, gw2m)].into_iter().enumerate() {
            services.push(Service {
                name: format!("gateway#{}", i + 1),
                binary: "gateway",
                env: set(
                    &common(&split.gateway),
                    &[
                        ("GATEWAY_ADDR", local(port).to_string()),
                        ("GATEWAY_METRICS_ADDR", local(metrics).to_string()),
                    ],
                ),
                probe: Probe::Http(format!("{}/readyz", url(port))),
                process: None,
                logs: Vec::new(),
            });
        }
        for (i, (port, metrics, ws)) in [(p1, p1m, p1h), (p2, p2m, p2h)].into_iter().enumerate() {
            services.push(Service {
                name: format!("poller#{}", i + 1),
                binary: "poller",
                env: set(
                    &common(&split.poller),
                    &[
                        ("POLLER_ADDR", local(port).to_string()),
                        ("POLLER_METRICS_ADDR", local(metrics).to_string()),
                        ("POLLER_HTTP_ADDR", local(ws).to_string()),
                    ],
                ),
                probe: Probe::Grpc {
                    url: url(port),
                    service: "wxpay.v1.OrderStatusService",
                },
                process: None,
                logs: Vec::new(),
            });
        }
        // The first payment-service runs the migrations alone; then the rest.
        services[0].spawn()?;
        wait_ready(&mut services[0], &http).await?;
        for s in services.iter_mut().skip(1) {
            s.spawn()?;
        }
        for s in services.iter_mut().skip(1) {
            wait_ready(s, &http).await?;
        }
        Ok(Self {
            postgres: Mutex::new(postgres),
            redis: Arc::new(Mutex::new(redis)),
            sandbox: sandbox_process,
            sandbox_url,
            database_url,
            services: services
                .into_iter()
                .map(|s| Arc::new(Mutex::new(s)))
                .collect(),
            postgres_proxy,
            gateways,
            payments,
            pollers,
            pollers_http,
            http,
            dir,
        })
    }

    /// Every service running again and ready (a process that exited on its
    /// own is started again too).
    pub async fn until_all_ready(&self) -> anyhow::Result<()> {
        for service in &self.services {
            let mut s = service.lock().await;
            s.restart()?;
            wait_ready(&mut s, &self.http).await?;
        }
        Ok(())
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn payments_url(&self) -> String {
        format!("http://{}", self.payments.addr())
    }

    pub fn pollers_url(&self) -> String {
        format!("http://{}", self.pollers.addr())
    }

    pub fn pollers_ws(&self) -> String {
        format!("ws://{}", self.pollers_http.addr())
    }
}

async fn wait_ready(service: &mut Service, http: &reqwest::Client) -> anyhow::Result<()> {
    let probe = service.probe.clone();
    let name = service.name.clone();
    let process = service
        .process
        .as_mut()
        .with_context(|| format!("{name} is not running"))?;
    process.wait_ready(|| probe.ready(http)).await
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
