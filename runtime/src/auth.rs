//! The bearer-token check both gRPC servers apply when `API_TOKEN` is set.
//! Health checks stay open so orchestrators can probe without the token.

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// A tonic interceptor: `authorization: Bearer <API_TOKEN>` or UNAUTHENTICATED.
#[derive(Clone)]
pub struct BearerAuth {
    token: Option<std::sync::Arc<SecretString>>,
}

impl BearerAuth {
    pub fn new(token: Option<SecretString>) -> Self {
        Self {
            token: token.map(std::sync::Arc::new),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes())) && !given.is_empty()
        {
            Ok(req)
        } else {
            Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token",
            ))
        }
    }
}
