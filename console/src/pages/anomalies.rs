//! `/anomalies`: the work queue of what needs a person (a payment after a
//! close, a wrong amount, a message for another merchant…), open first, each
//! with what to do about it; an operator resolves one with a note, and it
//! stays listed as resolved with who, when and the note.

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    response::{Html, IntoResponse, Redirect, Response},
    Form,
};
use serde::Deserialize;
use wxpay_store::console::{AnomalyRow, AnomalyState};

use super::{allow_action, render, Layout};
use crate::{actions::Intent, application::AppState, error::ConsoleError, format, session::Signed};

const PAGE: u32 = 100;
/// A note says what was done; a page of text is not a note.
const MAX_NOTE: usize = 500;

/// What a person should do about each kind (the store's closed list).
pub fn advice(kind: &str) -> &'static str {
    match kind {
        "paid_after_close" => "The customer paid a closed order and the payment is recorded: refund it or deliver the goods.",
        "amount_mismatch" | "query_amount_mismatch" => "WeChat reports a different amount than the order: check the order and the merchant console before delivering.",
        "payment_conflict" => "A second, different payment for an order already paid: refund one of them.",
        "transaction_reused" => "A WeChat transaction already recorded on another order: check both orders.",
        "refund_amount_mismatch" | "refund_conflict" => "A refund that does not fit the order: compare with the merchant console.",
        "refund_before_payment" => "A refund for an order never seen paid: ask WeChat about the order (Query WeChat).",
        "unknown_order" => "A genuine message for an order this service does not have: find where it was placed.",
        "wrong_merchant" => "A correctly signed message for another merchant account: check the notify URLs configured at WeChat.",
        _ => "",
    }
}

pub struct AnomalyLine {
    pub id: i64,
    pub kind: String,
    pub advice: &'static str,
    pub out_trade_no: Option<String>,
    pub detail: String,
    pub at: String,
    pub resolved: bool,
    pub resolved_by: String,
    pub resolved_at: String,
    pub note: String,
}

impl From<&AnomalyRow> for AnomalyLine {
    fn from(a: &AnomalyRow) -> Self {
        let (resolved_by, resolved_at, note) = match &a.resolution {
            Some(r) => (
                r.resolved_by.clone(),
                format::time(&r.resolved_at),
                r.note.clone(),
            ),
            None => Default::default(),
        };
        Self {
            id: a.id,
            kind: a.kind.clone(),
            advice: advice(&a.kind),
            out_trade_no: a.out_trade_no.clone(),
            detail: a.detail.clone(),
            at: format::time(&a.occurred_at),
            resolved: a.resolution.is_some(),
            resolved_by,
            resolved_at,
            note,
        }
    }
}

#[derive(Template)]
#[template(path = "anomalies.html")]
struct AnomaliesPage {
    layout: Layout,
    state: &'static str,
    operator: bool,
    rows: Vec<AnomalyLine>,
    before: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    before: Option<i64>,
    audit: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, ConsoleError> {
    let (which, name) = match q.state.as_str() {
        "" | "open" => (AnomalyState::Open, "open"),
        "resolved" => (AnomalyState::Resolved, "resolved"),
        "all" => (AnomalyState::All, "all"),
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "state must be open, resolved or all (got {other:?})"
            )))
        }
    };
    let rows = state
        .store
        .anomalies(&signed.user.scope, which, q.before, PAGE)
        .await?;
    let before = (rows.len() == PAGE as usize)
        .then(|| rows.last().map(|a| a.id))
        .flatten();
    render(&AnomaliesPage {
        layout: Layout::new(&signed, "anomalies")
            .with_flash(&state, q.audit)
            .await,
        state: name,
        operator: signed.is_operator(),
        rows: rows.iter().map(AnomalyLine::from).collect(),
        before,
    })
}

#[derive(Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    note: String,
}

pub async fn resolve(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<i64>,
    Form(f): Form<ResolveForm>,
) -> Result<Response, ConsoleError> {
    let intent = |fields| Intent {
        action: "resolve",
        target: format!("anomaly {id}"),
        fields,
    };
    let chars = f.note.chars().count();
    // A note too long to keep is audited by its length, not its text.
    let fields = if chars > MAX_NOTE {
        serde_json::json!({"note_chars": chars})
    } else {
        serde_json::json!({"note": f.note})
    };
    allow_action(&state, &signed, &f.csrf, intent(fields.clone())).await?;
    let note = f.note.trim();
    if note.is_empty() {
        let message = "a resolution needs a note saying what was done".to_owned();
        return Err(state
            .actions
            .invalid(&signed, intent(fields), message)
            .await);
    }
    if chars > MAX_NOTE {
        let message = format!("the note is longer than {MAX_NOTE} characters");
        return Err(state
            .actions
            .invalid(&signed, intent(fields), message)
            .await);
    }
    if state.store.anomaly(&signed.user.scope, id).await?.is_none() {
        return Err(ConsoleError::NotFound);
    }
    let outcome = state
        .actions
        .resolve(&signed, &signed.user.scope, id, note)
        .await?;
    Ok(Redirect::to(&format!(
        "/anomalies?state=all&audit={}#anomaly-{id}",
        outcome.audit_id
    ))
    .into_response())
}
