//! The HTTP surface of the public port: the router, its size limit, and the
//! thin handlers that turn a body into a verdict (via `notify`, `notify_v3`,
//! `refund`, `refund_v3`, `cloudpay`) and a verdict into the reply each sender expects
//! (v2's XML, v3's status and `{"code":"FAIL"}`, the forwarder's JSON). No decision is
//! made here. Only WeChat's paths and the probes are public; `/metrics` has its
//! own listener (`metrics::router`).

use std::{future::Future, time::Instant};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use wxpay_core::wechat::{v3::models::ErrorBody, xml};

use crate::{
    cloudpay, metrics, notify, notify_v3,
    readiness::Readiness,
    refund, refund_v3,
    state::AppState,
    verdict::{Judged, Kind, Verdict},
};

/// WeChat's messages are a few KiB; anything over this is refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = xml::MAX_XML_BYTES;

/// The gateway's public routes, testable without a socket. `/readyz` reads
/// `readiness`, which [`Readiness::run`] keeps fresh.
pub fn app(state: AppState, readiness: Readiness) -> Router {
    Router::new()
        .route("/wechat/pay/notify", post(pay_notify))
        .route("/wechat/refund/notify", post(refund_notify))
        .route("/wechat/v3/pay/notify", post(v3_pay_notify))
        .route("/wechat/v3/refund/notify", post(v3_refund_notify))
        .route("/cloudpay/callback", post(cloudpay_callback))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(readiness))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Reads the body, runs `work` on the task tracker, and counts the verdict
/// under the merchant it was judged for.
///
/// The work runs as its own task so that graceful shutdown waits for it and a
/// sender that hangs up mid-request cannot cancel a notification half-way
/// (after the commit but before the publish is spawned, say).
async fn tracked<F, Fut>(
    state: &AppState,
    kind: Kind,
    body: Result<Bytes, BytesRejection>,
    work: F,
) -> Verdict
where
    F: FnOnce(AppState, Bytes) -> Fut,
    Fut: Future<Output = Judged> + Send + 'static,
{
    let started = Instant::now();
    let judged = match body {
        Ok(body) => match state.tasks.spawn(work(state.clone(), body)).await {
            Ok(judged) => judged,
            Err(e) => {
                tracing::error!(error = %e, kind = kind.as_str(), "notification task failed");
                Judged::anonymous(Verdict::Unavailable)
            }
        },
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!(
                kind = kind.as_str(),
                "notification body over the size limit refused"
            );
            Judged::anonymous(Verdict::TooLarge)
        }
        Err(rejection) => {
            tracing::warn!(kind = kind.as_str(), error = %rejection.body_text(), "notification body unreadable");
            Judged::anonymous(Verdict::Malformed)
        }
    };
    metrics::record_notification(
        kind,
        judged.verdict,
        judged.merchant.as_deref(),
        started.elapsed(),
    );
    judged.verdict
}

fn status_of(verdict: Verdict) -> StatusCode {
    if verdict == Verdict::TooLarge {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        // WeChat reads return_code, not the status; 200 with FAIL is its convention.
        StatusCode::OK
    }
}

fn xml_reply(verdict: Verdict) -> Response {
    (
        status_of(verdict),
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml::notify_reply(verdict.acknowledged(), verdict.public_message()),
    )
        .into_response()
}

async fn pay_notify(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verdict = tracked(&state, Kind::Pay, body, |state, body| async move {
        notify::process(&state, body).await
    })
    .await;
    xml_reply(verdict)
}

async fn refund_notify(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verdict = tracked(&state, Kind::Refund, body, |state, body| async move {
        refund::process(&state, body).await
    })
    .await;
    xml_reply(verdict)
}

async fn v3_pay_notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verdict = tracked(&state, Kind::PayV3, body, |state, body| async move {
        notify_v3::process(&state, &headers, body).await
    })
    .await;
    v3_reply(verdict)
}

async fn v3_refund_notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let verdict = tracked(&state, Kind::RefundV3, body, |state, body| async move {
        refund_v3::process(&state, &headers, body).await
    })
    .await;
    v3_reply(verdict)
}

/// What v3 expects: 204 with no body when handled (WeChat stops resending);
/// otherwise a 4xx, or a 5xx when the answer may differ later (the database
/// was away), with `{"code":"FAIL","message":…}` and a fixed short message.
/// WeChat resends after any non-2xx; the status tells a person reading its
/// logs which side to look at.
fn v3_reply(verdict: Verdict) -> Response {
    let status = match verdict {
        Verdict::Applied | Verdict::Duplicate | Verdict::Conflict | Verdict::Ignored => {
            return StatusCode::NO_CONTENT.into_response()
        }
        Verdict::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Verdict::Malformed | Verdict::Invalid => StatusCode::BAD_REQUEST,
        Verdict::BadSignature => StatusCode::UNAUTHORIZED,
        Verdict::WrongMerchant => StatusCode::FORBIDDEN,
        Verdict::UnknownOrder => StatusCode::NOT_FOUND,
        Verdict::AmountMismatch | Verdict::WrongState | Verdict::Unconfirmed => {
            StatusCode::CONFLICT
        }
        Verdict::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = ErrorBody {
        code: "FAIL".to_owned(),
        message: verdict.public_message().to_owned(),
    };
    (status, axum::Json(body)).into_response()
}

async fn cloudpay_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(secret) = state.cloudpay_secret.clone() else {
        // Disabled: indistinguishable from a route that does not exist.
        return StatusCode::NOT_FOUND.into_response();
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (timestamp, signature) = (
        header(cloudpay::TIMESTAMP_HEADER),
        header(cloudpay::SIGNATURE_HEADER),
    );
    let verdict = tracked(&state, Kind::Cloudpay, body, |state, body| async move {
        cloudpay::process(
            &state,
            &secret,
            timestamp.as_deref(),
            signature.as_deref(),
            body,
        )
        .await
    })
    .await;
    // The cloud function returns this object to WeChat as is; errcode 0 stops the retries.
    let reply = if verdict.acknowledged() {
        serde_json::json!({ "errcode": 0, "errmsg": "SUCCESS" })
    } else {
        serde_json::json!({ "errcode": 1, "errmsg": verdict.public_message() })
    };
    (status_of(verdict), axum::Json(reply)).into_response()
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The database and the event bus answered the last background check: no
/// query per request, so probing the public port costs the database nothing.
async fn readyz(State(readiness): State<Readiness>) -> Response {
    let ready = readiness.get();
    let status = if ready.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, ready.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v3_sender_hears_2xx_with_no_body_exactly_when_a_v2_one_hears_success() {
        for v in [
            Verdict::Applied,
            Verdict::Duplicate,
            Verdict::Conflict,
            Verdict::Ignored,
            Verdict::TooLarge,
            Verdict::Malformed,
            Verdict::BadSignature,
            Verdict::WrongMerchant,
            Verdict::UnknownOrder,
            Verdict::AmountMismatch,
            Verdict::WrongState,
            Verdict::Invalid,
            Verdict::Unavailable,
            Verdict::Unconfirmed,
        ] {
            let status = v3_reply(v).status();
            assert_eq!(status.is_success(), v.acknowledged(), "{v}");
            assert_eq!(
                status.is_server_error(),
                v == Verdict::Unavailable,
                "{v}: only 'cannot decide now' is the server's"
            );
        }
    }
}
