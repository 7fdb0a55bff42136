//! Refunds on Postgres: the [`RefundTx`] the shared rules in
//! [`crate::refunds`] run in (a transaction that locks the order row with
//! `SELECT … FOR UPDATE` before anything else), and the refund reads and the
//! reconciler's claim (`FOR UPDATE SKIP LOCKED`, as for orders).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Postgres, Row, Transaction};

use super::{
    rows::{map_err, order_from_row},
    PgStore, ORDER_COLUMNS,
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

pub(super) fn refund_from_row(row: &PgRow) -> Result<Refund, StoreError> {
    let get = |name: &str| row.try_get::<String, _>(name).map_err(map_err);
    RefundColumns {
        out_refund_no: get("out_refund_no")?,
        out_trade_no: get("out_trade_no")?,
        refund_id: row.try_get("refund_id").map_err(map_err)?,
        refund_fee: row.try_get("refund_fee").map_err(map_err)?,
        status: get("status")?,
        reason: get("reason")?,
        failure: row.try_get("failure").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        succeeded_at: row.try_get("succeeded_at").map_err(map_err)?,
    }
    .into_refund()
}

struct PgRefundTx(Transaction<'static, Postgres>);

#[async_trait]
impl RefundTx for PgRefundTx {
    async fn lock_order(&mut self, no: &OutTradeNo) -> Result<Option<LockedOrder>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = $1 FOR UPDATE");
        let Some(row) = sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_optional(&mut *self.0)
            .await
            .map_err(map_err)?
        else {
            return Ok(None);
        };
        let order = order_from_row(&row)?;
        let sums = sqlx::query(
            "SELECT COALESCE(SUM(refund_fee) FILTER (WHERE status <> 'CLOSED'), 0)::BIGINT AS held, \
                    count(*) AS n \
             FROM refunds WHERE out_trade_no = $1",
        )
        .bind(no.as_str())
        .fetch_one(&mut *self.0)
        .await
        .map_err(map_err)?;
        Ok(Some(LockedOrder {
            order,
            held: sums.try_get("held").map_err(map_err)?,
            count: sums.try_get("n").map_err(map_err)?,
        }))
    }

    async fn refund(&mut self, no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1");
        sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_optional(&mut *self.0)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(refund_from_row)
            .transpose()
    }

    async fn insert(&mut self, r: &NewRefund) -> Result<Refund, StoreError> {
        let sql = format!(
            "INSERT INTO refunds (out_refund_no, out_trade_no, refund_fee, status, reason) \
             VALUES ($1, $2, $3, 'PROCESSING', $4) RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(r.out_refund_no.as_str())
            .bind(r.out_trade_no.as_str())
            .bind(r.refund_fee.fen())
            .bind(r.reason.as_str())
            .fetch_one(&mut *self.0)
            .await
            .map_err(map_err)?;
        refund_from_row(&row)
    }

    async fn set_refund_id(&mut self, no: &OutRefundNo, id: &str) -> Result<Refund, StoreError> {
        let sql = format!(
            "UPDATE refunds SET refund_id = $2, updated_at = now() \
             WHERE out_refund_no = $1 RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(no.as_str())
            .bind(id)
            .fetch_one(&mut *self.0)
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
            "UPDATE refunds SET status = $2, refund_id = COALESCE(refund_id, $3), \
                 succeeded_at = CASE WHEN $2 = 'SUCCESS' THEN COALESCE($4, now()) ELSE succeeded_at END, \
                 failure = COALESCE($5, failure), updated_at = now(), next_check_at = NULL \
             WHERE out_refund_no = $1 RETURNING {REFUND_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.out_refund_no.as_str())
            .bind(u.status.as_str())
            .bind(u.refund_id.as_deref())
            .bind(u.succeeded_at)
            .bind(u.failure.as_deref())
            .fetch_one(&mut *self.0)
            .await
            .map_err(map_err)?;
        let refund = refund_from_row(&row)?;
        // The order is locked by this transaction; the CHECK on refunded_fee
        // refuses (and rolls back) anything past its total.
        let sql = format!(
            "UPDATE orders SET version = version + 1, updated_at = now(), \
                 status = CASE WHEN $2 THEN 'REFUND' ELSE status END, \
                 refunded_fee = refunded_fee + CASE WHEN $2 THEN $3 ELSE 0 END \
             WHERE out_trade_no = $1 RETURNING {ORDER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.out_trade_no.as_str())
            .bind(success)
            .bind(fee.fen())
            .fetch_one(&mut *self.0)
            .await
            .map_err(map_err)?;
        let order = order_from_row(&row)?;
        let row = sqlx::query(
            "INSERT INTO order_events \
                 (out_trade_no, status, version, transaction_id, total_fee, source, refunded_fee) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, occurred_at",
        )
        .bind(order.out_trade_no.as_str())
        .bind(order.status.as_str())
        .bind(order.version)
        .bind(order.transaction_id.as_deref())
        .bind(order.total_fee.fen())
        .bind(u.source().as_str())
        .bind(order.refunded_fee)
        .fetch_one(&mut *self.0)
        .await
        .map_err(map_err)?;
        let id: i64 = row.try_get("id").map_err(map_err)?;
        let occurred_at: DateTime<Utc> = row.try_get("occurred_at").map_err(map_err)?;
        let event = applied_event(&order, id, occurred_at, u.source());
        Ok((refund, order, event))
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.0.commit().await.map_err(map_err)
    }
}

impl PgStore {
    async fn refund_tx(&self) -> Result<PgRefundTx, StoreError> {
        Ok(PgRefundTx(self.pool().begin().await.map_err(map_err)?))
    }

    pub(super) async fn place_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError> {
        match refunds::place(self.refund_tx().await?, r).await {
            // The number was taken concurrently for another order: that refund is the answer.
            Err(StoreError::Conflict(_)) => match self.refund_by_no(&r.out_refund_no).await? {
                Some(existing) => Ok(RefundPlacement::Existing(existing)),
                None => Err(StoreError::Unavailable(
                    "refund number conflict without a row".into(),
                )),
            },
            other => other,
        }
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
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1");
        sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_optional(self.pool())
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
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE out_trade_no = $1 \
             ORDER BY created_at, out_refund_no"
        );
        let rows = sqlx::query(&sql)
            .bind(no.as_str())
            .fetch_all(self.pool())
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
            "WITH due AS ( \
                SELECT out_refund_no AS due_no FROM refunds \
                WHERE status = 'PROCESSING' \
                  AND created_at <= $2 AND COALESCE(next_check_at, created_at) <= $1 \
                ORDER BY COALESCE(next_check_at, created_at) LIMIT $3 \
                FOR UPDATE SKIP LOCKED \
             ) \
             UPDATE refunds SET next_check_at = $4, check_attempts = check_attempts + 1 \
             FROM due WHERE refunds.out_refund_no = due.due_no \
             RETURNING {REFUND_COLUMNS}, check_attempts"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(created_before)
            .bind(limit)
            .bind(claim_until)
            .fetch_all(self.pool())
            .await
            .map_err(map_err)?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts: i32 = row.try_get("check_attempts").map_err(map_err)?;
            let refund = refund_from_row(row)?;
            // A refund's order always exists (foreign key); one read per claimed
            // refund is cheap beside the WeChat call the reconciler makes for it.
            let order = crate::Store::order(self, &refund.out_trade_no)
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
        Ok(due)
    }

    pub(super) async fn set_refund_check(
        &self,
        no: &OutRefundNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE refunds SET next_check_at = $2 WHERE out_refund_no = $1")
            .bind(no.as_str())
            .bind(at)
            .execute(self.pool())
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
