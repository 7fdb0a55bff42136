//! `/`: the last 24 hours at a glance: money paid, what needs a person (open
//! anomalies, refunds in CHANGE), how notifications were judged, and whether
//! the outbox keeps up (how long the slowest event of each hour waited to be
//! published).

use askama::Template;
use axum::{extract::State, response::Html};
use chrono::{Duration, DurationRound, Utc};

use super::{
    charts::{self, Bar},
    render, Layout,
};
use crate::{application::AppState, error::ConsoleError, format, session::Signed};

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    layout: Layout,
    paid_total: String,
    paid_count: String,
    open_anomalies: String,
    refunds_change: String,
    refunds_processing: String,
    outbox_pending: String,
    outbox_oldest: String,
    paid_chart: String,
    count_chart: String,
    verdict_chart: String,
    outbox_chart: String,
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Html<String>, ConsoleError> {
    let now = Utc::now();
    let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let since = this_hour - Duration::hours(23);
    let d = state.store.dashboard(&signed.user.scope, since).await?;
    // Every one of the 24 hours gets a bar, paid in it or not.
    let hours: Vec<_> = (0..24).map(|i| since + Duration::hours(i)).collect();
    let hour_label = |h: &chrono::DateTime<Utc>| {
        h.with_timezone(&format::beijing())
            .format("%H:00")
            .to_string()
    };
    let paid_bars: Vec<Bar> = hours
        .iter()
        .map(|h| {
            let fee = d
                .paid_per_hour
                .iter()
                .find(|p| p.hour == *h)
                .map_or(0, |p| p.fee);
            Bar {
                label: hour_label(h),
                value: fee,
                title: format!("{}: {}", hour_label(h), format::yuan(fee)),
            }
        })
        .collect();
    let count_bars: Vec<Bar> = hours
        .iter()
        .map(|h| {
            let n = d
                .paid_per_hour
                .iter()
                .find(|p| p.hour == *h)
                .map_or(0, |p| p.orders);
            Bar {
                label: hour_label(h),
                value: n,
                title: format!("{}: {n} orders", hour_label(h)),
            }
        })
        .collect();
    let outbox_bars: Vec<Bar> = hours
        .iter()
        .map(|h| {
            let (events, ms) = d
                .outbox_per_hour
                .iter()
                .find(|p| p.hour == *h)
                .map_or((0, 0), |p| (p.events, p.max_delay_ms));
            Bar {
                label: hour_label(h),
                value: ms,
                title: format!(
                    "{}: {events} events, slowest published after {ms} ms",
                    hour_label(h)
                ),
            }
        })
        .collect();
    let verdict_bars: Vec<Bar> = d
        .verdicts
        .iter()
        .map(|v| Bar {
            label: format!("{} · {}", v.kind, v.verdict),
            value: v.count,
            title: format!("{} {} notifications: {}", v.count, v.kind, v.verdict),
        })
        .collect();
    let paid_total: i64 = d.paid_per_hour.iter().map(|p| p.fee).sum();
    let paid_count: i64 = d.paid_per_hour.iter().map(|p| p.orders).sum();
    let oldest = match d.outbox.oldest_age {
        Some(age) if d.outbox.count > 0 => format!("{} s", age.as_secs()),
        _ => "none".to_owned(),
    };
    render(&DashboardPage {
        layout: Layout::new(&signed, "dashboard"),
        paid_total: format::yuan(paid_total),
        paid_count: format::count(paid_count),
        open_anomalies: format::count(d.open_anomalies),
        refunds_change: format::count(d.refunds_change),
        refunds_processing: format::count(d.refunds_processing),
        outbox_pending: format::count(d.outbox.count),
        outbox_oldest: oldest,
        paid_chart: charts::columns(&paid_bars, "#0a7b4f", format::yuan),
        count_chart: charts::columns(&count_bars, "#1d4ed8", |n| {
            format!("{} orders", format::count(n))
        }),
        verdict_chart: charts::rows(&verdict_bars, |b| {
            if b.label.ends_with("applied") || b.label.contains("duplicate") {
                "#0a7b4f"
            } else {
                "#b42318"
            }
        }),
        outbox_chart: charts::columns(&outbox_bars, "#a15c07", |ms| format!("{ms} ms")),
    })
}
