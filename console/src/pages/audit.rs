//! `/audit`: every action taken in the console, newest first: who, when, what,
//! on what, with which fields, and how it ended (refused ones included).

use askama::Template;
use axum::{
    extract::{Query, State},
    response::Html,
};
use serde::Deserialize;

use super::{render, Layout};
use crate::{application::AppState, error::ConsoleError, format, session::Signed};

const PAGE: u32 = 100;

pub struct AuditLine {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub link: String,
    pub fields: String,
    pub result: String,
    pub class: &'static str,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    layout: Layout,
    rows: Vec<AuditLine>,
    before: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    before: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, ConsoleError> {
    let mut rows = state.store.audit(q.before, PAGE).await?;
    let before = (rows.len() == PAGE as usize)
        .then(|| rows.last().map(|e| e.id))
        .flatten();
    // Someone confined to some merchants sees only their own actions: the
    // others' targets may be orders they must not see.
    if signed.user.scope != wxpay_store::console::Scope::All {
        rows.retain(|e| e.actor == signed.user.name);
    }
    let lines = rows
        .iter()
        .map(|e| AuditLine {
            id: e.id,
            at: format::time(&e.at),
            actor: e.actor.clone(),
            role: e.role.clone(),
            action: e.action.clone(),
            link: match e.action.as_str() {
                "refund" | "query" | "close" => format!("/orders/{}", e.target),
                "reconcile" => format!("/bills/{}", e.target),
                _ => String::new(),
            },
            target: e.target.clone(),
            fields: e.fields.clone(),
            result: e
                .result
                .clone()
                .unwrap_or_else(|| "started, no result recorded".into()),
            class: match e.ok {
                Some(true) => "ok",
                Some(false) => "bad",
                None => "pending",
            },
        })
        .collect();
    render(&AuditPage {
        layout: Layout::new(&signed, "audit"),
        rows: lines,
        before,
    })
}
