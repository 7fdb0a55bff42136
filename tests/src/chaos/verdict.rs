//! The verdict: what this deployment holds (its Postgres, read directly, and
//! what each watcher saw last) checked against WeChat's own ledger (the
//! sandbox's orders, refunds and notification deliveries). Every order WeChat
//! paid is paid here with the same transaction and amount; nothing is paid
//! here that WeChat has not paid; `refunded_fee` is what WeChat refunded and
//! never more than the total; each order's events are one increasing version
//! sequence ending at the order's row; every watcher ended on the order's
//! final status; every acknowledged notification's effect was kept. It only
//! reads; settling and waiting are the caller's.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use sqlx::{Connection, Row};
use wxpay_proto::v1::OrderStatus;

use super::traffic::{lock, Truth};

/// One thing found wrong, with the order it concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub out_trade_no: String,
    pub kind: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}] {}", self.out_trade_no, self.kind, self.detail)
    }
}

/// What one check found: the violations, and figures that are not violations.
#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub orders_checked: usize,
    pub paid_at_wechat: usize,
    pub refunds_checked: usize,
    pub refunded_fen: i64,
    /// Acknowledged notifications (payments) with no audit copy kept: by design
    /// a crash may lose the batched copies of already-applied payments.
    pub audit_copies_missing: usize,
}

#[derive(Debug)]
struct DbOrder {
    status: String,
    transaction_id: Option<String>,
    total_fee: i64,
    refunded_fee: i64,
    version: i64,
}

#[derive(Debug)]
struct DbRefund {
    out_trade_no: String,
    refund_fee: i64,
    status: String,
}

/// Runs every check once.
pub async fn check(
    database_url: &str,
    sandbox_url: &str,
    http: &reqwest::Client,
    truth: &Truth,
) -> anyhow::Result<Findings> {
    let mut db = sqlx::PgConnection::connect(database_url).await?;
    let mut orders = BTreeMap::new();
    for row in sqlx::query(
        "SELECT out_trade_no, status, transaction_id, total_fee, refunded_fee, version FROM orders",
    )
    .fetch_all(&mut db)
    .await?
    {
        orders.insert(
            row.get::<String, _>("out_trade_no"),
            DbOrder {
                status: row.get("status"),
                transaction_id: row.get("transaction_id"),
                total_fee: row.get("total_fee"),
                refunded_fee: row.get("refunded_fee"),
                version: row.get("version"),
            },
        );
    }
    let mut refunds = BTreeMap::new();
    for row in sqlx::query("SELECT out_refund_no, out_trade_no, refund_fee, status FROM refunds")
        .fetch_all(&mut db)
        .await?
    {
        refunds.insert(
            row.get::<String, _>("out_refund_no"),
            DbRefund {
                out_trade_no: row.get("out_trade_no"),
                refund_fee: row.get("refund_fee"),
                status: row.get("status"),
            },
        );
    }
    let mut events: BTreeMap<String, Vec<(i64, String, i64)>> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT out_trade_no, version, status, refunded_fee FROM order_events ORDER BY id",
    )
    .fetch_all(&mut db)
    .await?
    {
        events.entry(row.get("out_trade_no")).or_default().push((
            row.get("version"),
            row.get("status"),
            row.get("refunded_fee"),
        ));
    }
    let mut audit: BTreeMap<String, i64> = BTreeMap::new();
    for row in sqlx::query(
        "SELECT out_trade_no, count(*) AS n FROM notifications \
         WHERE out_trade_no IS NOT NULL GROUP BY out_trade_no",
    )
    .fetch_all(&mut db)
    .await?
    {
        audit.insert(row.get("out_trade_no"), row.get("n"));
    }
    let _ = db.close().await;

    let placed = lock(&truth.orders).clone();
    let watchers = lock(&truth.watchers).clone();
    let mut findings = Findings::default();
    let mut v = |no: &str, kind: &'static str, detail: String| {
        findings.violations.push(Violation {
            out_trade_no: no.to_owned(),
            kind,
            detail,
        })
    };

    // Every order either side knows.
    let numbers: BTreeSet<String> = orders.keys().chain(placed.keys()).cloned().collect();
    let refund_numbers: BTreeSet<String> = refunds
        .keys()
        .cloned()
        .chain(placed.values().flat_map(|p| p.refunds.iter().cloned()))
        .collect();
    let wechat_orders = fetch_all(http, sandbox_url, "orders", &numbers).await;
    let wechat_deliveries = fetch_all(
        http,
        sandbox_url,
        "orders",
        &numbers
            .iter()
            .map(|n| format!("{n}/notifications"))
            .collect(),
    )
    .await;
    let wechat_refunds = fetch_all(http, sandbox_url, "refunds", &refund_numbers).await;

    // WeChat's refunds by order: the SUCCESS ones' sum, and each refund.
    let mut wechat_refunded: BTreeMap<String, i64> = BTreeMap::new();
    for (no, view) in &wechat_refunds {
        let Some(view) = view else { continue };
        findings.refunds_checked += 1;
        let order = view["out_trade_no"].as_str().unwrap_or_default().to_owned();
        let status = view["status"].as_str().unwrap_or_default();
        let fee = view["refund_fee"].as_i64().unwrap_or_default();
        if status == "SUCCESS" {
            *wechat_refunded.entry(order.clone()).or_default() += fee;
            findings.refunded_fen += fee;
        }
        match refunds.get(no) {
            None => v(
                &order,
                "refund unknown here",
                format!("WeChat has refund {no} ({status}, {fee} fen); there is no row for it"),
            ),
            Some(here) => {
                let same = match status {
                    "SUCCESS" => here.status == "SUCCESS",
                    "REFUNDCLOSE" => here.status == "CLOSED",
                    "CHANGE" => here.status == "CHANGE",
                    _ => here.status == "PROCESSING",
                };
                if !same || here.refund_fee != fee {
                    v(
                        &order,
                        "refund differs",
                        format!(
                            "refund {no}: WeChat {status} {fee} fen, here {} {} fen",
                            here.status, here.refund_fee
                        ),
                    );
                }
            }
        }
    }
    for (no, here) in &refunds {
        let known = wechat_refunds.get(no).is_some_and(Option::is_some);
        if !known && here.status == "SUCCESS" {
            v(
                &here.out_trade_no,
                "refund WeChat never made",
                format!(
                    "refund {no} is SUCCESS here ({} fen); WeChat has no such refund",
                    here.refund_fee
                ),
            );
        }
    }

    for no in &numbers {
        findings.orders_checked += 1;
        let wechat = wechat_orders.get(no).and_then(Option::as_ref);
        let here = orders.get(no);
        let paid_here = here.is_some_and(|o| matches!(o.status.as_str(), "SUCCESS" | "REFUND"));
        let Some(here) = here else {
            v(
                no,
                "order lost",
                "CreateOrder answered with this order; there is no row for it".to_owned(),
            );
            continue;
        };
        let wechat_status = wechat
            .and_then(|w| w["status"].as_str())
            .unwrap_or("(none)");
        let paid_there = matches!(wechat_status, "SUCCESS" | "REFUND");
        if paid_there {
            findings.paid_at_wechat += 1;
            let w = wechat.cloned().unwrap_or_default();
            let tid = w["transaction_id"].as_str();
            let fee = w["total_fee"].as_i64();
            if !paid_here {
                v(
                    no,
                    "paid at WeChat, not here",
                    format!(
                        "WeChat {wechat_status} ({}), here {}",
                        tid.unwrap_or("?"),
                        here.status
                    ),
                );
            } else if here.transaction_id.as_deref() != tid || Some(here.total_fee) != fee {
                v(
                    no,
                    "payment differs",
                    format!(
                        "WeChat {:?} {:?} fen, here {:?} {} fen",
                        tid, fee, here.transaction_id, here.total_fee
                    ),
                );
            }
        } else if paid_here {
            v(
                no,
                "paid here, not at WeChat",
                format!(
                    "here {} ({:?}), WeChat {wechat_status}",
                    here.status, here.transaction_id
                ),
            );
        }
        let refunded_there = wechat_refunded.get(no).copied().unwrap_or(0);
        if here.refunded_fee != refunded_there {
            v(
                no,
                "refunded_fee differs",
                format!(
                    "here {} fen, WeChat refunded {refunded_there} fen (SUCCESS refunds)",
                    here.refunded_fee
                ),
            );
        }
        if here.refunded_fee > here.total_fee || refunded_there > here.total_fee {
            v(
                no,
                "over-refunded",
                format!(
                    "total {} fen; refunded here {}, at WeChat {refunded_there}",
                    here.total_fee, here.refunded_fee
                ),
            );
        }

        // The outbox: one strictly increasing, gapless version sequence that
        // ends where the order's row is.
        let evs = events.get(no).map(Vec::as_slice).unwrap_or(&[]);
        let versions: Vec<i64> = evs.iter().map(|e| e.0).collect();
        let expected: Vec<i64> = (2..=here.version).collect();
        if versions != expected {
            v(
                no,
                "event versions",
                format!(
                    "order_events versions {versions:?}; the order is at version {}",
                    here.version
                ),
            );
        } else if let Some((_, status, refunded)) = evs.last() {
            if *status != here.status || *refunded != here.refunded_fee {
                v(
                    no,
                    "last event differs",
                    format!(
                        "last event {status} refunded {refunded}; order {} refunded {}",
                        here.status, here.refunded_fee
                    ),
                );
            }
        }

        // The phone: its last event is the order as it ended.
        if let Some(w) = watchers.get(no) {
            for r in lock(&w.regressions).iter() {
                v(no, "watcher went back", r.clone());
            }
            let last = *lock(&w.last);
            let status = OrderStatus::from_str_name(&format!("ORDER_STATUS_{}", here.status))
                .map(|s| s as i32);
            let want = status.map(|s| (s, here.version, here.refunded_fee));
            if last != want {
                let shown = last.map(|(s, ver, r)| {
                    format!(
                        "{} v{ver} refunded {r}",
                        OrderStatus::try_from(s).map_or("?", |s| s.as_str_name())
                    )
                });
                v(
                    no,
                    "watcher ended elsewhere",
                    format!(
                        "last event {}; the order is {} v{} refunded {}",
                        shown.unwrap_or_else(|| "none".to_owned()),
                        here.status,
                        here.version,
                        here.refunded_fee
                    ),
                );
            }
        }

        // Acknowledged notifications: their effect kept (the payment is
        // checked above), their audit copy counted.
        let acked = wechat_deliveries
            .get(&format!("{no}/notifications"))
            .and_then(Option::as_ref)
            .and_then(|d| d.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|d| d["acknowledged"] == true)
            .count();
        if acked > 0 && audit.get(no).copied().unwrap_or(0) == 0 {
            findings.audit_copies_missing += 1;
        }
        if acked > 0 && wechat_status == "SUCCESS" && !paid_here {
            v(
                no,
                "acknowledged, not kept",
                format!(
                    "{acked} payment notifications acknowledged; the order is {}",
                    here.status
                ),
            );
        }
    }
    // What the driver did to each order, beside what went wrong with it.
    for violation in &mut findings.violations {
        if let Some(p) = placed.get(&violation.out_trade_no) {
            violation.detail.push_str(&format!(
                " (driver: {}, {} fen, refunds {:?})",
                p.scenario, p.total_fee, p.refunds
            ));
        }
    }
    findings.violations.sort();
    Ok(findings)
}

/// `GET /sandbox/{what}/{key}` for every key, a few at a time; `None` for a 404.
async fn fetch_all(
    http: &reqwest::Client,
    sandbox_url: &str,
    what: &str,
    keys: &BTreeSet<String>,
) -> BTreeMap<String, Option<serde_json::Value>> {
    futures::stream::iter(keys.iter().cloned())
        .map(|key| async move {
            let url = format!("{sandbox_url}/sandbox/{what}/{key}");
            for _ in 0..5 {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return (key, None),
                    Ok(r) if r.status().is_success() => {
                        return (key, r.json().await.ok());
                    }
                    _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
            (key, None)
        })
        .buffer_unordered(16)
        .collect()
        .await
}
