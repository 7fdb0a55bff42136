//! Postgres rows to domain values: error mapping (`23505` is a conflict) and
//! the order/event readers the queries share.

use sqlx::{postgres::PgRow, Row};

use crate::{
    columns::{EventColumns, OrderColumns},
    StoreError,
};
use wxpay_core::domain::{Order, OrderEvent};

pub(super) fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            StoreError::Conflict(db.message().to_owned())
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

pub(super) fn order_from_row(row: &PgRow) -> Result<Order, StoreError> {
    let get = |name: &str| row.try_get(name).map_err(map_err);
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
        expires_at: row.try_get("expires_at").map_err(map_err)?,
        prepay_id: row.try_get("prepay_id").map_err(map_err)?,
        prepay_expires_at: row.try_get("prepay_expires_at").map_err(map_err)?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        cash_fee: row.try_get("cash_fee").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        paid_at: row.try_get("paid_at").map_err(map_err)?,
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

pub(super) fn event_from_row(row: &PgRow) -> Result<OrderEvent, StoreError> {
    EventColumns {
        id: row.try_get("id").map_err(map_err)?,
        out_trade_no: row.try_get("out_trade_no").map_err(map_err)?,
        status: row.try_get("status").map_err(map_err)?,
        version: row.try_get("version").map_err(map_err)?,
        transaction_id: row.try_get("transaction_id").map_err(map_err)?,
        total_fee: row.try_get("total_fee").map_err(map_err)?,
        occurred_at: row.try_get("occurred_at").map_err(map_err)?,
        source: row.try_get("source").map_err(map_err)?,
        refunded_fee: row.try_get("refunded_fee").map_err(map_err)?,
    }
    .into_event()
}
