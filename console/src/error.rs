//! The console's errors and the one place they become HTTP statuses. A person
//! sees what they can act on; internal detail goes to the log only.

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use wxpay_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("not found")]
    NotFound,
    /// A form or query field a person can correct; the message names it.
    #[error("{0}")]
    BadRequest(String),
    /// Signed in, but not allowed (a viewer acting, a missing CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// The database or payment-service cannot answer now; trying again may work.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a page that could not be rendered.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "console: the database did not answer");
        ConsoleError::Unavailable("the database is not answering; try again in a moment".into())
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(e: askama::Error) -> Self {
        ConsoleError::Internal(format!("template: {e}"))
    }
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ConsoleError::Internal(detail) => {
                tracing::error!(detail, "console: internal error");
                "Something went wrong on our side; it has been logged.".to_owned()
            }
            other => other.to_string(),
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} · wxpay console</title>\
             <style>body{{font:15px system-ui,sans-serif;margin:3rem auto;max-width:40rem;color:#1d2433}}a{{color:#0a7b4f}}</style></head>\
             <body><h1>{code}</h1><p class=\"error\">{msg}</p><p><a href=\"/\">Dashboard</a></p></body></html>",
            code = status.as_u16(),
            msg = crate::format::escape(&message),
        );
        (status, Html(body)).into_response()
    }
}
