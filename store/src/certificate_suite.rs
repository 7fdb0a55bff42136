//! The platform-certificate part of the storage suite (see `suite`): what
//! every backend must do with WeChat Pay v3 platform certificates, so that
//! replicas share them. `store_suite!` runs these beside the order tests.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::{PlatformCertificate, Store, StoreError};

/// A fixed instant (whole seconds, which both backends keep exactly).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0)
        .single()
        .expect("a valid instant")
}

fn cert(mch_id: &str, serial: &str, not_after: DateTime<Utc>) -> PlatformCertificate {
    PlatformCertificate {
        mch_id: mch_id.to_owned(),
        serial_no: serial.to_owned(),
        certificate_pem: format!(
            "-----BEGIN CERTIFICATE-----\n{serial}\n-----END CERTIFICATE-----\n"
        ),
        not_before: not_after - Duration::days(365),
        not_after,
        fetched_at: t0(),
    }
}

pub async fn platform_certificates_are_kept_per_merchant_by_serial(store: Arc<dyn Store>) {
    let later = cert("1900000109", "2C7E5A3B", t0() + Duration::days(900));
    let sooner = cert("1900000109", "5157F09E", t0() + Duration::days(30));
    let other = cert("1900000200", "5157F09E", t0() + Duration::days(30));
    store
        .save_platform_certificates("1900000109", &[later.clone(), sooner.clone()], t0())
        .await
        .expect("save");
    store
        .save_platform_certificates("1900000200", std::slice::from_ref(&other), t0())
        .await
        .expect("save");

    let mine = store
        .platform_certificates("1900000109", t0())
        .await
        .expect("read");
    let theirs = store
        .platform_certificates("1900000200", t0())
        .await
        .expect("read");
    let nobodys = store
        .platform_certificates("1900000300", t0())
        .await
        .expect("read");

    assert_eq!(
        mine,
        vec![sooner, later],
        "oldest end first, exactly as saved"
    );
    assert_eq!(theirs, vec![other]);
    assert!(nobodys.is_empty());
}

pub async fn a_certificate_downloaded_again_is_replaced_not_duplicated(store: Arc<dyn Store>) {
    let first = cert("1900000109", "5157F09E", t0() + Duration::days(30));
    store
        .save_platform_certificates("1900000109", std::slice::from_ref(&first), t0())
        .await
        .expect("save");
    let again = PlatformCertificate {
        fetched_at: t0() + Duration::hours(12),
        ..first.clone()
    };
    store
        .save_platform_certificates(
            "1900000109",
            std::slice::from_ref(&again),
            t0() + Duration::hours(12),
        )
        .await
        .expect("save again");
    // A replica that downloaded earlier but saves later does not move the time back.
    store
        .save_platform_certificates("1900000109", std::slice::from_ref(&first), t0())
        .await
        .expect("save a slower replica's download");

    let kept = store
        .platform_certificates("1900000109", t0())
        .await
        .expect("read");

    assert_eq!(kept, vec![again]);
}

pub async fn expired_certificates_are_not_read_and_are_deleted_on_save(store: Arc<dyn Store>) {
    let expiring = cert("1900000109", "11E0A1B2", t0() + Duration::hours(1));
    let lasting = cert("1900000109", "2C7E5A3B", t0() + Duration::days(900));
    store
        .save_platform_certificates("1900000109", &[expiring.clone(), lasting.clone()], t0())
        .await
        .expect("save");

    let after_expiry = t0() + Duration::hours(2);
    let read_after = store
        .platform_certificates("1900000109", after_expiry)
        .await
        .expect("read");
    assert_eq!(
        read_after,
        vec![lasting.clone()],
        "an expired one is not read"
    );
    assert_eq!(
        store
            .platform_certificates("1900000109", t0())
            .await
            .expect("read")
            .len(),
        2,
        "not deleted by reading"
    );

    store
        .save_platform_certificates("1900000109", std::slice::from_ref(&lasting), after_expiry)
        .await
        .expect("save after expiry");
    let read_as_of_before = store
        .platform_certificates("1900000109", t0())
        .await
        .expect("read");

    assert_eq!(read_as_of_before, vec![lasting], "the expired row is gone");
}

pub async fn another_merchants_certificate_is_never_kept_as_ours(store: Arc<dyn Store>) {
    let ours = cert("1900000109", "2C7E5A3B", t0() + Duration::days(900));
    let theirs = cert("1900000200", "5157F09E", t0() + Duration::days(30));

    let refused = store
        .save_platform_certificates("1900000109", &[ours, theirs], t0())
        .await;

    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    for mch_id in ["1900000109", "1900000200"] {
        assert!(
            store
                .platform_certificates(mch_id, t0())
                .await
                .expect("read")
                .is_empty(),
            "nothing of the refused save was written"
        );
    }
}
