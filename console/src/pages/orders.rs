//! `/orders`: the search (exact order number, transaction id or openid;
//! merchant, status, day range, amount range), newest first, a page at a time
//! by keyset; `/orders/totals`: the count and sums of everything the same
//! search matches, fetched separately so the list never waits for a sum.

use askama::Template;
use axum::{
    extract::{Query, State},
    response::Html,
};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use wxpay_core::domain::OrderStatus;
use wxpay_store::console::{OrderCursor, OrderFilter, OrderRow};

use super::{choices, render, Choice, Layout};
use crate::{application::AppState, error::ConsoleError, format, session::Signed};

/// Orders per page.
pub const PAGE: u32 = 50;

/// The search form as typed (every field optional, kept as text to show back).
#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub merchant: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub min: String,
    #[serde(default)]
    pub max: String,
    /// The keyset cursor: `<created_at microseconds>.<out_trade_no>` (Postgres keeps microseconds: a rounded cursor would skip or repeat rows).
    #[serde(default)]
    pub after: String,
}

impl Search {
    /// The filter, or which field is wrong.
    pub fn filter(&self) -> Result<OrderFilter, ConsoleError> {
        let text = |s: &str| {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_owned())
        };
        let status = match text(&self.status) {
            None => None,
            Some(s) => Some(
                OrderStatus::ALL
                    .iter()
                    .find(|x| x.as_str() == s)
                    .map(|x| x.as_str().to_owned())
                    .ok_or_else(|| {
                        ConsoleError::BadRequest(format!("status {s:?} is not a status"))
                    })?,
            ),
        };
        let day = |field: &str, s: &str| -> Result<Option<DateTime<Utc>>, ConsoleError> {
            match text(s) {
                None => Ok(None),
                Some(v) => format::parse_day(field, &v)
                    .map(|d| Some(format::day_start(d)))
                    .map_err(ConsoleError::BadRequest),
            }
        };
        let from = day("from", &self.from)?;
        // "To" is the last day included: everything before the next day starts.
        let to = match text(&self.to) {
            None => None,
            Some(v) => {
                let d = format::parse_day("to", &v).map_err(ConsoleError::BadRequest)?;
                Some(format::day_start(d.succ_opt().unwrap_or(d)))
            }
        };
        let fee = |field: &str, s: &str| -> Result<Option<i64>, ConsoleError> {
            match text(s) {
                None => Ok(None),
                Some(v) => format::parse_yuan(field, &v)
                    .map(Some)
                    .map_err(ConsoleError::BadRequest),
            }
        };
        Ok(OrderFilter {
            q: text(&self.q),
            merchant: text(&self.merchant),
            status,
            from,
            to,
            min_fee: fee("min", &self.min)?,
            max_fee: fee("max", &self.max)?,
        })
    }

    pub fn cursor(&self) -> Result<Option<OrderCursor>, ConsoleError> {
        if self.after.is_empty() {
            return Ok(None);
        }
        let bad =
            || ConsoleError::BadRequest("the page link is damaged; start the search again".into());
        let (millis, no) = self.after.split_once('.').ok_or_else(bad)?;
        let millis: i64 = millis.parse().map_err(|_| bad())?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(millis).ok_or_else(bad)?;
        Ok(Some(OrderCursor {
            created_at,
            out_trade_no: no.to_owned(),
        }))
    }

    /// The form's fields as a query string (without the cursor).
    pub fn query(&self) -> String {
        let pairs = [
            ("q", &self.q),
            ("merchant", &self.merchant),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("min", &self.min),
            ("max", &self.max),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", crate::session::url_encode(v.trim())))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// One order line, ready to show.
pub struct OrderLine {
    pub out_trade_no: String,
    pub merchant: String,
    pub status: String,
    pub amount: String,
    pub refunded: String,
    pub openid: String,
    pub created: String,
    pub paid: String,
}

impl From<&OrderRow> for OrderLine {
    fn from(o: &OrderRow) -> Self {
        Self {
            out_trade_no: o.out_trade_no.clone(),
            merchant: o.merchant.clone(),
            status: o.status.clone(),
            amount: format::yuan(o.total_fee),
            refunded: if o.refunded_fee > 0 {
                format::yuan(o.refunded_fee)
            } else {
                String::new()
            },
            openid: o.openid.clone(),
            created: format::time(&o.created_at),
            paid: format::time_opt(&o.paid_at),
        }
    }
}

pub const STATUSES: [&str; 7] = [
    "NOTPAY",
    "USERPAYING",
    "SUCCESS",
    "REFUND",
    "CLOSED",
    "PAYERROR",
    "REVOKED",
];

#[derive(Template)]
#[template(path = "orders.html")]
struct OrdersPage {
    layout: Layout,
    f: Search,
    statuses: Vec<Choice>,
    rows: Vec<OrderLine>,
    query: String,
    next: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(search): Query<Search>,
) -> Result<Html<String>, ConsoleError> {
    let filter = search.filter()?;
    let cursor = search.cursor()?;
    let page = state
        .store
        .search_orders(&signed.user.scope, &filter, cursor.as_ref(), PAGE)
        .await?;
    let query = search.query();
    let next = page.next.map(|c| {
        let after = format!("{}.{}", c.created_at.timestamp_micros(), c.out_trade_no);
        let sep = if query.is_empty() { "" } else { "&" };
        format!("{query}{sep}after={}", crate::session::url_encode(&after))
    });
    render(&OrdersPage {
        layout: Layout::new(&signed, "orders"),
        statuses: choices(&STATUSES, search.status.trim()),
        rows: page.rows.iter().map(OrderLine::from).collect(),
        query,
        next,
        f: search,
    })
}

#[derive(Template)]
#[template(path = "totals.html")]
struct TotalsFragment {
    orders: String,
    total: String,
    paid_orders: String,
    paid: String,
    refunded: String,
}

pub async fn totals(
    State(state): State<AppState>,
    signed: Signed,
    Query(search): Query<Search>,
) -> Result<Html<String>, ConsoleError> {
    let filter = search.filter()?;
    let t = state
        .store
        .order_totals(&signed.user.scope, &filter)
        .await?;
    render(&TotalsFragment {
        orders: format::count(t.orders),
        total: format::yuan(t.total_fee),
        paid_orders: format::count(t.paid_orders),
        paid: format::yuan(t.paid_fee),
        refunded: format::yuan(t.refunded_fee),
    })
}
