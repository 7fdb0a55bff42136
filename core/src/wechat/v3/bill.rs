//! The v3 trade bill, pure: the path that asks for a day's bill
//! (`GET /v3/bill/tradebill`), and the check of the downloaded file against
//! the SHA1 the signed answer gave. The file itself comes unsigned (WxJava
//! #2030/#2193 are integrations that tried to verify it and failed), so the
//! hash is what proves it; a mismatch is never "close enough" (wechatpay-java
//! #384 ignored one). The file's text is v2's bill format, read by
//! [`crate::wechat::bill::parse`].

use chrono::NaiveDate;
use ring::digest;

/// The path and query of the ALL bill of `day` (Beijing time), gzipped when
/// `gzip`; a service provider asks for a sub merchant's with `sub_mchid`.
pub fn tradebill_path(day: NaiveDate, gzip: bool, sub_mchid: Option<&str>) -> String {
    let mut path = format!(
        "/v3/bill/tradebill?bill_date={}&bill_type=ALL",
        day.format("%Y-%m-%d")
    );
    if let Some(sub) = sub_mchid {
        path.push_str("&sub_mchid=");
        path.push_str(sub);
    }
    if gzip {
        path.push_str("&tar_type=GZIP");
    }
    path
}

/// Why a downloaded bill is not the one WeChat described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("the bill's hash type {0:?} is not SHA1")]
    Type(String),
    #[error("the downloaded bill's SHA1 {actual} does not match {expected}, the hash WeChat gave for it")]
    Mismatch { expected: String, actual: String },
}

/// Checks `file` (the bytes as downloaded, before any gunzip: WeChat hashes
/// what it serves) against `hash_type` and `hash_value` of the signed answer.
pub fn check_hash(file: &[u8], hash_type: &str, hash_value: &str) -> Result<(), HashError> {
    if !hash_type.eq_ignore_ascii_case("SHA1") {
        return Err(HashError::Type(hash_type.chars().take(32).collect()));
    }
    let actual = hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, file));
    if actual.eq_ignore_ascii_case(hash_value.trim()) {
        Ok(())
    } else {
        Err(HashError::Mismatch {
            expected: hash_value.chars().take(64).collect(),
            actual,
        })
    }
}

/// The SHA1 WeChat would give for `file` (the sandbox's side), lowercase hex.
pub fn sha1_hex(file: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_day_in_v3s_spelling() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 6).expect("a day");
        assert_eq!(
            tradebill_path(day, true, None),
            "/v3/bill/tradebill?bill_date=2026-12-06&bill_type=ALL&tar_type=GZIP"
        );
        assert_eq!(
            tradebill_path(day, false, Some("1900000109")),
            "/v3/bill/tradebill?bill_date=2026-12-06&bill_type=ALL&sub_mchid=1900000109"
        );
    }

    #[test]
    fn only_the_exact_sha1_of_the_bytes_passes() {
        // SHA1("abc"), FIPS 180-2's example.
        let abc = "a9993e364706816aba3e25717850c26c9cd0d89d";
        assert_eq!(check_hash(b"abc", "SHA1", abc), Ok(()));
        assert_eq!(check_hash(b"abc", "sha1", &abc.to_uppercase()), Ok(()));
        assert_eq!(sha1_hex(b"abc"), abc);
        assert!(matches!(
            check_hash(b"abd", "SHA1", abc),
            Err(HashError::Mismatch { .. })
        ));
        assert!(matches!(
            check_hash(b"abc", "SHA256", abc),
            Err(HashError::Type(_))
        ));
        assert!(matches!(
            check_hash(b"abc", "SHA1", ""),
            Err(HashError::Mismatch { .. })
        ));
    }
}
