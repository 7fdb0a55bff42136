//! The reconciler's queries on SQLite: claiming due unsettled orders (one
//! UPDATE under the single writer, so two claims never take one order),
//! scheduling the next check, and leases.

use chrono::{DateTime, Utc};
use sqlx::Row;
use wxpay_core::domain::OutTradeNo;

use super::{
    rows::{map_err, now_millis, order_from_row},
    SqliteStore, ORDER_COLUMNS,
};
use crate::{DueOrder, StoreError};

impl SqliteStore {
    pub(super) async fn claim_due_orders(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueOrder>, StoreError> {
        let sql = format!(
            "UPDATE orders SET next_check_at = ?4, check_attempts = check_attempts + 1 \
             WHERE out_trade_no IN ( \
                SELECT out_trade_no FROM orders \
                WHERE status IN ('NOTPAY', 'USERPAYING', 'PAYERROR') \
                  AND created_at <= ?2 AND COALESCE(next_check_at, created_at) <= ?1 \
                ORDER BY COALESCE(next_check_at, created_at) LIMIT ?3) \
             RETURNING {ORDER_COLUMNS}, check_attempts"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(now.timestamp_millis())
            .bind(created_before.timestamp_millis())
            .bind(limit)
            .bind(claim_until.timestamp_millis())
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get("check_attempts").map_err(map_err)?;
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
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE orders SET next_check_at = ?2 WHERE out_trade_no = ?1")
            .bind(out_trade_no.as_str())
            .bind(at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    pub(super) async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let now = now_millis();
        let mut tx = self.begin_write().await?;
        // Insert, or take over a lease that ran out or is already ours.
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE leases.until < ?4 OR leases.holder = excluded.holder \
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl.num_milliseconds()))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(taken.is_some())
    }

    pub(super) async fn purge(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        // One short write transaction per table: the single writer is never
        // held for long.
        for sql in [
            "DELETE FROM order_events WHERE id IN (SELECT id FROM order_events \
             WHERE published_at < ?1 ORDER BY id LIMIT ?2)",
            "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
             WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
            "DELETE FROM anomalies WHERE id IN (SELECT id FROM anomalies \
             WHERE occurred_at < ?1 ORDER BY id LIMIT ?2)",
        ] {
            let mut tx = self.begin_write().await?;
            total += sqlx::query(sql)
                .bind(before.timestamp_millis())
                .bind(limit)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
            tx.commit().await.map_err(map_err)?;
        }
        Ok(total)
    }
}
