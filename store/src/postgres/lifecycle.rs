//! The reconciler's queries on Postgres: claiming due unsettled orders
//! (`FOR UPDATE SKIP LOCKED`, so replicas never claim one order twice),
//! scheduling the next check, and leases.

use chrono::{DateTime, Utc};
use wxpay_core::domain::OutTradeNo;

use super::{
    rows::{map_err, order_from_row},
    PgStore, ORDER_COLUMNS,
};
use crate::{DueOrder, StoreError};

impl PgStore {
    pub(super) async fn claim_due_orders(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueOrder>, StoreError> {
        let sql = format!(
            "WITH due AS ( \
                SELECT out_trade_no AS due_no FROM orders \
                WHERE status IN ('NOTPAY', 'USERPAYING', 'PAYERROR') \
                  AND created_at <= $2 AND COALESCE(next_check_at, created_at) <= $1 \
                ORDER BY COALESCE(next_check_at, created_at) LIMIT $3 \
                FOR UPDATE SKIP LOCKED \
             ) \
             UPDATE orders SET next_check_at = $4, check_attempts = check_attempts + 1 \
             FROM due WHERE orders.out_trade_no = due.due_no \
             RETURNING {ORDER_COLUMNS}, check_attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(created_before)
            .bind(limit)
            .bind(claim_until)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = sqlx::Row::try_get(row, "check_attempts").map_err(map_err)?;
                Ok(DueOrder {
                    order: order_from_row(row)?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                })
            })
            .collect()
    }

    pub(super) async fn set_next_check(
        &self,
        out_trade_no: &OutTradeNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE orders SET next_check_at = $2 WHERE out_trade_no = $1")
            .bind(out_trade_no.as_str())
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError> {
        // Insert, or take over a lease that ran out or is already ours; a lease
        // another holder still runs matches neither, and nothing is returned.
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, now() + make_interval(secs => $3)) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until \
             WHERE leases.until < now() OR leases.holder = EXCLUDED.holder \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(ttl.num_milliseconds() as f64 / 1000.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(taken.is_some())
    }

    pub(super) async fn purge(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        // Each a bounded batch; SKIP LOCKED leaves rows another replica's
        // relay is marking to that transaction.
        for sql in [
            "DELETE FROM order_events WHERE id IN (SELECT id FROM order_events \
             WHERE published_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
             WHERE received_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
            "DELETE FROM anomalies WHERE id IN (SELECT id FROM anomalies \
             WHERE occurred_at < $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        ] {
            total += sqlx::query(sql)
                .bind(before)
                .bind(limit)
                .execute(&self.pool)
                .await
                .map_err(map_err)?
                .rows_affected();
        }
        Ok(total)
    }
}
