//! WeChat Pay v3 platform certificates on SQLite (see the Postgres twin):
//! every unexpired one per merchant, replaced by serial on each download,
//! expired ones deleted then. Times in unix milliseconds.

use chrono::{DateTime, Utc};
use sqlx::{sqlite::SqliteRow, Row};

use super::{
    rows::{from_millis, map_err},
    SqliteStore,
};
use crate::{PlatformCertificate, StoreError};

impl SqliteStore {
    pub(super) async fn certificates_of(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlatformCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT mch_id, serial_no, certificate_pem, not_before, not_after, fetched_at \
             FROM wechat_platform_certificates WHERE mch_id = ?1 AND not_after > ?2 \
             ORDER BY not_after, serial_no",
        )
        .bind(mch_id)
        .bind(now.timestamp_millis())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter().map(certificate_from_row).collect()
    }

    pub(super) async fn keep_certificates(
        &self,
        mch_id: &str,
        certs: &[PlatformCertificate],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        crate::columns::same_merchant(mch_id, certs)?;
        let mut tx = self.begin_write().await?;
        for c in certs {
            sqlx::query(
                "INSERT INTO wechat_platform_certificates \
                 (mch_id, serial_no, certificate_pem, not_before, not_after, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (mch_id, serial_no) DO UPDATE SET \
                 certificate_pem = excluded.certificate_pem, not_before = excluded.not_before, \
                 not_after = excluded.not_after, \
                 fetched_at = max(wechat_platform_certificates.fetched_at, excluded.fetched_at)",
            )
            .bind(mch_id)
            .bind(&c.serial_no)
            .bind(&c.certificate_pem)
            .bind(c.not_before.timestamp_millis())
            .bind(c.not_after.timestamp_millis())
            .bind(c.fetched_at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query(
            "DELETE FROM wechat_platform_certificates WHERE mch_id = ?1 AND not_after <= ?2",
        )
        .bind(mch_id)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

fn certificate_from_row(row: &SqliteRow) -> Result<PlatformCertificate, StoreError> {
    let millis = |name: &str| -> Result<DateTime<Utc>, StoreError> {
        from_millis(row.try_get(name).map_err(map_err)?)
    };
    Ok(PlatformCertificate {
        mch_id: row.try_get("mch_id").map_err(map_err)?,
        serial_no: row.try_get("serial_no").map_err(map_err)?,
        certificate_pem: row.try_get("certificate_pem").map_err(map_err)?,
        not_before: millis("not_before")?,
        not_after: millis("not_after")?,
        fetched_at: millis("fetched_at")?,
    })
}
