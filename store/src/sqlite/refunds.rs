//! Refunds on SQLite: the [`RefundTx`] the shared rules in [`crate::refunds`]
//! run in (a `BEGIN IMMEDIATE` transaction: it holds the database's only write
//! lock, which is the order's lock here), the refund reads, and the
//! reconciler's claim (one UPDATE under that lock, as for orders).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteRow, Row, Sqlite, Transaction};

use super::{
    rows::{fetch_order, from_millis, map_err, now_millis, order_from_row},
    SqliteStore, ORDER_COLUMNS,
};
use crate::{
    columns::{applied_event, RefundColumns},
    refunds::{self, LockedOrder, RefundTx},
    DueRefund, RefundOutcome, RefundPlacement, RefundUpdate, StoreError,
};
use wxpay_core::domain::{
    Fee, NewRefund, Order, OrderEvent, OutRefundNo, OutTradeNo, Refund, RefundStatus,
};

pub(super) const REFUND_COLUMNS: &str = "out_refund_no, out_trade_no, refund_id, refund_fee, \
     status, reason, failure, created_at, updated_at, succeeded_at";

pub(super) fn refund_from_row(row: &SqliteRow) -> Result<Refund, StoreError> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_err);
    let time = |name: &str| from_millis(row.try_get(name).map_err(map_err)?);
    let succeeded_at: Option<i64> = row.try_get("succeeded_at").map_err(map_err)?;
    RefundColumns {
        out_refund_no: get("out_refund_no")?,
        out_trade_no: get("out_trade_no")?,
        refund_id: row.try_get("refund_id").map_err(map_err)?,
        refund_fee: row.try_get("refund_fee").map_err(map_err)?,
        status: get("status")?,
        reason: get("reason")?,
        failure: row.try_get("failure").map_err(map_err)?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        succeeded_at: succeeded_at.map(from_millis).transpose()?,
    }
    .into_refund()
}

/// The write transaction and its one clock reading (Postgres's `now()`).
struct SqliteRefundTx {
    tx: Transaction<'static, Sqlite>,
    now: i64,
}

#[async_trait]
impl RefundTx for SqliteRefundTx {
    async fn lock_order(&mut self, no: &OutTradeNo) -> Result<Option<LockedOrder>, StoreError> {
        // The transaction already holds the write lock: reading is locking.
        let Some(order) = fetch_order(&mut *self.tx, "out_trade_no", no.as_str()).await? else {
            return Ok(None);
        };
        let sums = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN status <> 'CLOSED' THEN refund_fee ELSE 0 END), 0) AS held, \
                    count(*) AS n \
             FROM refunds WHERE out_trade_no = ?1",
        )
        .bind(no.as_str())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(Some(LockedOrder {
            order,
            held: sums.try_get("held").map_err(map_err)?,
            count: sums.try_get("n").map_err(map_err)?,
        }))
    }

    async fn refund(&mut self, no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1");
        sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_optional(&mut *self.tx)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(refund_from_row)
            .transpose()
    }

    async fn insert(&mut self, r: &NewRefund) -> Result<Refund, StoreError> {
        let sql = format!(
            "INSERT INTO refunds (out_refund_no, out_trade_no, refund_fee, status, reason, created_at, updated_at) \
             VALUES (?1, ?2, ?3, 'PROCESSING', ?4, ?5, ?5) RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(r.out_refund_no.as_str())
            .bind(r.out_trade_no.as_str())
            .bind(r.refund_fee.fen())
            .bind(r.reason.as_str())
            .bind(self.now)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(map_err)?;
        refund_from_row(&row)
    }

    async fn set_refund_id(&mut self, no: &OutRefundNo, id: &str) -> Result<Refund, StoreError> {
        let sql = format!(
            "UPDATE refunds SET refund_id = ?2, updated_at = ?3 \
             WHERE out_refund_no = ?1 RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(no.as_str())
            .bind(id)
            .bind(self.now)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(map_err)?;
        refund_from_row(&row)
    }

    async fn change(
        &mut self,
        u: &RefundUpdate,
        fee: Fee,
    ) -> Result<(Refund, Order, OrderEvent), StoreError> {
        let success = u.status == RefundStatus::Success;
        let sql = format!(
            "UPDATE refunds SET status = ?2, refund_id = COALESCE(refund_id, ?3), \
                 succeeded_at = CASE WHEN ?2 = 'SUCCESS' THEN COALESCE(?4, ?6) ELSE succeeded_at END, \
                 failure = COALESCE(?5, failure), updated_at = ?6, next_check_at = NULL \
             WHERE out_refund_no = ?1 RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.out_refund_no.as_str())
            .bind(u.status.as_str())
            .bind(u.refund_id.as_deref())
            .bind(u.succeeded_at.map(|t| t.timestamp_millis()))
            .bind(u.failure.as_deref())
            .bind(self.now)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let refund = refund_from_row(&row)?;
        // The CHECK on refunded_fee refuses (and rolls back) anything past the total.
        let sql = format!(
            "UPDATE orders SET version = version + 1, updated_at = ?4, \
                 status = CASE WHEN ?2 THEN 'REFUND' ELSE status END, \
                 refunded_fee = refunded_fee + CASE WHEN ?2 THEN ?3 ELSE 0 END \
             WHERE out_trade_no = ?1 RETURNING {ORDER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.out_trade_no.as_str())
            .bind(success)
            .bind(fee.fen())
            .bind(self.now)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(map_err)?;
        let order = order_from_row(&row)?;
        let row = sqlx::query(
            "INSERT INTO order_events \
                 (out_trade_no, status, version, transaction_id, total_fee, source, occurred_at, refunded_fee) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id, occurred_at",
        )
        .bind(order.out_trade_no.as_str())
        .bind(order.status.as_str())
        .bind(order.version)
        .bind(order.transaction_id.as_deref())
        .bind(order.total_fee.fen())
        .bind(u.source().as_str())
        .bind(self.now)
        .bind(order.refunded_fee)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(map_err)?;
        let id: i64 = row.try_get("id").map_err(map_err)?;
        let occurred_at: i64 = row.try_get("occurred_at").map_err(map_err)?;
        let event = applied_event(&order, id, from_millis(occurred_at)?, u.source());
        Ok((refund, order, event))
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(map_err)
    }
}

impl SqliteStore {
    async fn refund_tx(&self) -> Result<SqliteRefundTx, StoreError> {
        Ok(SqliteRefundTx {
            tx: self.begin_write().await?,
            now: now_millis(),
        })
    }

    pub(super) async fn place_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError> {
        // One writer: no other transaction can take the number between the
        // lookup and the insert, so a Conflict cannot happen here.
        refunds::place(self.refund_tx().await?, r).await
    }

    pub(super) async fn change_refund(
        &self,
        u: &RefundUpdate,
    ) -> Result<RefundOutcome, StoreError> {
        refunds::update(self.refund_tx().await?, u).await
    }

    pub(super) async fn refund_by_no(
        &self,
        no: &OutRefundNo,
    ) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = ?1");
        sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(refund_from_row)
            .transpose()
    }

    pub(super) async fn refunds_of_order(
        &self,
        no: &OutTradeNo,
    ) -> Result<Vec<Refund>, StoreError> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE out_trade_no = ?1 \
             ORDER BY created_at, out_refund_no"
        );
        let rows = sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(refund_from_row).collect()
    }

    pub(super) async fn claim_refunds(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueRefund>, StoreError> {
        let sql = format!(
            "UPDATE refunds SET next_check_at = ?4, check_attempts = check_attempts + 1 \
             WHERE out_refund_no IN ( \
                SELECT out_refund_no FROM refunds \
                WHERE status = 'PROCESSING' \
                  AND created_at <= ?2 AND COALESCE(next_check_at, created_at) <= ?1 \
                ORDER BY COALESCE(next_check_at, created_at) LIMIT ?3) \
             RETURNING {REFUND_COLUMNS}, check_attempts"
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
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts: i64 = row.try_get("check_attempts").map_err(map_err)?;
            let refund = refund_from_row(row)?;
            let order = fetch_order(&mut *tx, "out_trade_no", refund.out_trade_no.as_str())
                .await?
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("refund {} has no order", refund.out_refund_no))
                })?;
            due.push(DueRefund {
                refund,
                order,
                attempts: u32::try_from(attempts).unwrap_or(0),
            });
        }
        tx.commit().await.map_err(map_err)?;
        Ok(due)
    }

    pub(super) async fn set_refund_check(
        &self,
        no: &OutRefundNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE refunds SET next_check_at = ?2 WHERE out_refund_no = ?1")
            .bind(no.as_str())
            .bind(at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}
