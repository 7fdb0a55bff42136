//! Starting a [`Stack`]: building the binaries, a fresh database and free
//! ports, each binary's environment from `wxpay::Settings`, then spawning the
//! four and waiting until each reports ready. Talking to the running stack is
//! `clients`'.

use std::{net::SocketAddr, time::Duration};

use wxpay_core::{watch_token::WatchSecret, wechat::SignType};

use crate::{build_binaries, free_ports, merchant, Process, StackOptions, WATCH_TOKEN_SECRET};

use super::Stack;

impl Stack {
    /// Starts every binary on its own free ports against a fresh database, and
    /// returns once each reports ready.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        build_binaries()?;
        let database_url = match &options.database_url {
            Some(url) => url.clone(),
            None => wxpay_store::testing::fresh_database_url().await?,
        };
        let redis_url = options
            .redis_url
            .clone()
            .unwrap_or_else(wxpay_store::testing::redis_url);
        let [sandbox_port, payment_port, gateway_port, gateway_metrics_port, poller_port, metrics_port, poller_http_port] =
            free_ports()?;
        let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
        // The same settings type the single-process stack runs from: which binary
        // gets which URL is decided once, in `wxpay::split`.
        let settings = wxpay::Settings {
            storage: wxpay::Storage::Postgres(database_url.clone()),
            bus: wxpay::Bus::Redis(redis_url),
            merchant: merchant(),
            sign_type: SignType::HmacSha256,
            // The binaries read the file themselves; only the embedded stack
            // hosts parsed entries.
            merchants: Vec::new(),
            merchants_file: options.merchants_file.clone(),
            payment_addr: local(payment_port),
            gateway_addr: local(gateway_port),
            gateway_metrics_addr: local(gateway_metrics_port),
            poller_addr: local(poller_port),
            poller_metrics_addr: local(metrics_port),
            // Watch tokens and the poller's WebSocket / SSE watch, as a
            // deployment for mini programs runs them.
            poller_http_addr: local(poller_http_port),
            watch_secret: Some(
                WatchSecret::new(WATCH_TOKEN_SECRET)
                    .ok_or_else(|| anyhow::anyhow!("the harness's watch secret is too short"))?,
            ),
            sandbox_addr: local(sandbox_port),
            api_token: options.api_token.clone().map(Into::into),
            api_read_token: options.api_read_token.clone().map(Into::into),
            // As for merchants: the binaries read the file themselves.
            api_callers: Vec::new(),
            api_callers_file: options.callers_file.clone(),
            // WeChat's retry schedule 1000 times faster: a retried notification
            // arrives in milliseconds instead of 15 s.
            sandbox_time_factor: 1000,
            sandbox_refund_settle: None,
            fallback_delay: options.fallback_delay,
            fallback_max_delay: options.fallback_max_delay,
            reconcile: options.reconcile.clone(),
            console: None,
        };
        let mut env = settings.split_env()?;
        if let Some(secret) = &options.cloudpay_secret {
            env.gateway
                .push(("CLOUDPAY_CALLBACK_SECRET", secret.clone()));
        }
        env.payment.extend(options.caller_env.iter().cloned());
        env.poller.extend(options.caller_env.iter().cloned());
        let split = env.clone();
        let with_logs = |mut env: Vec<(&'static str, String)>| {
            env.push(("RUST_LOG", "info".to_owned()));
            env.extend(options.extra_env.iter().cloned());
            env
        };
        let url = |port| format!("http://127.0.0.1:{port}");
        let (sandbox_url, payment_url, gateway_url, poller_url, poller_http_url) = (
            url(sandbox_port),
            url(payment_port),
            url(gateway_port),
            url(poller_port),
            url(poller_http_port),
        );
        let mut sandbox = Process::spawn("wechat-sandbox", &with_logs(env.sandbox))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        // A v3 merchant's key files (WeChat's public key, an API key not yet
        // issued) are written by the sandbox at start, as WeChat hands them
        // out: the services read them only once it serves.
        if speaks_v3(options.merchants_file.as_deref()) {
            let probe = format!("{sandbox_url}/sandbox/faults");
            sandbox
                .wait_ready(|| crate::probes::http_ok(&http, probe.clone()))
                .await?;
        }
        let payment = Process::spawn("payment-service", &with_logs(env.payment))?;
        let gateway = Process::spawn("gateway", &with_logs(env.gateway))?;
        let poller = Process::spawn("poller", &with_logs(env.poller))?;
        let mut stack = Self {
            poller,
            gateway,
            payment,
            sandbox,
            sandbox_url,
            database_url,
            payment_url,
            gateway_url,
            poller_url,
            poller_http_url,
            env: split,
            http,
        };
        stack.until_ready().await?;
        Ok(stack)
    }
}

/// Whether the merchants file has a v3 merchant.
fn speaks_v3(file: Option<&std::path::Path>) -> bool {
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .is_some_and(|text| text.contains("api_version = \"v3\""))
}
