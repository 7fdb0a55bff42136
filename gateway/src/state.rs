//! The state every handler shares: storage and the event bus behind their
//! traits (Postgres and Redis here; SQLite and an in-process bus in the embedded
//! mode), the merchants whose messages we accept (each message is checked with
//! the key of the one it names), WeChat's keys for the v3 ones, and the task tracker that lets shutdown wait
//! for in-flight notifications and their publishes.

use std::sync::Arc;

use axum::{body::Bytes, http::HeaderMap};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;
use wxpay_core::wechat::MerchantBook;
use wxpay_store::{Anomaly, AnomalyKind, EventPublisher, Ledger, NotificationRecord, Store};

use crate::{
    audit::AuditLog,
    config::CloudpaySecret,
    orderquery::OrderQuery,
    paid_cache::SettledCache,
    proof::{Proven, Refused, V3Endpoint, V3Event},
    verdict::Verdict,
    wechat_keys::{ConfiguredKeys, KeySource},
};

#[derive(Clone)]
pub struct AppState {
    /// Reads and audit rows; every status change goes through `ledger`.
    pub store: Arc<dyn Store>,
    pub publisher: Arc<dyn EventPublisher>,
    /// Transition, then publish: the one way this service changes an order.
    pub ledger: Ledger,
    /// Every configured merchant: a message is judged for the one its mch_id
    /// (and sub_mch_id) names, and only against that merchant's orders.
    pub merchants: Arc<MerchantBook>,
    /// WeChat's verifying keys for the v3 merchants (their configured public
    /// keys unless a certificate manager is wired in).
    pub wechat_keys: Arc<dyn KeySource>,
    /// `None`: the cloud-pay callback is disabled.
    pub cloudpay_secret: Option<Arc<CloudpaySecret>>,
    /// WeChat's orderquery, asked before a cloud-pay SUCCESS is applied
    /// (`WECHAT_API_BASE`). `None` only where no WeChat API is known.
    pub orderquery: Option<OrderQuery>,
    pub metrics: PrometheusHandle,
    /// Notification processing runs here, so shutdown can wait for it (and then for
    /// the ledger's publishes).
    pub tasks: TaskTracker,
    /// Orders seen paid, so duplicates are answered without a database read.
    pub settled: Arc<SettledCache>,
    pub audit: AuditLog,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        publisher: Arc<dyn EventPublisher>,
        merchants: MerchantBook,
        cloudpay_secret: Option<CloudpaySecret>,
    ) -> Self {
        Self {
            ledger: Ledger::new(store.clone(), publisher.clone()),
            publisher,
            wechat_keys: Arc::new(ConfiguredKeys::new(&merchants)),
            merchants: Arc::new(merchants),
            cloudpay_secret: cloudpay_secret.map(Arc::new),
            orderquery: None,
            metrics: crate::metrics::prometheus(),
            tasks: TaskTracker::new(),
            settled: Arc::new(SettledCache::new(SettledCache::DEFAULT_CAPACITY)),
            audit: AuditLog::spawn(store.clone()),
            store,
        }
    }

    /// Proves a v3 message that came in on `endpoint` with the v3 merchants'
    /// keys, refreshing them once for an unknown serial
    /// ([`crate::wechat_keys::prove`]).
    pub(crate) async fn prove_v3(
        &self,
        endpoint: V3Endpoint,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Proven<V3Event>, Refused> {
        crate::wechat_keys::prove(
            &self.merchants,
            self.wechat_keys.as_ref(),
            endpoint,
            headers,
            body,
        )
        .await
    }

    /// Records a genuine-looking message we refused or that contradicts a final
    /// state: a metric, an error log, and a row for whoever investigates.
    pub(crate) async fn anomaly(&self, kind: AnomalyKind, out_trade_no: &str, detail: String) {
        crate::metrics::record_anomaly(kind);
        tracing::error!(out_trade_no, anomaly = %kind, %detail, "notification anomaly");
        let row = Anomaly {
            kind,
            out_trade_no: Some(out_trade_no.to_owned()),
            detail,
        };
        if let Err(e) = self.store.record_anomaly(&row).await {
            tracing::error!(out_trade_no, anomaly = %kind, error = %e, "could not record anomaly");
        }
    }

    /// Keeps a proven notification as received, for audit and replay, with
    /// the v2 algorithm its signature verified under (a v3 row's column is
    /// empty: the store's `sign_type` holds only MD5 or HMAC-SHA256 so far;
    /// its `kind`, `pay_v3` or `refund_v3`, says how it was proven): in the background batch
    /// when `batched` (what it says is durable elsewhere), else before the
    /// reply. Only a [`Proven`] message can be kept.
    pub(crate) async fn keep<T>(
        &self,
        proven: &Proven<T>,
        out_trade_no: Option<&str>,
        verdict: Verdict,
        batched: bool,
    ) {
        let row = NotificationRecord {
            kind: proven.kind().as_str().to_owned(),
            out_trade_no: out_trade_no.map(str::to_owned),
            verdict: verdict.as_str().to_owned(),
            raw_body: proven.body().to_vec(),
            sign_type: proven.sign_type(),
        };
        if batched {
            self.audit.keep_batched(row).await;
        } else {
            self.audit.keep(row).await;
        }
    }
}
