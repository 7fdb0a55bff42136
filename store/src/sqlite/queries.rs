//! Every query of the SQLite [`Store`](crate::Store): orders, transitions with
//! their outbox row (under the one writer connection), the outbox, audit rows.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use crate::{
    columns::applied_event, Anomaly, DueOrder, DueRefund, InsertOutcome, NotificationRecord,
    OutboxBacklog, PlatformCertificate, RefundOutcome, RefundPlacement, RefundUpdate, Store,
    StoreError, Transition, TransitionOutcome,
};
use wxpay_core::domain::{
    BillReport, Caller, IdempotencyKey, NewOrder, NewRefund, Order, OrderEvent, OutRefundNo,
    OutTradeNo, Refund,
};

use super::{rows::*, *};

#[async_trait]
impl Store for SqliteStore {
    async fn insert_order(&self, o: &NewOrder) -> Result<InsertOutcome, StoreError> {
        let now = now_millis();
        let sql = format!(
            "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
             attach, client_ip, sign_type, expires_at, created_at, updated_at, caller, merchant, \
             trade_type, sub_openid, product_id, scene_info) \
             VALUES (?1, ?2, 'NOTPAY', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, ?15, ?16) \
             ON CONFLICT (caller, idempotency_key) DO NOTHING RETURNING {ORDER_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(&sql)
            .bind(o.out_trade_no.as_str())
            .bind(o.idempotency_key.as_str())
            .bind(o.openid.as_str())
            .bind(o.description.as_str())
            .bind(o.total_fee.fen())
            .bind(o.attach.as_str())
            .bind(o.client_ip.as_str())
            .bind(o.sign_type.as_str())
            .bind(o.expires_at.map(|t| t.timestamp_millis()))
            .bind(now)
            .bind(o.caller.as_str())
            .bind(o.placement.merchant.as_str())
            .bind(o.placement.trade_type.as_str())
            .bind(o.placement.sub_openid.as_str())
            .bind(o.placement.product_id.as_ref().map(|p| p.as_str()))
            .bind(o.placement.scene_info.as_ref().map(|s| s.as_str()))
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let outcome = match inserted {
            Some(row) => InsertOutcome::Inserted(order_from_row(&row)?),
            // Read inside the same transaction: the row that holds the key is
            // certainly there (and orders are never deleted anyway).
            None => match fetch_by_key(&mut *tx, &o.caller, &o.idempotency_key).await? {
                Some(existing) => InsertOutcome::KeyTaken(existing),
                None => {
                    return Err(StoreError::Unavailable(
                        "idempotency conflict without a row".into(),
                    ))
                }
            },
        };
        tx.commit().await.map_err(map_err)?;
        Ok(outcome)
    }

    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        fetch_order(&self.reader, "out_trade_no", out_trade_no.as_str()).await
    }

    async fn order_by_idempotency_key(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError> {
        fetch_by_key(&self.reader, caller, key).await
    }

    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        pay_url: Option<&str>,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        let sql = format!(
            "UPDATE orders SET prepay_id = ?2, prepay_expires_at = ?3, updated_at = ?4, pay_url = ?5 \
             WHERE out_trade_no = ?1 AND status = 'NOTPAY' RETURNING {ORDER_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(&sql)
            .bind(out_trade_no.as_str())
            .bind(prepay_id)
            .bind(prepay_expires_at.timestamp_millis())
            .bind(now_millis())
            .bind(pay_url)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_err)?;
        let order = match row {
            Some(row) => order_from_row(&row)?,
            // Paid, closed or failed meanwhile: the prepay_id is not kept.
            None => fetch_order(&mut *tx, "out_trade_no", out_trade_no.as_str())
                .await?
                .ok_or(StoreError::NotFound)?,
        };
        tx.commit().await.map_err(map_err)?;
        Ok(order)
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let allowed = json_array(t.to.allowed_from().iter().map(|s| s.as_str()).collect());
        let now = now_millis();
        let update = format!(
            "UPDATE orders SET status = ?2, version = version + 1, \
                 transaction_id = COALESCE(?3, transaction_id), \
                 cash_fee = COALESCE(?4, cash_fee), \
                 paid_at = CASE WHEN ?2 = 'SUCCESS' THEN COALESCE(?5, ?7) ELSE paid_at END, \
                 updated_at = ?7 \
             WHERE out_trade_no = ?1 AND status IN (SELECT value FROM json_each(?6)) \
                 AND (?8 IS NULL OR merchant = ?8) \
                 AND (?9 IS NULL OR total_fee = ?9) \
             RETURNING {ORDER_COLUMNS}"
        );
        // The status check and the change are one statement inside a transaction
        // that holds the write lock, so no other change can slip between them; the
        // event is written in the same transaction, so both commit or neither does.
        let mut tx = self.begin_write().await?;
        // Read under the write lock: nothing changes it before the UPDATE below.
        let previous = fetch_order(&mut *tx, "out_trade_no", t.out_trade_no.as_str())
            .await?
            .map(|o| o.status);
        let updated = sqlx::query(&update)
            .bind(t.out_trade_no.as_str())
            .bind(t.to.as_str())
            .bind(t.transaction_id.as_deref())
            .bind(t.cash_fee)
            .bind(t.paid_at.map(|p| p.timestamp_millis()))
            .bind(allowed)
            .bind(now)
            .bind(t.guard.as_ref().map(|g| g.merchant.as_str()))
            .bind(t.guard.as_ref().map(|g| g.total_fee.fen()))
            .fetch_optional(&mut *tx)
            .await
            // A transaction_id already used by another order is a unique violation
            // here: Conflict, and the dropped transaction rolls back.
            .map_err(map_err)?;
        let outcome = match updated {
            Some(row) => {
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
                .bind(t.source.as_str())
                .bind(now)
                .bind(order.refunded_fee)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                let id: i64 = row.try_get("id").map_err(map_err)?;
                let occurred_at: i64 = row.try_get("occurred_at").map_err(map_err)?;
                let event = applied_event(&order, id, from_millis(occurred_at)?, t.source);
                TransitionOutcome::Applied {
                    order,
                    event,
                    previous: previous.ok_or(StoreError::NotFound)?,
                }
            }
            // Not allowed from the current status (or no such order): report the
            // state that made the UPDATE match nothing, read under the same lock.
            None => {
                let order = fetch_order(&mut *tx, "out_trade_no", t.out_trade_no.as_str())
                    .await?
                    .ok_or(StoreError::NotFound)?;
                TransitionOutcome::Unchanged { order }
            }
        };
        tx.commit().await.map_err(map_err)?;
        Ok(outcome)
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueOrder>, StoreError> {
        self.claim_due_orders(now, created_before, limit, claim_until)
            .await
    }

    async fn schedule_check(
        &self,
        out_trade_no: &OutTradeNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.set_next_check(out_trade_no, at).await
    }

    async fn purge_before(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        self.purge(before, limit).await
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError> {
        self.take_lease(name, holder, ttl).await
    }

    async fn unpublished_events(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        // SQLite reads a negative LIMIT as "no limit"; Postgres refuses it. Refuse it too.
        if limit < 0 {
            return Err(StoreError::Unavailable(format!(
                "LIMIT must not be negative: {limit}"
            )));
        }
        let older_than_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM order_events \
             WHERE published_at IS NULL AND occurred_at <= ?1 ORDER BY id LIMIT ?2"
        );
        let rows = sqlx::query(&sql)
            .bind(now_millis().saturating_sub(older_than_ms))
            .bind(limit)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE order_events SET published_at = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) AND published_at IS NULL",
        )
        .bind(now_millis())
        .bind(json_array(ids.to_vec()))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, min(occurred_at) AS oldest \
             FROM order_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(map_err)?;
        let now = now_millis();
        Ok(OutboxBacklog {
            count: row.try_get("n").map_err(map_err)?,
            // Clamped like the Postgres query: a clock step back is not a negative age.
            oldest_age: oldest.map(|ms| {
                Duration::from_millis(u64::try_from(now.saturating_sub(ms)).unwrap_or(0))
            }),
        })
    }

    async fn insert_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError> {
        self.place_refund(r).await
    }

    async fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
        self.refund_by_no(out_refund_no).await
    }

    async fn refunds_of(&self, out_trade_no: &OutTradeNo) -> Result<Vec<Refund>, StoreError> {
        self.refunds_of_order(out_trade_no).await
    }

    async fn update_refund(&self, u: &RefundUpdate) -> Result<RefundOutcome, StoreError> {
        self.change_refund(u).await
    }

    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueRefund>, StoreError> {
        self.claim_refunds(now, created_before, limit, claim_until)
            .await
    }

    async fn schedule_refund_check(
        &self,
        out_refund_no: &OutRefundNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.set_refund_check(out_refund_no, at).await
    }

    async fn orders_paid_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Order>, StoreError> {
        self.paid_between(from, to).await
    }

    async fn refunds_succeeded_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Refund>, StoreError> {
        self.refunded_between(from, to).await
    }

    async fn bill_report(&self, day: NaiveDate) -> Result<Option<BillReport>, StoreError> {
        self.report_of(day).await
    }

    async fn save_bill_report(&self, report: &BillReport) -> Result<(), StoreError> {
        self.keep_report(report).await
    }

    async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO notifications (kind, out_trade_no, verdict, raw_body, received_at, sign_type) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&n.kind)
        .bind(n.out_trade_no.as_deref())
        .bind(&n.verdict)
        .bind(&n.raw_body)
        .bind(now_millis())
        .bind(n.sign_type.map(|t| t.as_str()))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO anomalies (kind, out_trade_no, detail, occurred_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(a.kind.as_str())
        .bind(a.out_trade_no.as_deref())
        .bind(&a.detail)
        .bind(now_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(())
    }

    async fn platform_certificates(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlatformCertificate>, StoreError> {
        self.certificates_of(mch_id, now).await
    }

    async fn save_platform_certificates(
        &self,
        mch_id: &str,
        certs: &[PlatformCertificate],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.keep_certificates(mch_id, certs, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
