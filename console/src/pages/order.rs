//! `/orders/{out_trade_no}`: one order, its whole history as one timeline
//! (placed, every status change with what caused it, every notification kept
//! with its verdict, refunds, anomalies and their resolutions, and every
//! console action on it), its live status, and the operator's actions:
//! refund, ask WeChat now, close.

use std::convert::Infallible;

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    response::{
        sse::{Event, KeepAlive, Sse},
        Html, IntoResponse, Redirect, Response,
    },
    Form,
};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use wxpay_core::domain::OutTradeNo;
use wxpay_store::console::{AuditEntry, OrderHistory};

use super::{allow_action, merchant_scope, render, AfterAction, Layout};
use crate::{actions::Intent, application::AppState, error::ConsoleError, format, session::Signed};

/// Console actions shown in an order's history (the newest ones).
const ACTIONS_SHOWN: u32 = 200;

pub struct OrderView {
    pub out_trade_no: String,
    pub status: String,
    pub amount: String,
    pub refunded: String,
    pub refunded_fen: i64,
    pub merchant: String,
    pub trade_type: String,
    pub description: String,
    pub openid: String,
    pub transaction_id: String,
    pub created: String,
    pub paid: String,
    pub expires: String,
    pub version: i64,
}

/// One line of the history.
pub struct Entry {
    pub at: String,
    /// status, notification, refund, anomaly, action, placed
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
    sort: (DateTime<Utc>, u8),
}

#[derive(Template)]
#[template(path = "timeline.html")]
struct Timeline {
    entries: Vec<Entry>,
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    layout: Layout,
    o: OrderView,
    caller: String,
    operator: bool,
    live: bool,
    refundable: String,
    refundable_fen: i64,
    out_refund_no: String,
    timeline: String,
}

fn parse_no(s: &str) -> Result<OutTradeNo, ConsoleError> {
    // A malformed number cannot be an order: the same answer as a missing one.
    OutTradeNo::parse(s).map_err(|_| ConsoleError::NotFound)
}

async fn history(
    state: &AppState,
    signed: &Signed,
    out_trade_no: &str,
) -> Result<(OrderHistory, Vec<AuditEntry>), ConsoleError> {
    let no = parse_no(out_trade_no)?;
    let history = state
        .store
        .order_history(&signed.user.scope, &no)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    let actions = state.store.audit_of(no.as_str(), ACTIONS_SHOWN).await?;
    Ok((history, actions))
}

fn timeline(h: &OrderHistory, actions: &[AuditEntry]) -> Vec<Entry> {
    let o = &h.order;
    let mut out = Vec::new();
    let mut push =
        |at: DateTime<Utc>, rank: u8, kind: &'static str, title: String, detail: String| {
            out.push(Entry {
                at: format::time(&at),
                kind,
                title,
                detail,
                sort: (at, rank),
            })
        };
    push(
        o.created_at,
        0,
        "placed",
        format!("Placed: {}", format::yuan(o.total_fee.fen())),
        format!(
            "{} order of merchant {}, by {}",
            o.placement.trade_type.as_str(),
            o.placement.merchant.as_str(),
            h.caller
        ),
    );
    for n in &h.notifications {
        let mut detail = format!("{} bytes", n.body_bytes);
        if let Some(sign) = &n.sign_type {
            detail.push_str(&format!(", signed {sign}"));
        }
        push(
            n.received_at,
            1,
            "notification",
            format!("Notification ({}): {}", n.kind, n.verdict),
            detail,
        );
    }
    for e in &h.events {
        if e.version <= 1 && e.status == "NOTPAY" {
            continue;
        }
        let mut detail = format!("version {}", e.version);
        if let Some(t) = &e.transaction_id {
            detail.push_str(&format!(", transaction {t}"));
        }
        if e.refunded_fee > 0 {
            detail.push_str(&format!(", refunded {}", format::yuan(e.refunded_fee)));
        }
        detail.push_str(match e.published_at {
            Some(_) => ", published",
            None => ", still in the outbox",
        });
        push(
            e.occurred_at,
            2,
            "status",
            format!("Status {} ({})", e.status, e.source),
            detail,
        );
    }
    for r in &h.refunds {
        let reason = if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", r.reason)
        };
        push(
            r.created_at,
            3,
            "refund",
            format!(
                "Refund {} asked for {}",
                r.out_refund_no,
                format::yuan(r.refund_fee)
            ),
            format!("{}{reason}", r.status),
        );
        match (r.status.as_str(), r.succeeded_at) {
            // WeChat's success_time has whole seconds, our created_at
            // milliseconds: without the max, a refund settled within the
            // second it was asked for would come back before it was asked.
            ("SUCCESS", Some(at)) => push(
                at.max(r.created_at),
                3,
                "refund",
                format!("Refund {} back with the payer", r.out_refund_no),
                r.refund_id.clone().map(|id| format!("WeChat refund {id}")).unwrap_or_default(),
            ),
            ("CLOSED", _) => push(
                r.updated_at,
                3,
                "refund",
                format!("Refund {} closed", r.out_refund_no),
                r.failure.clone().unwrap_or_default(),
            ),
            ("CHANGE", _) => push(
                r.updated_at,
                3,
                "refund",
                format!("Refund {} needs handling (CHANGE)", r.out_refund_no),
                "WeChat could not return the money to the original account: handle it in the merchant console".into(),
            ),
            _ => {}
        }
    }
    for a in &h.anomalies {
        push(
            a.occurred_at,
            4,
            "anomaly",
            format!("Anomaly {}", a.kind),
            a.detail.clone(),
        );
        if let Some(r) = &a.resolution {
            push(
                r.resolved_at,
                4,
                "anomaly",
                format!("Anomaly {} resolved by {}", a.kind, r.resolved_by),
                r.note.clone(),
            );
        }
    }
    for a in actions {
        let result = a
            .result
            .clone()
            .unwrap_or_else(|| "no result recorded".into());
        push(
            a.at,
            5,
            "action",
            format!("{} by {} in the console", a.action, a.actor),
            result,
        );
    }
    out.sort_by_key(|e| e.sort);
    out
}

fn view(h: &OrderHistory) -> OrderView {
    let o = &h.order;
    OrderView {
        out_trade_no: o.out_trade_no.as_str().to_owned(),
        status: o.status.as_str().to_owned(),
        amount: format::yuan(o.total_fee.fen()),
        refunded: format::yuan(o.refunded_fee),
        refunded_fen: o.refunded_fee,
        merchant: o.placement.merchant.as_str().to_owned(),
        trade_type: o.placement.trade_type.as_str().to_owned(),
        description: o.description.as_str().to_owned(),
        openid: o.openid.as_str().to_owned(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        created: format::time(&o.created_at),
        paid: format::time_opt(&o.paid_at),
        expires: format::time_opt(&o.expires_at),
        version: o.version,
    }
}

/// What can still be given back: paid, minus what is back or on its way.
fn refundable(h: &OrderHistory) -> i64 {
    let paid = matches!(h.order.status.as_str(), "SUCCESS" | "REFUND");
    if !paid {
        return 0;
    }
    let held: i64 = h
        .refunds
        .iter()
        .filter(|r| r.status != "CLOSED")
        .map(|r| r.refund_fee)
        .sum();
    (h.order.total_fee.fen() - held).max(0)
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
    Query(after): Query<AfterAction>,
) -> Result<Html<String>, ConsoleError> {
    let (h, actions) = history(&state, &signed, &out_trade_no).await?;
    let timeline = Timeline {
        entries: timeline(&h, &actions),
    }
    .render()?;
    let refundable_fen = refundable(&h);
    render(&OrderPage {
        layout: Layout::new(&signed, "orders")
            .with_flash(&state, after.audit)
            .await,
        operator: signed.is_operator(),
        live: state.watch.is_some(),
        refundable: format::yuan(refundable_fen),
        refundable_fen,
        // The form's own refund number: sending it twice is one refund.
        out_refund_no: format!("C{}", ulid::Ulid::new()),
        caller: h.caller.clone(),
        o: view(&h),
        timeline,
    })
}

pub async fn timeline_fragment(
    state: &AppState,
    signed: &Signed,
    out_trade_no: &str,
) -> Result<Html<String>, ConsoleError> {
    let (h, actions) = history(state, signed, out_trade_no).await?;
    render(&Timeline {
        entries: timeline(&h, &actions),
    })
}

pub async fn timeline_page(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    timeline_fragment(&state, &signed, &out_trade_no).await
}

/// The order's status as Server-Sent Events, the poller's JSON per event:
/// the current state first, then every change (refunds included) until the
/// watch's deadline; the browser's EventSource reconnects after it.
pub async fn live(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
) -> Result<Response, ConsoleError> {
    let no = parse_no(&out_trade_no)?;
    let watch = state.watch.clone().ok_or(ConsoleError::NotFound)?;
    let scope = merchant_scope(&signed.user.scope);
    let stream = watch
        .open_stream_within(&scope, no.as_str(), 0, true)
        .await
        .map_err(|e| {
            let status = tonic::Status::from(e);
            match status.code() {
                tonic::Code::NotFound | tonic::Code::InvalidArgument => ConsoleError::NotFound,
                _ => ConsoleError::Unavailable(
                    "the live status is not available now; the page still shows the order".into(),
                ),
            }
        })?;
    Ok(Sse::new(events(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn events(
    stream: poller::service::WatchStream,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    stream
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(|item| async move {
            item.ok().map(|e| {
                Ok(Event::default()
                    .retry(std::time::Duration::from_secs(1))
                    .data(poller::http_watch::event_json(&e)))
            })
        })
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    refund_fee: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    out_refund_no: String,
}

#[derive(Deserialize)]
pub struct PlainForm {
    #[serde(default)]
    csrf: String,
}

fn back_to(out_trade_no: &str, audit_id: i64) -> Response {
    Redirect::to(&format!("/orders/{out_trade_no}?audit={audit_id}")).into_response()
}

/// The order must exist and be within the person's merchants before anything
/// is asked of payment-service (which checks its own caller's scope, not theirs).
async fn visible(
    state: &AppState,
    signed: &Signed,
    out_trade_no: &str,
) -> Result<(), ConsoleError> {
    let no = parse_no(out_trade_no)?;
    state
        .store
        .order_history(&signed.user.scope, &no)
        .await?
        .map(|_| ())
        .ok_or(ConsoleError::NotFound)
}

pub async fn refund(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
    Form(f): Form<RefundForm>,
) -> Result<Response, ConsoleError> {
    let intent = || Intent {
        action: "refund",
        target: out_trade_no.clone(),
        fields: serde_json::json!({"refund_fee": f.refund_fee, "reason": f.reason}),
    };
    allow_action(&state, &signed, &f.csrf, intent()).await?;
    visible(&state, &signed, &out_trade_no).await?;
    let Some(fee) = f
        .refund_fee
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|fen| *fen > 0)
    else {
        let message = format!(
            "refund_fee must be a whole number of fen above 0 (got {:?})",
            f.refund_fee
        );
        return Err(state.actions.invalid(&signed, intent(), message).await);
    };
    let reason = f.reason.trim();
    if reason.is_empty() {
        let message = "a refund needs a reason (the payer sees it)".to_owned();
        return Err(state.actions.invalid(&signed, intent(), message).await);
    }
    let out_refund_no = match f.out_refund_no.trim() {
        "" => format!("C{}", ulid::Ulid::new()),
        given => given.to_owned(),
    };
    let outcome = state
        .actions
        .refund(&signed, &out_trade_no, &out_refund_no, fee, reason)
        .await?;
    Ok(back_to(&out_trade_no, outcome.audit_id))
}

pub async fn query(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
    Form(f): Form<PlainForm>,
) -> Result<Response, ConsoleError> {
    let intent = Intent {
        action: "query",
        target: out_trade_no.clone(),
        fields: serde_json::json!({}),
    };
    allow_action(&state, &signed, &f.csrf, intent).await?;
    visible(&state, &signed, &out_trade_no).await?;
    let outcome = state.actions.query(&signed, &out_trade_no).await?;
    Ok(back_to(&out_trade_no, outcome.audit_id))
}

pub async fn close(
    State(state): State<AppState>,
    signed: Signed,
    Path(out_trade_no): Path<String>,
    Form(f): Form<PlainForm>,
) -> Result<Response, ConsoleError> {
    let intent = Intent {
        action: "close",
        target: out_trade_no.clone(),
        fields: serde_json::json!({}),
    };
    allow_action(&state, &signed, &f.csrf, intent).await?;
    visible(&state, &signed, &out_trade_no).await?;
    let outcome = state.actions.close(&signed, &out_trade_no).await?;
    Ok(back_to(&out_trade_no, outcome.audit_id))
}
