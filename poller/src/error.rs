//! The one place where the poller's errors become gRPC statuses: a bad order
//! number names the field, an unknown order is NOT_FOUND, and a database outage
//! is UNAVAILABLE with its detail logged here, never sent.

use wxpay_core::domain::ValidationError;
use wxpay_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{0}")]
    InvalidArgument(#[from] ValidationError),
    #[error("order not found")]
    NotFound,
    #[error("the database is unavailable, retry later")]
    Unavailable(String),
    /// Past `POLLER_MAX_STREAMS`: refused rather than grow without bound.
    #[error("this poller serves its maximum of {0} streams; retry later or on another replica")]
    TooManyStreams(usize),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for WatchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => WatchError::Unavailable(detail),
            StoreError::NotFound => WatchError::NotFound,
            StoreError::Conflict(detail) | StoreError::Corrupt(detail) => {
                WatchError::Internal(detail)
            }
        }
    }
}

impl From<WatchError> for tonic::Status {
    fn from(e: WatchError) -> Self {
        let code = match &e {
            WatchError::InvalidArgument(_) => tonic::Code::InvalidArgument,
            WatchError::NotFound => tonic::Code::NotFound,
            WatchError::TooManyStreams(_) => tonic::Code::ResourceExhausted,
            WatchError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                tonic::Code::Unavailable
            }
            WatchError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                tonic::Code::Internal
            }
        };
        tonic::Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_detail_is_logged_not_sent() {
        let status: tonic::Status =
            WatchError::from(StoreError::Unavailable("password=hunter2 host=db".into())).into();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn a_bad_order_number_names_the_field() {
        let status: tonic::Status =
            WatchError::from(ValidationError::new("out_trade_no", "is too long")).into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("out_trade_no"));
    }
}
