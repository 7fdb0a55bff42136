//! The one place where payment-service's errors become gRPC codes. Every
//! boundary converts its failures into [`ApiError`]; the public message is
//! written for the caller, and internal detail is logged here, never sent.
//! (The gateway's HTTP replies are WeChat's XML protocol, decided in its own
//! `verdict` module.)

use wxpay_core::domain::ValidationError;
use wxpay_store::StoreError;

use crate::wechat::WechatError;

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

impl From<WechatError> for ApiError {
    fn from(e: WechatError) -> Self {
        match e {
            WechatError::Transport(_) | WechatError::Timeout => ApiError::Unavailable {
                public: "WeChat Pay is unreachable, retry later",
                detail: e.to_string(),
            },
            WechatError::Business { ref code, .. } if code == "SYSTEMERROR" => {
                ApiError::Unavailable {
                    public: "WeChat Pay reported a system error, retry later",
                    detail: e.to_string(),
                }
            }
            WechatError::Business { ref code, .. } => match code.as_str() {
                "ORDERPAID" => ApiError::FailedPrecondition("the order is already paid".into()),
                "ORDERCLOSED" => ApiError::FailedPrecondition("the order is closed".into()),
                "NOTENOUGH" => {
                    ApiError::FailedPrecondition("the payer's balance is not enough".into())
                }
                _ => ApiError::Unavailable {
                    public: "WeChat Pay refused the request",
                    detail: e.to_string(),
                },
            },
            WechatError::BadReply(_) | WechatError::Return(_) => ApiError::Unavailable {
                public: "WeChat Pay's reply could not be trusted",
                detail: e.to_string(),
            },
        }
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
                StoreError::Unavailable("pool timed out".into()).into(),
                tonic::Code::Unavailable,
            ),
            (WechatError::Timeout.into(), tonic::Code::Unavailable),
            (
                StoreError::Corrupt("bad".into()).into(),
                tonic::Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.grpc_code(), code, "{err:?}");
        }
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
