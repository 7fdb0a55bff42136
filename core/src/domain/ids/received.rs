//! The values this product only receives, from the caller or from WeChat, and
//! never makes up: description, attach, openid, idempotency key and caller, WeChat's
//! transaction id and the client IP. Each gets its field's rule here; nothing
//! here generates a value.

use std::net::IpAddr;

use super::{
    newtype::{check_len, check_no_control, check_plain_word, ValidationError},
    Attach, Caller, ClientIp, Description, IdempotencyKey, OpenId, OutRefundNo, RefundReason,
    TransactionId,
};

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
        Self::parse_field("openid", s)
    }

    /// The same rule for another field that holds an openid (`sub_openid`).
    pub fn parse_field(field: &'static str, s: &str) -> Result<Self, ValidationError> {
        check_len(field, s, 1, 128)?;
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return Err(ValidationError::new(
                field,
                "may contain only letters, digits, _ and -",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// An openid that may be absent: NATIVE, APP and MWEB orders are placed
    /// before anyone knows who will pay, so they store an empty one.
    pub fn parse_optional(s: &str) -> Result<Self, ValidationError> {
        Self::parse_field_optional("openid", s)
    }

    /// [`OpenId::parse_field`], with the empty value allowed.
    pub fn parse_field_optional(field: &'static str, s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() {
            Ok(Self::empty())
        } else {
            Self::parse_field(field, s)
        }
    }

    /// No openid: an order placed before anyone knows who will pay.
    pub fn empty() -> Self {
        Self(String::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl OutRefundNo {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("out_refund_no", s, 1, 64)?;
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*' | b'@'));
        if !ok {
            return Err(ValidationError::new(
                "out_refund_no",
                "may contain only letters, digits and _-|*@",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl RefundReason {
    /// No reason given (a refund made outside this product).
    pub fn empty() -> Self {
        Self(String::new())
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_len("reason", s, 0, 80)?;
        check_no_control("reason", s)?;
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

impl Caller {
    /// The caller of a server without named tokens, and of orders placed
    /// before callers were recorded.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_plain_word("caller", s, 32)?;
        Ok(Self(s.to_owned()))
    }

    pub fn default_caller() -> Self {
        Self(Self::DEFAULT.to_owned())
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
