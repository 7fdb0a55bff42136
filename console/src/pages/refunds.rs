//! `/refunds`: every refund newest first, by status (CHANGE ones need a
//! person in the merchant console; PROCESSING ones are on their way).

use askama::Template;
use axum::{
    extract::{Query, State},
    response::Html,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use wxpay_store::console::RefundCursor;

use super::{choices, render, Choice, Layout};
use crate::{application::AppState, error::ConsoleError, format, session::Signed};

const PAGE: u32 = 50;
const STATUSES: [&str; 4] = ["PROCESSING", "SUCCESS", "CHANGE", "CLOSED"];

pub struct RefundLine {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub merchant: String,
    pub amount: String,
    pub status: String,
    pub failure: String,
    pub reason: String,
    pub created: String,
    pub succeeded: String,
}

#[derive(Template)]
#[template(path = "refunds.html")]
struct RefundsPage {
    layout: Layout,
    all: bool,
    statuses: Vec<Choice>,
    rows: Vec<RefundLine>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    after: String,
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, ConsoleError> {
    let status = match q.status.trim() {
        "" => None,
        s => Some(*STATUSES.iter().find(|x| **x == s).ok_or_else(|| {
            ConsoleError::BadRequest(format!("status {s:?} is not a refund status"))
        })?),
    };
    let cursor = match q.after.split_once('.') {
        None if q.after.is_empty() => None,
        Some((millis, no)) => Some(RefundCursor {
            created_at: millis
                .parse()
                .ok()
                .and_then(DateTime::<Utc>::from_timestamp_micros)
                .ok_or_else(|| ConsoleError::BadRequest("the page link is damaged".into()))?,
            out_refund_no: no.to_owned(),
        }),
        None => return Err(ConsoleError::BadRequest("the page link is damaged".into())),
    };
    let page = state
        .store
        .refunds(&signed.user.scope, status, cursor.as_ref(), PAGE)
        .await?;
    let next = page.next.map(|c| {
        let after = format!("{}.{}", c.created_at.timestamp_micros(), c.out_refund_no);
        let mut query = format!("after={}", crate::session::url_encode(&after));
        if let Some(s) = status {
            query.push_str(&format!("&status={s}"));
        }
        query
    });
    render(&RefundsPage {
        layout: Layout::new(&signed, "refunds"),
        all: status.is_none(),
        statuses: choices(&STATUSES, status.unwrap_or("")),
        rows: page
            .rows
            .iter()
            .map(|r| RefundLine {
                out_refund_no: r.out_refund_no.clone(),
                out_trade_no: r.out_trade_no.clone(),
                merchant: r.merchant.clone(),
                amount: format::yuan(r.refund_fee),
                status: r.status.clone(),
                failure: r.failure.clone().unwrap_or_default(),
                reason: r.reason.clone(),
                created: format::time(&r.created_at),
                succeeded: format::time_opt(&r.succeeded_at),
            })
            .collect(),
        next,
    })
}
