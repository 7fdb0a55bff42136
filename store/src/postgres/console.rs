//! The operator console's reads and its two writes on Postgres
//! ([`ConsoleStore`]): keyset pages of orders and refunds, an order's history,
//! anomalies and their resolutions, reconciled bill days, the dashboard's
//! figures and the audit log.
//!
//! Statements are assembled with [`QueryBuilder`]: a filter nobody set adds no
//! condition at all (rather than `($n IS NULL OR …)`), so each combination of
//! filters gets a plan that uses the index meant for it. Every value is still
//! a bind, never text pasted into the SQL. They are sent as unnamed statements
//! (`persistent(false)`), planned with their values each time: a cached
//! generic plan cannot tell a rare status or merchant from a common one, and
//! picks the newest-first index with a filter, which for a status nobody has
//! (REVOKED) reads the whole table (89 ms at 300,000 orders, against 0.07 ms
//! planned with the value). The console runs few queries; planning each one
//! costs well under a millisecond.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{postgres::PgRow, Postgres, QueryBuilder, Row};

use super::{
    rows::{map_err, order_from_row},
    PgStore, ORDER_COLUMNS,
};
use crate::{
    columns::{bill_report_from_json, bill_summary},
    console::{
        AnomalyRow, AnomalyState, AuditEntry, BillSummary, ConsoleStore, Dashboard, EventRow,
        HourlyOutbox, HourlyPaid, NewAuditEntry, NotificationRow, OrderCursor, OrderFilter,
        OrderHistory, OrderPage, OrderRow, OrderTotals, RefundCursor, RefundPage, RefundRow,
        Resolution, ResolveOutcome, Scope, VerdictCount,
    },
    Store, StoreError,
};
use wxpay_core::domain::{BillReport, OutTradeNo};

const ORDER_ROW_COLUMNS: &str = "out_trade_no, merchant, status, trade_type, total_fee, \
     refunded_fee, openid, transaction_id, created_at, paid_at";

/// Refunds with their order's merchant (a refund has none of its own).
const REFUND_ROWS: &str = "SELECT r.out_refund_no, r.out_trade_no, o.merchant, r.refund_id, \
     r.refund_fee, r.status, r.reason, r.failure, r.created_at, r.updated_at, r.succeeded_at \
     FROM refunds r JOIN orders o ON o.out_trade_no = r.out_trade_no WHERE TRUE";

/// Anomalies with their order's merchant (NULL: no such order) and resolution.
const ANOMALY_ROWS: &str = "SELECT a.id, a.kind, a.out_trade_no, o.merchant, a.detail, \
     a.occurred_at, r.resolved_by, r.resolved_at, r.note \
     FROM anomalies a \
     LEFT JOIN orders o ON o.out_trade_no = a.out_trade_no \
     LEFT JOIN anomaly_resolutions r ON r.anomaly_id = a.id WHERE TRUE";

const AUDIT_COLUMNS: &str = "id, at, actor, role, action, target, fields, result, ok, finished_at";

/// `AND <merchant_column> = ANY(list)` for a confined scope (an empty list
/// matches nothing); nothing for [`Scope::All`]. A NULL merchant (an anomaly
/// about no known order) never matches, so only `All` sees those.
fn push_scope(qb: &mut QueryBuilder<'static, Postgres>, scope: &Scope, merchant_column: &str) {
    if let Scope::Merchants(names) = scope {
        qb.push(format_args!(" AND {merchant_column} = ANY("))
            .push_bind(names.clone())
            .push(")");
    }
}

/// The conditions of the orders search, shared by the page and the totals.
fn push_order_filter(qb: &mut QueryBuilder<'static, Postgres>, scope: &Scope, f: &OrderFilter) {
    push_scope(qb, scope, "merchant");
    if let Some(q) = &f.q {
        // Equalities only, each on its own index (a BitmapOr of the four); an
        // empty openid is "no payer yet", never a match for anything typed.
        qb.push(" AND (out_trade_no = ")
            .push_bind(q.clone())
            .push(" OR transaction_id = ")
            .push_bind(q.clone())
            .push(" OR (openid = ")
            .push_bind(q.clone())
            .push(" AND openid <> '') OR (sub_openid = ")
            .push_bind(q.clone())
            .push(" AND sub_openid <> ''))");
    }
    if let Some(merchant) = &f.merchant {
        qb.push(" AND merchant = ").push_bind(merchant.clone());
    }
    if let Some(status) = &f.status {
        qb.push(" AND status = ").push_bind(status.clone());
    }
    if let Some(from) = f.from {
        qb.push(" AND created_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        qb.push(" AND created_at < ").push_bind(to);
    }
    if let Some(min) = f.min_fee {
        qb.push(" AND total_fee >= ").push_bind(min);
    }
    if let Some(max) = f.max_fee {
        qb.push(" AND total_fee <= ").push_bind(max);
    }
}

fn get<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(map_err)
}

fn order_row(row: &PgRow) -> Result<OrderRow, StoreError> {
    Ok(OrderRow {
        out_trade_no: get(row, "out_trade_no")?,
        merchant: get(row, "merchant")?,
        status: get(row, "status")?,
        trade_type: get(row, "trade_type")?,
        total_fee: get(row, "total_fee")?,
        refunded_fee: get(row, "refunded_fee")?,
        openid: get(row, "openid")?,
        transaction_id: get(row, "transaction_id")?,
        created_at: get(row, "created_at")?,
        paid_at: get(row, "paid_at")?,
    })
}

fn refund_row(row: &PgRow) -> Result<RefundRow, StoreError> {
    Ok(RefundRow {
        out_refund_no: get(row, "out_refund_no")?,
        out_trade_no: get(row, "out_trade_no")?,
        merchant: get(row, "merchant")?,
        refund_id: get(row, "refund_id")?,
        refund_fee: get(row, "refund_fee")?,
        status: get(row, "status")?,
        reason: get(row, "reason")?,
        failure: get(row, "failure")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        succeeded_at: get(row, "succeeded_at")?,
    })
}

fn resolution(row: &PgRow) -> Result<Option<Resolution>, StoreError> {
    let by: Option<String> = get(row, "resolved_by")?;
    let at: Option<DateTime<Utc>> = get(row, "resolved_at")?;
    let note: Option<String> = get(row, "note")?;
    Ok(match (by, at, note) {
        (Some(resolved_by), Some(resolved_at), Some(note)) => Some(Resolution {
            resolved_by,
            resolved_at,
            note,
        }),
        _ => None,
    })
}

fn anomaly_row(row: &PgRow) -> Result<AnomalyRow, StoreError> {
    Ok(AnomalyRow {
        id: get(row, "id")?,
        kind: get(row, "kind")?,
        out_trade_no: get(row, "out_trade_no")?,
        merchant: get(row, "merchant")?,
        detail: get(row, "detail")?,
        occurred_at: get(row, "occurred_at")?,
        resolution: resolution(row)?,
    })
}

fn audit_entry(row: &PgRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        id: get(row, "id")?,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        role: get(row, "role")?,
        action: get(row, "action")?,
        target: get(row, "target")?,
        fields: get(row, "fields")?,
        result: get(row, "result")?,
        ok: get(row, "ok")?,
        finished_at: get(row, "finished_at")?,
    })
}

/// `limit + 1`: the extra row only says whether a next page exists.
fn one_more(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// The start of a timestamp's hour in UTC, whatever the session's time zone.
fn utc_hour(column: &str) -> String {
    format!("(date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')")
}

#[async_trait]
impl ConsoleStore for PgStore {
    async fn search_orders(
        &self,
        scope: &Scope,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError> {
        let mut qb =
            QueryBuilder::new(format!("SELECT {ORDER_ROW_COLUMNS} FROM orders WHERE TRUE"));
        push_order_filter(&mut qb, scope, filter);
        if let Some(c) = after {
            // A row comparison, which btree reads as one range on the keyset index.
            qb.push(" AND (created_at, out_trade_no) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.out_trade_no.clone())
                .push(")");
        }
        qb.push(" ORDER BY created_at DESC, out_trade_no DESC LIMIT ")
            .push_bind(one_more(limit));
        let rows = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut rows = rows.iter().map(order_row).collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| OrderCursor {
                created_at: r.created_at,
                out_trade_no: r.out_trade_no.clone(),
            })
        } else {
            None
        };
        Ok(OrderPage { rows, next })
    }

    async fn order_totals(
        &self,
        scope: &Scope,
        filter: &OrderFilter,
    ) -> Result<OrderTotals, StoreError> {
        // sum(bigint) is numeric in Postgres; every sum here fits a bigint
        // (each total_fee does, and there are far fewer than 2^31 orders).
        let mut qb = QueryBuilder::new(
            "SELECT count(*) AS orders, \
                COALESCE(sum(total_fee), 0)::bigint AS total_fee, \
                count(*) FILTER (WHERE status IN ('SUCCESS', 'REFUND')) AS paid_orders, \
                COALESCE(sum(total_fee) FILTER (WHERE status IN ('SUCCESS', 'REFUND')), 0)::bigint \
                    AS paid_fee, \
                COALESCE(sum(refunded_fee), 0)::bigint AS refunded_fee \
             FROM orders WHERE TRUE",
        );
        push_order_filter(&mut qb, scope, filter);
        let row = qb
            .build()
            .persistent(false)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;
        Ok(OrderTotals {
            orders: get(&row, "orders")?,
            total_fee: get(&row, "total_fee")?,
            paid_orders: get(&row, "paid_orders")?,
            paid_fee: get(&row, "paid_fee")?,
            refunded_fee: get(&row, "refunded_fee")?,
        })
    }

    async fn order_history(
        &self,
        scope: &Scope,
        out_trade_no: &OutTradeNo,
    ) -> Result<Option<OrderHistory>, StoreError> {
        // One snapshot for every list: the page never shows a status whose
        // event or refund it cannot show.
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let sql = format!("SELECT {ORDER_COLUMNS}, caller FROM orders WHERE out_trade_no = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(out_trade_no.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let order = order_from_row(&row)?;
        if !scope.allows(order.placement.merchant.as_str()) {
            return Ok(None);
        }
        let caller: String = get(&row, "caller")?;

        let events = sqlx::query(
            "SELECT version, status, source, transaction_id, refunded_fee, occurred_at, published_at \
             FROM order_events WHERE out_trade_no = $1 ORDER BY version",
        )
        .bind(out_trade_no.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(|row| {
            Ok(EventRow {
                version: get(row, "version")?,
                status: get(row, "status")?,
                source: get(row, "source")?,
                transaction_id: get(row, "transaction_id")?,
                refunded_fee: get(row, "refunded_fee")?,
                occurred_at: get(row, "occurred_at")?,
                published_at: get(row, "published_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let notifications = sqlx::query(
            "SELECT id, kind, verdict, sign_type, octet_length(raw_body)::bigint AS body_bytes, \
                received_at \
             FROM notifications WHERE out_trade_no = $1 ORDER BY id",
        )
        .bind(out_trade_no.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(|row| {
            Ok(NotificationRow {
                id: get(row, "id")?,
                kind: get(row, "kind")?,
                verdict: get(row, "verdict")?,
                sign_type: get(row, "sign_type")?,
                body_bytes: get(row, "body_bytes")?,
                received_at: get(row, "received_at")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

        let refunds = sqlx::query(&format!(
            "{REFUND_ROWS} AND r.out_trade_no = $1 ORDER BY r.created_at, r.out_refund_no"
        ))
        .bind(out_trade_no.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(refund_row)
        .collect::<Result<Vec<_>, _>>()?;

        let anomalies = sqlx::query(&format!(
            "{ANOMALY_ROWS} AND a.out_trade_no = $1 ORDER BY a.id"
        ))
        .bind(out_trade_no.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?
        .iter()
        .map(anomaly_row)
        .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(map_err)?;

        Ok(Some(OrderHistory {
            order,
            caller,
            events,
            notifications,
            refunds,
            anomalies,
        }))
    }

    async fn anomalies(
        &self,
        scope: &Scope,
        state: AnomalyState,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AnomalyRow>, StoreError> {
        let mut qb = QueryBuilder::new(ANOMALY_ROWS);
        push_scope(&mut qb, scope, "o.merchant");
        match state {
            AnomalyState::Open => {
                qb.push(" AND r.anomaly_id IS NULL");
            }
            AnomalyState::Resolved => {
                qb.push(" AND r.anomaly_id IS NOT NULL");
            }
            AnomalyState::All => {}
        }
        if let Some(before) = before_id {
            qb.push(" AND a.id < ").push_bind(before);
        }
        qb.push(" ORDER BY a.id DESC LIMIT ")
            .push_bind(i64::from(limit));
        qb.build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(anomaly_row)
            .collect()
    }

    async fn anomaly(&self, scope: &Scope, id: i64) -> Result<Option<AnomalyRow>, StoreError> {
        let mut qb = QueryBuilder::new(ANOMALY_ROWS);
        qb.push(" AND a.id = ").push_bind(id);
        push_scope(&mut qb, scope, "o.merchant");
        qb.build()
            .persistent(false)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?
            .as_ref()
            .map(anomaly_row)
            .transpose()
    }

    async fn resolve_anomaly(
        &self,
        scope: &Scope,
        id: i64,
        by: &str,
        note: &str,
    ) -> Result<ResolveOutcome, StoreError> {
        // An anomaly's merchant never changes (orders keep theirs), so the
        // scope check may come before the write without a lock.
        let Some(anomaly) = self.anomaly(scope, id).await? else {
            return Ok(ResolveOutcome::NotFound);
        };
        if let Some(first) = anomaly.resolution {
            return Ok(ResolveOutcome::AlreadyResolved(first));
        }
        // The primary key decides a race: the second INSERT waits for the
        // first to commit, then does nothing and returns no row.
        let inserted = sqlx::query(
            "INSERT INTO anomaly_resolutions (anomaly_id, resolved_by, note) VALUES ($1, $2, $3) \
             ON CONFLICT (anomaly_id) DO NOTHING RETURNING resolved_by, resolved_at, note",
        )
        .bind(id)
        .bind(by)
        .bind(note)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| match e {
            // Deleted by retention between the read and the write.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                StoreError::NotFound
            }
            e => map_err(e),
        });
        let inserted = match inserted {
            Err(StoreError::NotFound) => return Ok(ResolveOutcome::NotFound),
            other => other?,
        };
        if let Some(row) = inserted {
            return Ok(ResolveOutcome::Resolved(Resolution {
                resolved_by: get(&row, "resolved_by")?,
                resolved_at: get(&row, "resolved_at")?,
                note: get(&row, "note")?,
            }));
        }
        let winner = sqlx::query(
            "SELECT resolved_by, resolved_at, note FROM anomaly_resolutions WHERE anomaly_id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(map_err)?;
        match winner {
            Some(row) => Ok(ResolveOutcome::AlreadyResolved(Resolution {
                resolved_by: get(&row, "resolved_by")?,
                resolved_at: get(&row, "resolved_at")?,
                note: get(&row, "note")?,
            })),
            // The winner's anomaly was deleted by retention meanwhile.
            None => Ok(ResolveOutcome::NotFound),
        }
    }

    async fn refunds(
        &self,
        scope: &Scope,
        status: Option<&str>,
        after: Option<&RefundCursor>,
        limit: u32,
    ) -> Result<RefundPage, StoreError> {
        let mut qb = QueryBuilder::new(REFUND_ROWS);
        push_scope(&mut qb, scope, "o.merchant");
        if let Some(status) = status {
            qb.push(" AND r.status = ").push_bind(status.to_owned());
        }
        if let Some(c) = after {
            qb.push(" AND (r.created_at, r.out_refund_no) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.out_refund_no.clone())
                .push(")");
        }
        qb.push(" ORDER BY r.created_at DESC, r.out_refund_no DESC LIMIT ")
            .push_bind(one_more(limit));
        let rows = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut rows = rows.iter().map(refund_row).collect::<Result<Vec<_>, _>>()?;
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| RefundCursor {
                created_at: r.created_at,
                out_refund_no: r.out_refund_no.clone(),
            })
        } else {
            None
        };
        Ok(RefundPage { rows, next })
    }

    async fn bill_days(
        &self,
        before: Option<NaiveDate>,
        limit: u32,
    ) -> Result<Vec<BillSummary>, StoreError> {
        let mut qb =
            QueryBuilder::new("SELECT report::text AS report FROM bill_reports WHERE TRUE");
        if let Some(before) = before {
            qb.push(" AND bill_date < ").push_bind(before);
        }
        qb.push(" ORDER BY bill_date DESC LIMIT ")
            .push_bind(i64::from(limit));
        qb.build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(|row| {
                let report = bill_report_from_json(&get::<String>(row, "report")?)?;
                Ok(bill_summary(&report))
            })
            .collect()
    }

    async fn bill_day(&self, day: NaiveDate) -> Result<Option<BillReport>, StoreError> {
        self.report_of(day).await
    }

    async fn dashboard(
        &self,
        scope: &Scope,
        since: DateTime<Utc>,
    ) -> Result<Dashboard, StoreError> {
        let hour = utc_hour("paid_at");
        let mut qb = QueryBuilder::new(format!(
            "SELECT {hour} AS hour, count(*) AS orders, COALESCE(sum(total_fee), 0)::bigint AS fee \
             FROM orders WHERE paid_at >= "
        ));
        qb.push_bind(since);
        push_scope(&mut qb, scope, "merchant");
        qb.push(" GROUP BY 1 ORDER BY 1");
        let paid_per_hour = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(|row| {
                Ok(HourlyPaid {
                    hour: get(row, "hour")?,
                    orders: get(row, "orders")?,
                    fee: get(row, "fee")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        // Notifications have no merchant: a confined viewer counts only those
        // about an order they may see.
        let mut qb = QueryBuilder::new(
            "SELECT n.kind, n.verdict, count(*) AS total FROM notifications n WHERE n.received_at >= ",
        );
        qb.push_bind(since);
        if let Scope::Merchants(names) = scope {
            qb.push(
                " AND EXISTS (SELECT 1 FROM orders o WHERE o.out_trade_no = n.out_trade_no \
                 AND o.merchant = ANY(",
            )
            .push_bind(names.clone())
            .push("))");
        }
        qb.push(" GROUP BY n.kind, n.verdict ORDER BY n.kind, n.verdict");
        let verdicts = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(|row| {
                Ok(VerdictCount {
                    kind: get(row, "kind")?,
                    verdict: get(row, "verdict")?,
                    count: get(row, "total")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        // Events are about orders, so they are confined like them.
        let hour = utc_hour("e.occurred_at");
        let mut qb = QueryBuilder::new(format!(
            "SELECT {hour} AS hour, count(*) AS events, \
                GREATEST(0, (EXTRACT(EPOCH FROM max(COALESCE(e.published_at, now()) - e.occurred_at)) \
                    * 1000)::bigint) AS max_delay_ms \
             FROM order_events e WHERE e.occurred_at >= "
        ));
        qb.push_bind(since);
        if let Scope::Merchants(names) = scope {
            qb.push(
                " AND EXISTS (SELECT 1 FROM orders o WHERE o.out_trade_no = e.out_trade_no \
                 AND o.merchant = ANY(",
            )
            .push_bind(names.clone())
            .push("))");
        }
        qb.push(" GROUP BY 1 ORDER BY 1");
        let outbox_per_hour = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(|row| {
                Ok(HourlyOutbox {
                    hour: get(row, "hour")?,
                    events: get(row, "events")?,
                    max_delay_ms: get(row, "max_delay_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let mut qb = QueryBuilder::new(
            "SELECT count(*) AS n FROM anomalies a \
             LEFT JOIN orders o ON o.out_trade_no = a.out_trade_no \
             WHERE NOT EXISTS (SELECT 1 FROM anomaly_resolutions r WHERE r.anomaly_id = a.id)",
        );
        push_scope(&mut qb, scope, "o.merchant");
        let open_anomalies: i64 = get(
            &qb.build()
                .persistent(false)
                .fetch_one(self.pool())
                .await
                .map_err(map_err)?,
            "n",
        )?;

        let mut qb = QueryBuilder::new(
            "SELECT count(*) FILTER (WHERE r.status = 'CHANGE') AS change, \
                count(*) FILTER (WHERE r.status = 'PROCESSING') AS processing \
             FROM refunds r JOIN orders o ON o.out_trade_no = r.out_trade_no \
             WHERE r.status IN ('CHANGE', 'PROCESSING')",
        );
        push_scope(&mut qb, scope, "o.merchant");
        let refunds = qb
            .build()
            .persistent(false)
            .fetch_one(self.pool())
            .await
            .map_err(map_err)?;

        Ok(Dashboard {
            paid_per_hour,
            verdicts,
            outbox_per_hour,
            outbox: self.outbox_backlog().await?,
            open_anomalies,
            refunds_change: get(&refunds, "change")?,
            refunds_processing: get(&refunds, "processing")?,
        })
    }

    async fn begin_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO console_audit (actor, role, action, target, fields) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&entry.actor)
        .bind(&entry.role)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(&entry.fields)
        .fetch_one(self.pool())
        .await
        .map_err(map_err)?;
        get(&row, "id")
    }

    async fn finish_audit(&self, id: i64, ok: bool, result: &str) -> Result<(), StoreError> {
        // Written once: a finished entry is history, and a second finish (a
        // bug) must not rewrite what the log says happened.
        let updated = sqlx::query(
            "UPDATE console_audit SET ok = $2, result = $3, finished_at = now() \
             WHERE id = $1 AND finished_at IS NULL",
        )
        .bind(id)
        .bind(ok)
        .bind(result)
        .execute(self.pool())
        .await
        .map_err(map_err)?;
        if updated.rows_affected() == 1 {
            return Ok(());
        }
        let exists = sqlx::query("SELECT 1 FROM console_audit WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(map_err)?;
        match exists {
            Some(_) => Err(StoreError::Conflict(format!(
                "audit entry {id} is already finished"
            ))),
            None => Err(StoreError::NotFound),
        }
    }

    async fn audit(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut qb = QueryBuilder::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM console_audit WHERE TRUE"
        ));
        if let Some(before) = before_id {
            qb.push(" AND id < ").push_bind(before);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        qb.build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(audit_entry)
            .collect()
    }

    async fn audit_of(&self, target: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        // The newest `limit`, shown oldest first.
        let mut qb = QueryBuilder::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM console_audit WHERE target = "
        ));
        qb.push_bind(target.to_owned())
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(limit));
        let mut entries = qb
            .build()
            .persistent(false)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?
            .iter()
            .map(audit_entry)
            .collect::<Result<Vec<_>, _>>()?;
        entries.reverse();
        Ok(entries)
    }
}
