//! The split deployment of the same [`Settings`]: the environment each of the
//! four binaries needs so that they find each other exactly as the in-process
//! [`Stack`](crate::Stack) wires them (the sandbox plays WeChat, payment-service
//! calls it and gives it the gateway as `notify_url`, the poller falls back to
//! payment-service's QueryOrder). The end-to-end harness starts the binaries
//! with it; docker-compose.yml says the same in YAML.

use secrecy::ExposeSecret;

use crate::{
    addresses::reachable_addr,
    settings::{Bus, Settings, Storage},
};

/// Environment variables for one binary.
pub type Env = Vec<(&'static str, String)>;

/// Each binary's environment.
#[derive(Debug, Clone)]
pub struct SplitEnv {
    pub sandbox: Env,
    pub payment: Env,
    pub gateway: Env,
    pub poller: Env,
}

impl Settings {
    /// The split deployment's environment. The split services keep their state
    /// in Postgres and talk over Redis, and each address must be a real port
    /// (a harness picks free ones).
    pub fn split_env(&self) -> anyhow::Result<SplitEnv> {
        let Storage::Postgres(database_url) = &self.storage else {
            anyhow::bail!("the split deployment needs Postgres (DATABASE_URL)");
        };
        let Bus::Redis(redis_url) = &self.bus else {
            anyhow::bail!("the split deployment needs Redis (REDIS_URL)");
        };
        for (var, addr) in [
            ("SANDBOX_ADDR", self.sandbox_addr),
            ("PAYMENT_ADDR", self.payment_addr),
            ("GATEWAY_ADDR", self.gateway_addr),
            ("GATEWAY_METRICS_ADDR", self.gateway_metrics_addr),
            ("POLLER_ADDR", self.poller_addr),
            ("POLLER_METRICS_ADDR", self.poller_metrics_addr),
        ] {
            anyhow::ensure!(
                addr.port() != 0,
                "{var} needs a fixed port in the split deployment"
            );
        }
        let url = |addr| format!("http://{}", reachable_addr(addr));
        let mut merchant: Env = vec![
            ("WECHAT_APP_ID", self.merchant.app_id.clone()),
            ("WECHAT_MCH_ID", self.merchant.mch_id.clone()),
            (
                "WECHAT_API_KEY",
                self.merchant.api_key.expose_secret().to_owned(),
            ),
        ];
        // Every binary that signs or verifies reads the same merchants file.
        if let Some(path) = &self.merchants_file {
            merchant.push(("MERCHANTS_FILE", path.display().to_string()));
        }
        let mut backing: Env = vec![
            ("DATABASE_URL", database_url.clone()),
            ("REDIS_URL", redis_url.clone()),
        ];
        if let Some(token) = &self.api_token {
            backing.push(("API_TOKEN", token.expose_secret().to_owned()));
        }
        // payment-service and the poller check the same tokens; the poller
        // also sends API_READ_TOKEN to QueryOrder, so its fallback can only
        // read and query. (The gateway, which serves no gRPC, ignores them.)
        if let Some(token) = &self.api_read_token {
            backing.push(("API_READ_TOKEN", token.expose_secret().to_owned()));
        }
        if let Some(path) = &self.api_callers_file {
            backing.push(("API_CALLERS_FILE", path.display().to_string()));
        }

        let mut sandbox = merchant.clone();
        sandbox.extend([
            ("SANDBOX_ADDR", self.sandbox_addr.to_string()),
            ("SANDBOX_TIME_FACTOR", self.sandbox_time_factor.to_string()),
            // Nothing here calls /secapi/ over TLS yet: a free port, so that
            // harnesses running side by side never fight over the default 8443.
            ("SANDBOX_TLS_ADDR", "127.0.0.1:0".to_owned()),
        ]);

        let mut payment = merchant.clone();
        payment.extend(backing.clone());
        payment.extend([
            ("WECHAT_SIGN_TYPE", self.sign_type.as_str().to_owned()),
            ("WECHAT_API_BASE", url(self.sandbox_addr)),
            (
                "WECHAT_NOTIFY_URL",
                format!("{}/wechat/pay/notify", url(self.gateway_addr)),
            ),
            ("PAYMENT_ADDR", self.payment_addr.to_string()),
            (
                "RECONCILE_INTERVAL_SECONDS",
                self.reconcile.interval.as_secs().max(1).to_string(),
            ),
            (
                "RECONCILE_AFTER_SECONDS",
                self.reconcile.after.as_secs().max(1).to_string(),
            ),
            ("RECONCILE_MAX_QPS", self.reconcile.max_qps.to_string()),
            (
                "RECONCILE_LEASE_SECONDS",
                self.reconcile.lease.as_secs().max(1).to_string(),
            ),
        ]);

        let mut gateway = merchant;
        gateway.extend(backing.clone());
        gateway.extend([
            ("GATEWAY_ADDR", self.gateway_addr.to_string()),
            (
                "GATEWAY_METRICS_ADDR",
                self.gateway_metrics_addr.to_string(),
            ),
            // Where a cloud-pay SUCCESS is confirmed with orderquery.
            ("WECHAT_API_BASE", url(self.sandbox_addr)),
        ]);

        // The poller signs nothing and verifies nothing: no merchant key for it.
        let mut poller = backing;
        poller.extend([
            ("POLLER_ADDR", self.poller_addr.to_string()),
            ("POLLER_METRICS_ADDR", self.poller_metrics_addr.to_string()),
            ("PAYMENT_SERVICE_URL", url(self.payment_addr)),
            (
                "POLLER_FALLBACK_DELAY_MS",
                self.fallback_delay.as_millis().to_string(),
            ),
            (
                "POLLER_FALLBACK_MAX_DELAY_MS",
                self.fallback_max_delay.as_millis().to_string(),
            ),
        ]);
        // With a watch secret, payment-service issues watch tokens and the poller
        // serves the WebSocket / SSE watch that checks them.
        if let Some(secret) = &self.watch_secret {
            anyhow::ensure!(
                self.poller_http_addr.port() != 0,
                "POLLER_HTTP_ADDR needs a fixed port in the split deployment"
            );
            let secret = secret.expose_secret().to_owned();
            payment.push(("WATCH_TOKEN_SECRET", secret.clone()));
            poller.push(("WATCH_TOKEN_SECRET", secret));
            poller.push(("POLLER_HTTP_ADDR", self.poller_http_addr.to_string()));
        }
        Ok(SplitEnv {
            sandbox,
            payment,
            gateway,
            poller,
        })
    }
}
