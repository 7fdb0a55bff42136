//! The identifiers this product can mint itself, order numbers and nonces: their
//! parsers and their generators. Kept apart so the randomness (and the clock a
//! ULID reads) stays out of the plain parsers in `received`; the types
//! themselves are declared in `ids/mod.rs`.

use rand::{distr::Alphanumeric, Rng};

use super::{
    newtype::{check_len, ValidationError},
    Nonce, OutTradeNo,
};

impl OutTradeNo {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("out_trade_no", s, 1, 32)?;
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'));
        if !ok {
            return Err(ValidationError::new(
                "out_trade_no",
                "may contain only letters, digits and _-|*",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// A fresh order number: a ULID, 26 characters of Crockford base32. The first
    /// 10 encode the creation time in milliseconds (so numbers sort by time); the
    /// other 16 carry 80 bits from the thread-local CSPRNG (ChaCha, seeded by the OS),
    /// so numbers cannot be guessed or collide.
    pub fn generate() -> Self {
        let ulid = ulid::Ulid::from_parts(
            chrono::Utc::now().timestamp_millis().max(0) as u64,
            rand::rng().random::<u128>(),
        );
        Self(ulid.to_string())
    }
}

impl Nonce {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("nonce_str", s, 1, 32)?;
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "nonce_str",
                "may contain only letters and digits",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// 32 letters and digits from the CSPRNG (~190 bits).
    pub fn generate() -> Self {
        Self(
            rand::rng()
                .sample_iter(&Alphanumeric)
                .take(32)
                .map(char::from)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_trade_no_accepts_wechats_alphabet_only() {
        assert!(OutTradeNo::parse("A-b_c|d*9").is_ok());
        assert!(OutTradeNo::parse(&"9".repeat(32)).is_ok());
        for bad in ["", "has space", "中文", "a.b", &"9".repeat(33)] {
            let err = OutTradeNo::parse(bad).expect_err(bad);
            assert_eq!(err.field, "out_trade_no");
        }
    }

    #[test]
    fn generated_order_numbers_are_valid_unique_and_time_sortable() {
        let a = OutTradeNo::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = OutTradeNo::generate();
        assert!(OutTradeNo::parse(a.as_str()).is_ok());
        assert_ne!(a, b);
        assert!(a < b, "{a} should sort before {b}");
        let many: std::collections::HashSet<_> =
            (0..10_000).map(|_| OutTradeNo::generate()).collect();
        assert_eq!(many.len(), 10_000);
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let a = Nonce::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(Nonce::parse(a.as_str()).is_ok());
        assert_ne!(a, Nonce::generate());
    }
}
