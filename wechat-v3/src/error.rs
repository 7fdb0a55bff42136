//! [`V3Error`]: everything a v3 call can end in besides a verified answer, typed
//! so callers can map it without reading strings. It owns the one decision of
//! what a retry can fix; it never carries key material or a request body.

use wxpay_core::wechat::v3::VerifyError;

/// Why a v3 call produced no verified answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V3Error {
    /// The request could not be made on our side (a body that does not
    /// serialize, a path that is not a v3 path, a signing failure). Retrying
    /// the same request cannot help.
    #[error("the request could not be made: {0}")]
    Request(String),
    /// No answer: connection refused or reset, TLS failure, DNS.
    #[error("WeChat Pay could not be reached: {0}")]
    Transport(String),
    #[error("WeChat Pay did not answer in time")]
    Timeout,
    /// A non-2xx answer with WeChat's `{code, message}` body. It is unsigned:
    /// it can only make us give up or retry, never change an order.
    #[error("WeChat Pay answered HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A non-2xx answer without WeChat's error body (a proxy in front of it,
    /// a redirect we do not follow).
    #[error("WeChat Pay answered HTTP {status} without an error body")]
    Status { status: u16 },
    /// A 2xx answer whose `Wechatpay-*` signature did not verify: nothing in
    /// it is believed or kept. Callers answer UNAVAILABLE and log it.
    #[error("WeChat Pay's answer failed verification and is not trusted: {0}")]
    Untrusted(VerifyError),
    /// A verified answer we cannot use (not the JSON the endpoint defines,
    /// larger than the cap).
    #[error("WeChat Pay's answer cannot be used: {0}")]
    BadReply(String),
}

impl V3Error {
    /// Whether sending the same request again may succeed: no answer at all,
    /// or WeChat saying so (`SYSTEM_ERROR` and `BANK_ERROR` with a 5xx, whose
    /// documented remedy is "call again with the same parameters", and
    /// `FREQUENCY_LIMITED` with 429). A 502/503/504 without WeChat's body comes from a proxy in
    /// front of WeChat, so WeChat never saw the request: as retryable as a
    /// refused connection. Everything else is an answer that a retry would
    /// only repeat, or one we refuse to trust.
    pub fn is_retryable(&self) -> bool {
        match self {
            V3Error::Transport(_) | V3Error::Timeout => true,
            V3Error::Api { status, code, .. } => {
                (*status >= 500 && (code == "SYSTEM_ERROR" || code == "BANK_ERROR"))
                    || (*status == 429 && code == "FREQUENCY_LIMITED")
            }
            V3Error::Status { status } => matches!(status, 502..=504),
            V3Error::Request(_) | V3Error::Untrusted(_) | V3Error::BadReply(_) => false,
        }
    }

    /// WeChat's error `code` (`ORDER_NOT_EXIST`, `PARAM_ERROR`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            V3Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of a non-2xx answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            V3Error::Api { status, .. } | V3Error::Status { status } => Some(*status),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> V3Error {
        V3Error::Api {
            status,
            code: code.into(),
            message: String::new(),
        }
    }

    #[test]
    fn only_what_a_retry_can_fix_is_retryable() {
        assert!(V3Error::Timeout.is_retryable());
        assert!(V3Error::Transport("reset".into()).is_retryable());
        assert!(api(500, "SYSTEM_ERROR").is_retryable());
        assert!(api(500, "BANK_ERROR").is_retryable());
        assert!(api(429, "FREQUENCY_LIMITED").is_retryable());
        assert!(V3Error::Status { status: 503 }.is_retryable());

        assert!(!api(400, "PARAM_ERROR").is_retryable());
        assert!(!api(404, "ORDER_NOT_EXIST").is_retryable());
        assert!(!api(403, "SYSTEM_ERROR").is_retryable(), "not a 5xx");
        assert!(!api(500, "PARAM_ERROR").is_retryable());
        assert!(!api(400, "FREQUENCY_LIMITED").is_retryable(), "not a 429");
        assert!(!V3Error::Status { status: 500 }.is_retryable());
        assert!(!V3Error::Status { status: 302 }.is_retryable());
        assert!(!V3Error::Untrusted(VerifyError::BadSignature).is_retryable());
        assert!(!V3Error::BadReply("x".into()).is_retryable());
        assert!(!V3Error::Request("x".into()).is_retryable());
    }

    #[test]
    fn the_code_and_status_are_read_without_parsing_text() {
        let e = api(404, "ORDER_NOT_EXIST");
        assert_eq!(e.code(), Some("ORDER_NOT_EXIST"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(V3Error::Timeout.code(), None);
    }
}
