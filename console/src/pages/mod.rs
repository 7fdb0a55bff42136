//! The server-rendered pages: one module per page, each a handler that reads
//! through [`wxpay_store::console::ConsoleStore`], turns rows into display
//! strings (money in yuan, times in Beijing time) and renders an askama
//! template. What every page shares lives here: the layout (who is signed in,
//! the CSRF token their forms carry, the result of their last action) and the
//! check every action passes first.

pub mod anomalies;
pub mod audit;
pub mod bills;
pub mod charts;
pub mod dashboard;
pub mod login;
pub mod order;
pub mod orders;
pub mod refunds;

use askama::Template;
use axum::{
    http::header,
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use wxpay_core::domain::MerchantName;
use wxpay_runtime::access::MerchantScope;
use wxpay_store::console::Scope;

use crate::{actions::Intent, application::AppState, error::ConsoleError, session::Signed};

/// Served from the binary: no files to deploy, no build step.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../console.js"),
    )
        .into_response()
}

pub async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../console.css"),
    )
        .into_response()
}

/// The result of the action that brought the person back to this page.
#[derive(Debug, Clone)]
pub struct Flash {
    pub audit_id: i64,
    pub ok: bool,
    pub message: String,
}

/// What the frame around every page shows.
pub struct Layout {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub active: &'static str,
    pub flash: Option<Flash>,
}

impl Layout {
    pub fn new(signed: &Signed, active: &'static str) -> Self {
        Self {
            user: signed.user.name.clone(),
            role: signed.user.role.as_str(),
            csrf: signed.csrf.clone(),
            active,
            flash: None,
        }
    }

    /// With the result of the signed-in person's own action `?audit=ID`
    /// (someone else's entry is not shown here: it is on /audit).
    pub async fn with_flash(mut self, state: &AppState, audit: Option<i64>) -> Self {
        if let Some(id) = audit {
            if let Ok(entries) = state.store.audit(id.checked_add(1), 1).await {
                if let Some(e) = entries
                    .into_iter()
                    .find(|e| e.id == id && e.actor == self.user)
                {
                    self.flash = Some(Flash {
                        audit_id: e.id,
                        ok: e.ok.unwrap_or(false),
                        message: e.result.unwrap_or_else(|| "started".into()),
                    });
                }
            }
        }
        self
    }
}

/// A choice in a select or a row of tabs.
pub struct Choice {
    pub value: &'static str,
    pub on: bool,
}

pub fn choices(all: &[&'static str], current: &str) -> Vec<Choice> {
    all.iter()
        .map(|v| Choice {
            value: v,
            on: *v == current,
        })
        .collect()
}

pub fn render<T: Template>(t: &T) -> Result<Html<String>, ConsoleError> {
    Ok(Html(t.render()?))
}

/// The poller's idea of the same scope (the live watch checks it too).
pub fn merchant_scope(scope: &Scope) -> MerchantScope {
    match scope {
        Scope::All => MerchantScope::All,
        Scope::Merchants(names) => MerchantScope::Only(
            names
                .iter()
                .filter_map(|n| MerchantName::parse(n).ok())
                .collect(),
        ),
    }
}

/// `?audit=ID` on a page an action redirects back to.
#[derive(Debug, Default, Deserialize)]
pub struct AfterAction {
    pub audit: Option<i64>,
}

/// Every action passes here first: an operator, with this session's CSRF
/// token. A refusal is written to the audit log (who tried what) and nothing
/// is performed.
pub async fn allow_action(
    state: &AppState,
    signed: &Signed,
    csrf: &str,
    intent: Intent,
) -> Result<(), ConsoleError> {
    if !signed.csrf_matches(csrf) {
        return Err(state
            .actions
            .refuse(signed, intent, "the form's CSRF token is missing or stale")
            .await);
    }
    if !signed.is_operator() {
        return Err(state
            .actions
            .refuse(signed, intent, "viewers cannot act")
            .await);
    }
    Ok(())
}
