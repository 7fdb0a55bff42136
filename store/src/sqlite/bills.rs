//! The daily reconciliation's reads and its report on SQLite (see the Postgres
//! twin): a day's paid orders and successful refunds, the report per day.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::{
    refunds::{refund_from_row, REFUND_COLUMNS},
    rows::{map_err, order_from_row},
    SqliteStore, ORDER_COLUMNS,
};
use crate::{
    columns::{bill_report_from_json, corrupt},
    StoreError,
};
use wxpay_core::domain::{BillReport, Order, Refund};

impl SqliteStore {
    pub(super) async fn paid_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Order>, StoreError> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE paid_at >= ?1 AND paid_at < ?2 \
             AND status IN ('SUCCESS', 'REFUND') ORDER BY paid_at"
        );
        let rows = sqlx::query(&sql)
            .bind(from.timestamp_millis())
            .bind(to.timestamp_millis())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(order_from_row).collect()
    }

    pub(super) async fn refunded_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Refund>, StoreError> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE created_at >= ?1 AND created_at < ?2 \
             AND status = 'SUCCESS' ORDER BY created_at"
        );
        let rows = sqlx::query(&sql)
            .bind(from.timestamp_millis())
            .bind(to.timestamp_millis())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        rows.iter().map(refund_from_row).collect()
    }

    pub(super) async fn report_of(&self, day: NaiveDate) -> Result<Option<BillReport>, StoreError> {
        let row = sqlx::query("SELECT report FROM bill_reports WHERE bill_date = ?1")
            .bind(day.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?;
        row.map(|row| {
            let json: String = row.try_get("report").map_err(map_err)?;
            bill_report_from_json(&json)
        })
        .transpose()
    }

    pub(super) async fn keep_report(&self, report: &BillReport) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).map_err(corrupt)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO bill_reports (bill_date, report, reconciled_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (bill_date) DO UPDATE SET report = excluded.report, \
             reconciled_at = excluded.reconciled_at",
        )
        .bind(report.bill_date.to_string())
        .bind(json)
        .bind(report.reconciled_at.timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}
