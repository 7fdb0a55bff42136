//! WeChat Pay v3 platform certificates on Postgres: every unexpired one per
//! merchant, replaced by serial on each download, expired ones deleted then.

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Row};

use super::{rows::map_err, PgStore};
use crate::{PlatformCertificate, StoreError};

impl PgStore {
    pub(super) async fn certificates_of(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlatformCertificate>, StoreError> {
        let rows = sqlx::query(
            "SELECT mch_id, serial_no, certificate_pem, not_before, not_after, fetched_at \
             FROM wechat_platform_certificates WHERE mch_id = $1 AND not_after > $2 \
             ORDER BY not_after, serial_no",
        )
        .bind(mch_id)
        .bind(now)
        .fetch_all(self.pool())
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
        let mut tx = self.pool().begin().await.map_err(map_err)?;
        for c in certs {
            sqlx::query(
                "INSERT INTO wechat_platform_certificates \
                 (mch_id, serial_no, certificate_pem, not_before, not_after, fetched_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (mch_id, serial_no) DO UPDATE SET \
                 certificate_pem = EXCLUDED.certificate_pem, not_before = EXCLUDED.not_before, \
                 not_after = EXCLUDED.not_after, \
                 fetched_at = GREATEST(wechat_platform_certificates.fetched_at, EXCLUDED.fetched_at)",
            )
            .bind(mch_id)
            .bind(&c.serial_no)
            .bind(&c.certificate_pem)
            .bind(c.not_before)
            .bind(c.not_after)
            .bind(c.fetched_at)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        sqlx::query(
            "DELETE FROM wechat_platform_certificates WHERE mch_id = $1 AND not_after <= $2",
        )
        .bind(mch_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

fn certificate_from_row(row: &PgRow) -> Result<PlatformCertificate, StoreError> {
    Ok(PlatformCertificate {
        mch_id: row.try_get("mch_id").map_err(map_err)?,
        serial_no: row.try_get("serial_no").map_err(map_err)?,
        certificate_pem: row.try_get("certificate_pem").map_err(map_err)?,
        not_before: row.try_get("not_before").map_err(map_err)?,
        not_after: row.try_get("not_after").map_err(map_err)?,
        fetched_at: row.try_get("fetched_at").map_err(map_err)?,
    })
}
