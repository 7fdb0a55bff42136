//! The one place where payment-service's errors become gRPC codes. Every
//! boundary converts its failures into [`ApiError`]; the public message is
//! written for the caller, and internal detail is logged here, never sent.
//! (The gateway's HTTP replies are WeChat's XML protocol, decided in its own
//! `verdict` module.)

use wxpay_core::domain::ValidationError;
use wxpay_store::StoreError;

use crate::wechat::{WechatError, RETRY_CODES};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; `field` names what to fix. Nothing was changed.
    #[error("{0}")]
    InvalidArgument(ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller may not do this (CreateOrder for a merchant outside its scope).
    #[error("{0}")]
    PermissionDenied(String),
    /// A dependency (database, WeChat, Redis) is down; retrying later may work.
    #[error("{public}")]
    Unavailable {
        public: &'static str,
        detail: String,
    },
    /// A bug or corrupt data.
    #[error("internal error")]
    Internal(String),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::InvalidArgument(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => ApiError::Unavailable {
                public: "the database is unavailable, retry later",
                detail,
            },
            StoreError::NotFound => ApiError::NotFound("order"),
            StoreError::Conflict(detail) | StoreError::Corrupt(detail) => {
                ApiError::Internal(detail)
            }
        }
    }
}

/// WeChat err_codes that mean this merchant's setup is wrong (key, appid,
/// mch_id, permissions): no retry can fix them, and an operator must know.
/// v2's spellings, then v3's.
const MISCONFIGURED: [&str; 10] = [
    "NOAUTH",
    "APPID_MCHID_NOT_MATCH",
    "APPID_NOT_EXIST",
    "MCHID_NOT_EXIST",
    "SIGNERROR",
    "REQUIRE_POST_METHOD",
    "NO_AUTH",
    "SIGN_ERROR",
    "MCH_NOT_EXISTS",
    "ACCOUNT_ERROR",
];

/// WeChat err_codes that blame a field of the request (both dialects).
const FIELD_AT_FAULT: [&str; 5] = [
    "PARAM_ERROR",
    "LACK_PARAMS",
    "XML_FORMAT_ERROR",
    "NOT_UTF8",
    "OUT_TRADE_NO_USED",
];

impl From<WechatError> for ApiError {
    fn from(e: WechatError) -> Self {
        match e {
            WechatError::Transport(_) | WechatError::Timeout => ApiError::Unavailable {
                public: "WeChat Pay is unreachable, retry later",
                detail: e.to_string(),
            },
            WechatError::BadReply(_) => ApiError::Unavailable {
                public: "WeChat Pay's reply could not be trusted, retry later",
                detail: e.to_string(),
            },
            // return_code FAIL: the request itself was refused before any business
            // rule (a signature WeChat does not accept, a merchant it does not
            // know). Retrying the same request cannot help.
            WechatError::Return(ref msg) => {
                tracing::error!(return_msg = %msg, "WeChat Pay refused the request outright: check WECHAT_APP_ID, WECHAT_MCH_ID, WECHAT_API_KEY and WECHAT_SIGN_TYPE");
                ApiError::FailedPrecondition(format!("WeChat Pay refused the request: {msg}"))
            }
            WechatError::Business { code, message } => business(code, message),
            // Never sent: our configuration or a bug, not WeChat's doing.
            WechatError::Request(_) => ApiError::Internal(e.to_string()),
            // The file may have been damaged on its way: another download may
            // match. Whatever it held was not read.
            WechatError::BillHash(_) => ApiError::Unavailable {
                public: "the bill WeChat Pay served did not match the hash (SHA1) WeChat gave \
                         for it: the day is not reconciled and nothing changed; retry later",
                detail: e.to_string(),
            },
        }
    }
}

/// A result_code FAIL (v2) or an error answer (v3): transient codes are
/// UNAVAILABLE, everything else says why, with WeChat's own code and description.
fn business(code: String, message: String) -> ApiError {
    let what = if message.is_empty() {
        code.clone()
    } else {
        format!("{code}: {message}")
    };
    match code.as_str() {
        c if RETRY_CODES.contains(&c) || c == "FREQUENCY_LIMITED" => ApiError::Unavailable {
            public: "WeChat Pay is busy, retry later with the same request",
            detail: what,
        },
        c if MISCONFIGURED.contains(&c) => {
            tracing::error!(err_code = %code, err_code_des = %message, "WeChat Pay says this merchant is misconfigured");
            ApiError::FailedPrecondition(format!(
                "WeChat Pay refused the merchant's request ({what})"
            ))
        }
        c if FIELD_AT_FAULT.contains(&c) => ApiError::InvalidArgument(ValidationError::new(
            "request",
            format!("WeChat Pay refused a field ({what})"),
        )),
        "ORDERPAID" => ApiError::FailedPrecondition(format!("the order is already paid ({what})")),
        "ORDERCLOSED" | "ORDER_CLOSED" => {
            ApiError::FailedPrecondition(format!("the order is closed ({what})"))
        }
        "NOTENOUGH" | "NOT_ENOUGH" => {
            ApiError::FailedPrecondition(format!("the payer's balance is not enough ({what})"))
        }
        // v3's "no such order or refund" (a refund's order unpaid or unknown
        // at WeChat; a refund it never saw is answered as `None` before here).
        "RESOURCE_NOT_EXISTS" => {
            ApiError::FailedPrecondition(format!("WeChat Pay has no such order or refund ({what})"))
        }
        "USER_ACCOUNT_ABNORMAL" => {
            ApiError::FailedPrecondition(format!("the payer's account is abnormal ({what})"))
        }
        // v3's bill of a day not made yet: WeChat has it after 10:00 the next day.
        "STATEMENT_CREATING" => ApiError::Unavailable {
            public: "WeChat Pay is still making the bill of that day, retry later",
            detail: what,
        },
        _ => ApiError::FailedPrecondition(format!("WeChat Pay refused the request ({what})")),
    }
}

impl ApiError {
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            ApiError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            ApiError::NotFound(_) => tonic::Code::NotFound,
            ApiError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            ApiError::Unauthenticated => tonic::Code::Unauthenticated,
            ApiError::PermissionDenied(_) => tonic::Code::PermissionDenied,
            ApiError::Unavailable { .. } => tonic::Code::Unavailable,
            ApiError::Internal(_) => tonic::Code::Internal,
        }
    }

    /// Logs internal detail (once, here) and returns what the caller may see.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable { detail, .. } => {
                tracing::warn!(%detail, "dependency unavailable")
            }
            ApiError::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        self.to_string()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let code = e.grpc_code();
        tonic::Status::new(code, e.public_message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_a_grpc_code() {
        let cases: Vec<(ApiError, tonic::Code)> = vec![
            (
                ValidationError::new("total_fee", "must be positive").into(),
                tonic::Code::InvalidArgument,
            ),
            (ApiError::NotFound("order"), tonic::Code::NotFound),
            (
                ApiError::AlreadyExists("x".into()),
                tonic::Code::AlreadyExists,
            ),
            (
                ApiError::FailedPrecondition("x".into()),
                tonic::Code::FailedPrecondition,
            ),
            (ApiError::Unauthenticated, tonic::Code::Unauthenticated),
            (
                ApiError::PermissionDenied("x".into()),
                tonic::Code::PermissionDenied,
            ),
            (
                StoreError::Unavailable("pool timed out".into()).into(),
                tonic::Code::Unavailable,
            ),
            (WechatError::Timeout.into(), tonic::Code::Unavailable),
            (
                business_error("SYSTEMERROR").into(),
                tonic::Code::Unavailable,
            ),
            (
                business_error("BIZERR_NEED_RETRY").into(),
                tonic::Code::Unavailable,
            ),
            (
                business_error("PARAM_ERROR").into(),
                tonic::Code::InvalidArgument,
            ),
            // v3's spellings.
            (
                business_error("SYSTEM_ERROR").into(),
                tonic::Code::Unavailable,
            ),
            (
                business_error("BANK_ERROR").into(),
                tonic::Code::Unavailable,
            ),
            (
                business_error("FREQUENCY_LIMITED").into(),
                tonic::Code::Unavailable,
            ),
            (
                business_error("SIGN_ERROR").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("ORDER_CLOSED").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                WechatError::BadReply("its signature did not verify".into()).into(),
                tonic::Code::Unavailable,
            ),
            (
                WechatError::BillHash("the SHA1 does not match".into()).into(),
                tonic::Code::Unavailable,
            ),
            // v3's refund refusals.
            (
                business_error("NOT_ENOUGH").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("RESOURCE_NOT_EXISTS").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("USER_ACCOUNT_ABNORMAL").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("STATEMENT_CREATING").into(),
                tonic::Code::Unavailable,
            ),
            (
                WechatError::Request("no key".into()).into(),
                tonic::Code::Internal,
            ),
            (
                business_error("LACK_PARAMS").into(),
                tonic::Code::InvalidArgument,
            ),
            (
                business_error("INVALID_REQUEST").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("NOAUTH").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                business_error("APPID_MCHID_NOT_MATCH").into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                WechatError::Return("签名错误".into()).into(),
                tonic::Code::FailedPrecondition,
            ),
            (
                StoreError::Corrupt("bad".into()).into(),
                tonic::Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.grpc_code(), code, "{err:?}");
        }
    }

    fn business_error(code: &str) -> WechatError {
        WechatError::Business {
            code: code.into(),
            message: format!("{code} described"),
        }
    }

    #[test]
    fn wechat_refusals_carry_its_code_and_description() {
        let status: tonic::Status = ApiError::from(business_error("INVALID_REQUEST")).into();
        assert!(
            status.message().contains("INVALID_REQUEST"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("INVALID_REQUEST described"));
        let status: tonic::Status = ApiError::from(business_error("PARAM_ERROR")).into();
        assert!(
            status.message().contains("PARAM_ERROR"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_bill_that_fails_its_hash_says_so() {
        let status: tonic::Status =
            ApiError::from(WechatError::BillHash("SHA1 abc is not def".into())).into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains("did not match the hash"),
            "{}",
            status.message()
        );
        assert!(status.message().contains("nothing changed"));
    }

    #[test]
    fn internal_detail_is_not_sent() {
        let status: tonic::Status =
            ApiError::from(StoreError::Unavailable("password=hunter2 host=db".into())).into();
        assert!(!status.message().contains("hunter2"));
        let status: tonic::Status = ApiError::Internal("stack trace".into()).into();
        assert_eq!(status.message(), "internal error");
    }
}
