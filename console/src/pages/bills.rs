//! `/bills`: each day's reconciliation of WeChat's bill against what this
//! service recorded (the last two weeks, reconciled or not, and every older
//! reconciled day); `/bills/{yyyyMMdd}`: one day's report and discrepancies,
//! and "reconcile again" through ReconcileBill.

use askama::Template;
use axum::{
    extract::{Path, Query, State},
    response::{Html, IntoResponse, Redirect, Response},
    Form,
};
use chrono::NaiveDate;
use serde::Deserialize;
use wxpay_core::domain::BillReport;

use super::{allow_action, render, AfterAction, Layout};
use crate::{actions::Intent, application::AppState, error::ConsoleError, format, session::Signed};

/// Days listed whether or not they were reconciled.
const RECENT_DAYS: u64 = 14;
const OLDER_DAYS: u32 = 90;

pub struct DayLine {
    pub day: String,
    pub label: String,
    pub reconciled: bool,
    pub wechat_rows: String,
    pub matched: String,
    pub repaired: String,
    pub discrepancies: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "bills.html")]
struct BillsPage {
    layout: Layout,
    yesterday: String,
    days: Vec<DayLine>,
}

fn compact(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

fn label(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub async fn list(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Html<String>, ConsoleError> {
    if signed.user.scope != wxpay_store::console::Scope::All {
        return Err(ConsoleError::Forbidden(
            "bills cover every merchant; your account sees only some".into(),
        ));
    }
    let today = format::today();
    let reconciled = state.store.bill_days(None, OLDER_DAYS).await?;
    let mut days: Vec<NaiveDate> = (1..=RECENT_DAYS)
        .filter_map(|n| today.checked_sub_days(chrono::Days::new(n)))
        .collect();
    days.extend(reconciled.iter().map(|b| b.bill_date));
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    let lines = days
        .into_iter()
        .map(|d| match reconciled.iter().find(|b| b.bill_date == d) {
            Some(b) => DayLine {
                day: compact(d),
                label: label(d),
                reconciled: true,
                wechat_rows: b.wechat_rows.to_string(),
                matched: b.matched.to_string(),
                repaired: b.repaired.to_string(),
                discrepancies: b.discrepancies.to_string(),
                at: format::time(&b.reconciled_at),
            },
            None => DayLine {
                day: compact(d),
                label: label(d),
                reconciled: false,
                wechat_rows: String::new(),
                matched: String::new(),
                repaired: String::new(),
                discrepancies: "0".into(),
                at: String::new(),
            },
        })
        .collect();
    render(&BillsPage {
        layout: Layout::new(&signed, "bills"),
        yesterday: today
            .checked_sub_days(chrono::Days::new(1))
            .map(label)
            .unwrap_or_default(),
        days: lines,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct OpenQuery {
    #[serde(default)]
    day: String,
}

/// The day picker's target: a plain GET form cannot build `/bills/{day}`.
pub async fn open(_signed: Signed, Query(q): Query<OpenQuery>) -> Result<Response, ConsoleError> {
    let day = format::parse_day("day", &q.day).map_err(ConsoleError::BadRequest)?;
    Ok(Redirect::to(&format!("/bills/{}", compact(day))).into_response())
}

fn parse_compact(s: &str) -> Result<NaiveDate, ConsoleError> {
    if s.len() != 8 {
        return Err(ConsoleError::NotFound);
    }
    NaiveDate::parse_from_str(s, "%Y%m%d").map_err(|_| ConsoleError::NotFound)
}

pub struct DiscrepancyLine {
    pub kind: String,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub detail: String,
}

pub struct ReportView {
    pub wechat_rows: u64,
    pub matched: u64,
    pub repaired: u64,
    pub discrepancies: Vec<DiscrepancyLine>,
    pub at: String,
}

#[derive(Template)]
#[template(path = "bill.html")]
struct BillPage {
    layout: Layout,
    day: String,
    label: String,
    operator: bool,
    report: Option<ReportView>,
}

fn report_view(r: &BillReport) -> ReportView {
    ReportView {
        wechat_rows: r.wechat_rows,
        matched: r.matched,
        repaired: r.repaired,
        discrepancies: r
            .discrepancies
            .iter()
            .map(|d| DiscrepancyLine {
                kind: d.kind.as_str().to_owned(),
                out_trade_no: d.out_trade_no.clone(),
                out_refund_no: d.out_refund_no.clone(),
                detail: d.detail.clone(),
            })
            .collect(),
        at: format::time(&r.reconciled_at),
    }
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(day): Path<String>,
    Query(after): Query<AfterAction>,
) -> Result<Html<String>, ConsoleError> {
    if signed.user.scope != wxpay_store::console::Scope::All {
        return Err(ConsoleError::Forbidden(
            "bills cover every merchant; your account sees only some".into(),
        ));
    }
    let date = parse_compact(&day)?;
    let report = state.store.bill_day(date).await?;
    render(&BillPage {
        layout: Layout::new(&signed, "bills")
            .with_flash(&state, after.audit)
            .await,
        day: compact(date),
        label: label(date),
        operator: signed.is_operator(),
        report: report.as_ref().map(report_view),
    })
}

#[derive(Deserialize)]
pub struct ReconcileForm {
    #[serde(default)]
    csrf: String,
}

pub async fn reconcile(
    State(state): State<AppState>,
    signed: Signed,
    Path(day): Path<String>,
    Form(f): Form<ReconcileForm>,
) -> Result<Response, ConsoleError> {
    let intent = Intent {
        action: "reconcile",
        target: day.clone(),
        fields: serde_json::json!({"again": true}),
    };
    allow_action(&state, &signed, &f.csrf, intent).await?;
    // A bill covers every merchant: only someone who sees them all reconciles it.
    if signed.user.scope != wxpay_store::console::Scope::All {
        return Err(ConsoleError::Forbidden(
            "a bill covers every merchant; reconciling it needs a user who sees them all".into(),
        ));
    }
    let date = parse_compact(&day)?;
    let outcome = state.actions.reconcile(&signed, &compact(date)).await?;
    Ok(Redirect::to(&format!(
        "/bills/{}?audit={}",
        compact(date),
        outcome.audit_id
    ))
    .into_response())
}
