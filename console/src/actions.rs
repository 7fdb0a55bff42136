//! Every change a person makes in the console, and its audit trail.
//!
//! Orders, refunds and bills change only through the PaymentService API (with
//! `CONSOLE_API_TOKEN`), so every rule it enforces (amounts, states, merchant
//! scope, idempotency) holds for the console too. Each action is written to
//! the audit log *before* it is performed and finished with its result after,
//! so an action is never performed without a trace: a console that stops in
//! between leaves an entry without a result, and the order's own history says
//! whether it happened. A refused action (a viewer, a bad CSRF token) is
//! written as refused and never performed.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tonic::{transport::Channel, Code};
use wxpay_core::convert;
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, CloseOrderRequest, QueryOrderRequest,
    ReconcileBillRequest, RefundOrderRequest,
};
use wxpay_store::console::{ConsoleStore, NewAuditEntry, ResolveOutcome, Scope};

use crate::{error::ConsoleError, format, session::Signed};

/// How an action ended, as the person sees it on the page they come back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub audit_id: i64,
    pub ok: bool,
    pub message: String,
}

#[derive(Clone)]
pub struct Actions {
    client: PaymentServiceClient<Channel>,
    token: Option<Arc<SecretString>>,
    store: Arc<dyn ConsoleStore>,
}

/// One action's name, target and fields, as the audit log shows them.
pub struct Intent {
    pub action: &'static str,
    pub target: String,
    pub fields: serde_json::Value,
}

impl Actions {
    /// Does not connect yet: the console starts while payment-service is down.
    pub fn new(
        payment_service_url: &str,
        token: Option<SecretString>,
        store: Arc<dyn ConsoleStore>,
    ) -> anyhow::Result<Self> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(payment_service_url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            // A refund waits for WeChat's answer; payment-service bounds that itself.
            .timeout(Duration::from_secs(30));
        if payment_service_url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())?;
        }
        Ok(Self {
            client: PaymentServiceClient::new(endpoint.connect_lazy()),
            token: token.map(Arc::new),
            store,
        })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ConsoleError> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.expose_secret())
                .parse()
                .map_err(|_| {
                    ConsoleError::Internal("CONSOLE_API_TOKEN is not a valid header value".into())
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    async fn begin(&self, who: &Signed, intent: &Intent) -> Result<i64, ConsoleError> {
        Ok(self
            .store
            .begin_audit(&NewAuditEntry {
                actor: who.user.name.clone(),
                role: who.user.role.as_str().to_owned(),
                action: intent.action.to_owned(),
                target: intent.target.clone(),
                fields: intent.fields.to_string(),
            })
            .await?)
    }

    async fn finish(&self, id: i64, ok: bool, message: String) -> Outcome {
        if let Err(e) = self.store.finish_audit(id, ok, &message).await {
            // The action's own effect stands; the entry stays without a result.
            tracing::error!(audit_id = id, error = %e, "the audit entry could not be finished");
        }
        Outcome {
            audit_id: id,
            ok,
            message,
        }
    }

    /// Writes a refused action (never performed) and returns the refusal.
    pub async fn refuse(&self, who: &Signed, intent: Intent, reason: &str) -> ConsoleError {
        self.write_refusal(who, &intent, reason).await;
        ConsoleError::Forbidden(format!("{reason}: nothing was done"))
    }

    /// Writes an action refused for what its form held (never performed),
    /// so a mistyped amount is on the audit log like any other attempt.
    pub async fn invalid(&self, who: &Signed, intent: Intent, message: String) -> ConsoleError {
        self.write_refusal(who, &intent, &message).await;
        ConsoleError::BadRequest(message)
    }

    async fn write_refusal(&self, who: &Signed, intent: &Intent, reason: &str) {
        match self.begin(who, intent).await {
            Ok(id) => {
                self.finish(id, false, format!("refused: {reason}")).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "a refused action could not be written to the audit log")
            }
        }
    }

    /// Gives back `refund_fee` fen of an order under `out_refund_no` (the
    /// form's own number, so a form sent twice is one refund).
    pub async fn refund(
        &self,
        who: &Signed,
        out_trade_no: &str,
        out_refund_no: &str,
        refund_fee: i64,
        reason: &str,
    ) -> Result<Outcome, ConsoleError> {
        let intent = Intent {
            action: "refund",
            target: out_trade_no.to_owned(),
            fields: json!({"refund_fee": refund_fee, "reason": reason, "out_refund_no": out_refund_no}),
        };
        let id = self.begin(who, &intent).await?;
        let request = self.request(RefundOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            out_refund_no: out_refund_no.to_owned(),
            refund_fee,
            reason: reason.to_owned(),
        })?;
        let (ok, message) = match self.client.clone().refund_order(request).await {
            Ok(r) => {
                let r = r.into_inner();
                let status = wxpay_proto::v1::RefundStatus::try_from(r.status)
                    .map_or("UNKNOWN", |s| {
                        s.as_str_name().trim_start_matches("REFUND_STATUS_")
                    });
                (
                    true,
                    format!(
                        "refund {} of {} accepted: {status}",
                        r.out_refund_no,
                        format::yuan(r.refund_fee)
                    ),
                )
            }
            Err(s) => (false, refusal(&s)),
        };
        Ok(self.finish(id, ok, message).await)
    }

    /// Asks WeChat about the order now (QueryOrder reconciles what it hears).
    pub async fn query(&self, who: &Signed, out_trade_no: &str) -> Result<Outcome, ConsoleError> {
        let intent = Intent {
            action: "query",
            target: out_trade_no.to_owned(),
            fields: json!({}),
        };
        let id = self.begin(who, &intent).await?;
        let request = self.request(QueryOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
        })?;
        let (ok, message) = match self.client.clone().query_order(request).await {
            Ok(o) => (
                true,
                format!("WeChat says {}", status_name(o.into_inner().status)),
            ),
            Err(s) => (false, refusal(&s)),
        };
        Ok(self.finish(id, ok, message).await)
    }

    pub async fn close(&self, who: &Signed, out_trade_no: &str) -> Result<Outcome, ConsoleError> {
        let intent = Intent {
            action: "close",
            target: out_trade_no.to_owned(),
            fields: json!({}),
        };
        let id = self.begin(who, &intent).await?;
        let request = self.request(CloseOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
        })?;
        let (ok, message) = match self.client.clone().close_order(request).await {
            Ok(o) => (
                true,
                format!("the order is {}", status_name(o.into_inner().status)),
            ),
            Err(s) => (false, refusal(&s)),
        };
        Ok(self.finish(id, ok, message).await)
    }

    /// Reconciles a bill day again (or for the first time).
    pub async fn reconcile(&self, who: &Signed, bill_date: &str) -> Result<Outcome, ConsoleError> {
        let intent = Intent {
            action: "reconcile",
            target: bill_date.to_owned(),
            fields: json!({"again": true}),
        };
        let id = self.begin(who, &intent).await?;
        let request = self.request(ReconcileBillRequest {
            bill_date: bill_date.to_owned(),
            again: true,
        })?;
        let (ok, message) = match self.client.clone().reconcile_bill(request).await {
            Ok(r) => {
                let r = r.into_inner();
                (
                    true,
                    format!(
                        "{} at WeChat, {} matched, {} repaired, {}",
                        format::counted(r.wechat_rows, "row", "rows"),
                        r.matched,
                        r.repaired,
                        format::counted(
                            i64::try_from(r.discrepancies.len()).unwrap_or(i64::MAX),
                            "discrepancy",
                            "discrepancies"
                        )
                    ),
                )
            }
            Err(s) => (false, refusal(&s)),
        };
        Ok(self.finish(id, ok, message).await)
    }

    /// Resolves an anomaly with a note (the console's own record).
    pub async fn resolve(
        &self,
        who: &Signed,
        scope: &Scope,
        anomaly_id: i64,
        note: &str,
    ) -> Result<Outcome, ConsoleError> {
        let intent = Intent {
            action: "resolve",
            target: format!("anomaly {anomaly_id}"),
            fields: json!({"note": note}),
        };
        let id = self.begin(who, &intent).await?;
        let (ok, message) = match self
            .store
            .resolve_anomaly(scope, anomaly_id, &who.user.name, note)
            .await
        {
            Ok(ResolveOutcome::Resolved(_)) => (true, "resolved".to_owned()),
            Ok(ResolveOutcome::AlreadyResolved(r)) => (
                false,
                format!(
                    "already resolved by {} at {}",
                    r.resolved_by,
                    format::time(&r.resolved_at)
                ),
            ),
            Ok(ResolveOutcome::NotFound) => (false, "no such anomaly".to_owned()),
            Err(e) => {
                tracing::warn!(error = %e, "resolving an anomaly failed");
                (
                    false,
                    "the database did not answer; nothing was resolved".to_owned(),
                )
            }
        };
        Ok(self.finish(id, ok, message).await)
    }
}

fn status_name(status: i32) -> &'static str {
    convert::status_from_pb(status).map_or("UNKNOWN", |s| s.as_str())
}

/// What payment-service said, for the person: its messages name the field or
/// the rule (they are written for callers), so they are shown as they are;
/// a transport failure is said plainly.
fn refusal(s: &tonic::Status) -> String {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => {
            tracing::warn!(code = ?s.code(), message = s.message(), "payment-service did not answer the console");
            "payment-service did not answer; try again (nothing is done twice: the same form is the same request)".to_owned()
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(code = ?s.code(), "payment-service refused the console's token");
            "payment-service refused the console's credentials (CONSOLE_API_TOKEN); nothing was done".to_owned()
        }
        code => format!("refused ({code:?}): {}", s.message()),
    }
}
