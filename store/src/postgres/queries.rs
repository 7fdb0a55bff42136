//! Every query of the Postgres [`Store`](crate::Store): orders, the transition
//! with its outbox row in one statement, the outbox, audit rows.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use crate::{
    columns::{applied_event, corrupt},
    Anomaly, DueOrder, DueRefund, InsertOutcome, NotificationRecord, OutboxBacklog,
    PlatformCertificate, RefundOutcome, RefundPlacement, RefundUpdate, Store, StoreError,
    Transition, TransitionOutcome,
};
use wxpay_core::domain::{
    BillReport, Caller, IdempotencyKey, NewOrder, NewRefund, Order, OrderEvent, OutRefundNo,
    OutTradeNo, Refund,
};

use super::{rows::*, *};

#[async_trait]
impl Store for PgStore {
    async fn insert_order(&self, o: &NewOrder) -> Result<InsertOutcome, StoreError> {
        let sql = format!(
            "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, total_fee, \
             attach, client_ip, sign_type, expires_at, caller, merchant, trade_type, sub_openid, \
             product_id, scene_info) \
             VALUES ($1, $2, 'NOTPAY', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (caller, idempotency_key) DO NOTHING RETURNING {ORDER_COLUMNS}"
        );
        let inserted = sqlx::query(&sql)
            .bind(o.out_trade_no.as_str())
            .bind(o.idempotency_key.as_str())
            .bind(o.openid.as_str())
            .bind(o.description.as_str())
            .bind(o.total_fee.fen())
            .bind(o.attach.as_str())
            .bind(o.client_ip.as_str())
            .bind(o.sign_type.as_str())
            .bind(o.expires_at)
            .bind(o.caller.as_str())
            .bind(o.placement.merchant.as_str())
            .bind(o.placement.trade_type.as_str())
            .bind(o.placement.sub_openid.as_str())
            .bind(o.placement.product_id.as_ref().map(|p| p.as_str()))
            .bind(o.placement.scene_info.as_ref().map(|s| s.as_str()))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match inserted {
            Some(row) => Ok(InsertOutcome::Inserted(order_from_row(&row)?)),
            None => match self
                .order_by_idempotency_key(&o.caller, &o.idempotency_key)
                .await?
            {
                Some(existing) => Ok(InsertOutcome::KeyTaken(existing)),
                // The conflicting row cannot vanish (orders are never deleted).
                None => Err(StoreError::Unavailable(
                    "idempotency conflict without a row".into(),
                )),
            },
        }
    }

    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = $1");
        sqlx::query(&sql)
            .bind(out_trade_no.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(order_from_row)
            .transpose()
    }

    async fn orders(&self, out_trade_nos: &[OutTradeNo]) -> Result<Vec<Order>, StoreError> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = ANY($1)");
        let nos: Vec<&str> = out_trade_nos.iter().map(OutTradeNo::as_str).collect();
        sqlx::query(&sql)
            .bind(nos)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(order_from_row)
            .collect()
    }

    async fn order_by_idempotency_key(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE caller = $1 AND idempotency_key = $2"
        );
        sqlx::query(&sql)
            .bind(caller.as_str())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(order_from_row)
            .transpose()
    }

    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        pay_url: Option<&str>,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        let sql = format!(
            "UPDATE orders SET prepay_id = $2, prepay_expires_at = $3, pay_url = $4, updated_at = now() \
             FROM {ASYNC_COMMIT} \
             WHERE out_trade_no = $1 AND status = 'NOTPAY' RETURNING {ORDER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(out_trade_no.as_str())
            .bind(prepay_id)
            .bind(prepay_expires_at)
            .bind(pay_url)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            Some(row) => order_from_row(&row),
            // Paid, closed or failed meanwhile: the prepay_id is not kept.
            None => self.order(out_trade_no).await?.ok_or(StoreError::NotFound),
        }
    }

    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let allowed: Vec<&str> = t.to.allowed_from().iter().map(|s| s.as_str()).collect();
        let sql = format!(
            // `prev` locks the row and reads the status it moves from; FOR UPDATE
            // re-reads a row changed concurrently, so `previous` is the status
            // the UPDATE really replaced. The guard's columns never change
            // after the INSERT, so checking them here is as good as a read
            // before the statement, without the round trip.
            "WITH prev AS ( \
                SELECT out_trade_no AS prev_no, status AS previous FROM orders \
                WHERE out_trade_no = $1 AND status = ANY($6) \
                    AND ($8::text IS NULL OR merchant = $8) \
                    AND ($9::bigint IS NULL OR total_fee = $9) FOR UPDATE \
             ), updated AS ( \
                UPDATE orders SET status = $2, version = version + 1, \
                    transaction_id = COALESCE($3, transaction_id), \
                    cash_fee = COALESCE($4, cash_fee), \
                    paid_at = CASE WHEN $2 = 'SUCCESS' THEN COALESCE($5, now()) ELSE paid_at END, \
                    updated_at = now() \
                FROM prev WHERE orders.out_trade_no = prev.prev_no \
                RETURNING {ORDER_COLUMNS}, prev.previous \
             ), ev AS ( \
                INSERT INTO order_events (out_trade_no, status, version, transaction_id, total_fee, source, refunded_fee) \
                SELECT out_trade_no, status, version, transaction_id, total_fee, $7, refunded_fee FROM updated \
                RETURNING id, occurred_at \
             ) \
             SELECT updated.*, ev.id AS event_id, ev.occurred_at AS event_occurred_at FROM updated, ev"
        );
        let row = sqlx::query(&sql)
            .bind(t.out_trade_no.as_str())
            .bind(t.to.as_str())
            .bind(t.transaction_id.as_deref())
            .bind(t.cash_fee)
            .bind(t.paid_at)
            .bind(&allowed)
            .bind(t.source.as_str())
            .bind(t.guard.as_ref().map(|g| g.merchant.as_str()))
            .bind(t.guard.as_ref().map(|g| g.total_fee.fen()))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        match row {
            Some(row) => {
                let order = order_from_row(&row)?;
                let occurred_at: DateTime<Utc> =
                    row.try_get("event_occurred_at").map_err(map_err)?;
                let id: i64 = row.try_get("event_id").map_err(map_err)?;
                let previous: String = row.try_get("previous").map_err(map_err)?;
                let event = applied_event(&order, id, occurred_at, t.source);
                Ok(TransitionOutcome::Applied {
                    order,
                    event,
                    previous: previous.parse().map_err(corrupt)?,
                })
            }
            None => {
                let order = self
                    .order(&t.out_trade_no)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                Ok(TransitionOutcome::Unchanged { order })
            }
        }
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
        let rows = sqlx::query(
            "SELECT id, out_trade_no, status, version, transaction_id, total_fee, source, occurred_at, refunded_fee \
             FROM order_events WHERE published_at IS NULL \
               AND occurred_at <= now() - make_interval(secs => $1) \
             ORDER BY id LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE order_events SET published_at = now() FROM {ASYNC_COMMIT} \
             WHERE id = ANY($1) AND published_at IS NULL"
        ))
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, EXTRACT(EPOCH FROM (now() - min(occurred_at)))::float8 AS age \
             FROM order_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        let age: Option<f64> = row.try_get("age").map_err(map_err)?;
        Ok(OutboxBacklog {
            count: row.try_get("n").map_err(map_err)?,
            oldest_age: age.map(|s| Duration::from_secs_f64(s.max(0.0))),
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
        sqlx::query(&format!(
            "INSERT INTO notifications (kind, out_trade_no, verdict, raw_body, sign_type) \
             SELECT $1, $2, $3, $4, $5 FROM {ASYNC_COMMIT}"
        ))
        .bind(&n.kind)
        .bind(n.out_trade_no.as_deref())
        .bind(&n.verdict)
        .bind(&n.raw_body)
        .bind(n.sign_type.map(|t| t.as_str()))
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn record_notifications(&self, rows: &[NotificationRecord]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        // One statement for the batch: arrays unnested into rows.
        let kinds: Vec<&str> = rows.iter().map(|n| n.kind.as_str()).collect();
        let nos: Vec<Option<&str>> = rows.iter().map(|n| n.out_trade_no.as_deref()).collect();
        let verdicts: Vec<&str> = rows.iter().map(|n| n.verdict.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|n| n.raw_body.as_slice()).collect();
        let sign_types: Vec<Option<&str>> = rows
            .iter()
            .map(|n| n.sign_type.map(|t| t.as_str()))
            .collect();
        sqlx::query(&format!(
            "INSERT INTO notifications (kind, out_trade_no, verdict, raw_body, sign_type) \
             SELECT k, n, v, b, s FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]) \
             AS u(k, n, v, b, s), {ASYNC_COMMIT}"
        ))
        .bind(&kinds)
        .bind(&nos)
        .bind(&verdicts)
        .bind(&bodies)
        .bind(&sign_types)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO anomalies (kind, out_trade_no, detail) VALUES ($1, $2, $3)")
            .bind(a.kind.as_str())
            .bind(a.out_trade_no.as_deref())
            .bind(&a.detail)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
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
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
