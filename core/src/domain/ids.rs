//! Identifiers and bounded strings that WeChat limits: out_trade_no, nonce,
//! description (`body`), attach, openid, idempotency keys and client IPs.

use std::{fmt, net::IpAddr};

use rand::{distr::Alphanumeric, Rng};

/// Why a value was refused, naming the field so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct ValidationError {
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The merchant's order number: 1..=32 of `[0-9A-Za-z_-|*]`, unique per merchant.
    OutTradeNo
);
string_newtype!(
    /// A random string of 1..=32 ASCII letters and digits.
    Nonce
);
string_newtype!(
    /// What the payer sees (`body`): 1..=128 bytes of UTF-8 (WeChat's String(128)).
    Description
);
string_newtype!(
    /// Merchant data echoed back in the notification: 0..=127 bytes.
    Attach
);
string_newtype!(
    /// The payer's openid under the merchant's app.
    OpenId
);
string_newtype!(
    /// The caller's idempotency key for CreateOrder.
    IdempotencyKey
);
string_newtype!(
    /// WeChat's own payment id (`transaction_id`).
    TransactionId
);
string_newtype!(
    /// The payer's IP address, as WeChat's `spbill_create_ip` wants it.
    ClientIp
);

fn check_len(field: &'static str, s: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    if s.len() < min {
        return Err(ValidationError::new(field, "is required"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, at most {max} allowed", s.len()),
        ));
    }
    Ok(())
}

fn check_no_control(field: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(())
}

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

impl Description {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("description", s, 1, 128)?;
        check_no_control("description", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl Attach {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("attach", s, 0, 127)?;
        Ok(Self(s.to_owned()))
    }
}

impl OpenId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("openid", s, 1, 128)?;
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(ValidationError::new(
                "openid",
                "may contain only letters, digits, _ and -",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("idempotency_key", s, 1, 64)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ValidationError::new(
                "idempotency_key",
                "may contain only printable ASCII without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TransactionId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("transaction_id", s, 1, 32)?;
        if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "transaction_id",
                "may contain only letters and digits",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl ClientIp {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| ValidationError::new("client_ip", "is not an IPv4 or IPv6 address"))?;
        Ok(Self(ip.to_string()))
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
    fn description_limit_is_in_bytes_not_characters() {
        // 42 Chinese characters are 126 bytes; 43 are 129.
        assert!(Description::parse(&"中".repeat(42)).is_ok());
        let err = Description::parse(&"中".repeat(43)).expect_err("too long");
        assert_eq!(err.field, "description");
        assert!(Description::parse("").is_err());
        assert!(
            Description::parse(&"a".repeat(128)).is_ok(),
            "WeChat's body is String(128)"
        );
        assert!(Description::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn attach_may_be_empty_but_not_long() {
        assert!(Attach::parse("").is_ok());
        assert!(Attach::parse(&"a".repeat(128)).is_err());
    }

    #[test]
    fn nonces_are_32_alphanumerics_and_differ() {
        let a = Nonce::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(Nonce::parse(a.as_str()).is_ok());
        assert_ne!(a, Nonce::generate());
    }

    #[test]
    fn client_ip_must_be_an_address() {
        assert_eq!(
            ClientIp::parse("127.0.0.1").map(|i| i.to_string()),
            Ok("127.0.0.1".into())
        );
        assert!(ClientIp::parse("::1").is_ok());
        assert!(ClientIp::parse("localhost").is_err());
        assert!(ClientIp::parse("").is_err());
    }
}
