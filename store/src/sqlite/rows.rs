//! SQLite rows to domain values and back: error mapping, the millisecond
//! timestamps, and the order/event readers the queries share.

use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteRow, Executor, Row, Sqlite};

use crate::{
    columns::{corrupt, EventColumns, OrderColumns},
    StoreError,
};
use wxpay_core::domain::{Caller, IdempotencyKey, Order, OrderEvent};

use super::*;

pub(super) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| UNIQUE_VIOLATION_CODES.contains(&code.as_ref())) =>
        {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| corrupt(format!("timestamp {ms} out of range")))
}

/// A JSON array for `IN (SELECT value FROM json_each(?))`: SQLite has no array
/// parameters, and this keeps each statement's text fixed whatever the list's length.
pub(super) fn json_array<T: Into<serde_json::Value>>(items: Vec<T>) -> String {
    serde_json::Value::from(items).to_string()
}

pub(super) fn order_from_row(row: &SqliteRow) -> Result<Order, StoreError> {
    let get = |name: &str| row.try_get(name).map_err(map_err);
    let time = |name: &str| from_millis(row.try_get(name).map_err(map_err)?);
    let opt_time = |name: &str| {
        row.try_get::<Option<i64>, _>(name)
            .map_err(map_err)?
            .map(from_millis)
            .transpose()
    };
    OrderColumns {
        out_trade_no: get("out_trade_no")?,
        idempotency_key: get("idempotency_key")?,
        status: get("status")?,
        version: row.try_get("version").map_err(map_err)?,
        openid: get("openid")?,
        description: get("description")?,
        total_fee: row.try_get("total_fee").map_err(map_err)?,
        attach: get("attach")?,
        client_ip: get("client_ip")?,
        sign_type: get("sign_type")?,
        expires_at: opt_time("expires_at")?,
        prepay_id: row.try_get("prepay_id").map_err(map_err)?,
        prepay_expires_at: opt_time("prepay_expires_at")?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        cash_fee: row.try_get("cash_fee").map_err(map_err)?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        paid_at: opt_time("paid_at")?,
        refunded_fee: row.try_get("refunded_fee").map_err(map_err)?,
        merchant: get("merchant")?,
        trade_type: get("trade_type")?,
        sub_openid: get("sub_openid")?,
        product_id: row.try_get("product_id").map_err(map_err)?,
        scene_info: row.try_get("scene_info").map_err(map_err)?,
        pay_url: row.try_get("pay_url").map_err(map_err)?,
    }
    .into_order()
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<OrderEvent, StoreError> {
    let occurred_at: i64 = row.try_get("occurred_at").map_err(map_err)?;
    EventColumns {
        id: row.try_get("id").map_err(map_err)?,
        out_trade_no: row.try_get("out_trade_no").map_err(map_err)?,
        status: row.try_get("status").map_err(map_err)?,
        version: row.try_get("version").map_err(map_err)?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        total_fee: row.try_get("total_fee").map_err(map_err)?,
        occurred_at: from_millis(occurred_at)?,
        source: row.try_get("source").map_err(map_err)?,
        refunded_fee: row.try_get("refunded_fee").map_err(map_err)?,
    }
    .into_event()
}

/// One order by a unique column, on the reader pool or inside a write transaction.
pub(super) async fn fetch_order<'e, E>(
    ex: E,
    column: &str,
    value: &str,
) -> Result<Option<Order>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    // `column` is a constant of the caller's code, never request input.
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE {column} = ?1");
    ex.fetch_optional(sqlx::query(&sql).bind(value))
        .await
        .map_err(map_err)?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// The order `caller` placed under `key`.
pub(super) async fn fetch_by_key<'e, E>(
    ex: E,
    caller: &Caller,
    key: &IdempotencyKey,
) -> Result<Option<Order>, StoreError>
where
    E: Executor<'e, Database = Sqlite>,
{
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM orders WHERE caller = ?1 AND idempotency_key = ?2");
    ex.fetch_optional(sqlx::query(&sql).bind(caller.as_str()).bind(key.as_str()))
        .await
        .map_err(map_err)?
        .as_ref()
        .map(order_from_row)
        .transpose()
}
