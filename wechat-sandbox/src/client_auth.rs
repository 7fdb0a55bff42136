//! Who called, as far as TLS can tell, and WeChat's rule for `/secapi/`: only
//! with the API client certificate of the account the request's mch_id names. The TLS listener puts a
//! [`ClientAuth`] on every request; the plain listener puts none. The guard
//! refuses before anything else runs, so a refused call takes no armed fault
//! and changes nothing.

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use rustls::pki_types::CertificateDer;
use wxpay_core::wechat::{
    xml::{self, MAX_XML_BYTES},
    Fields,
};

use crate::{protocol, state::AppState, wechat_api::xml_response};

/// What the TLS handshake established about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// TLS, without a client certificate.
    Anonymous,
    /// TLS, with a client certificate that chains to the sandbox's CA (rustls
    /// refuses the handshake for any other), and its subject's CN.
    Verified { common_name: Option<String> },
}

impl ClientAuth {
    /// From the chain rustls verified (end-entity first).
    pub(crate) fn of(peer_certificates: Option<&[CertificateDer<'_>]>) -> Self {
        match peer_certificates.and_then(|chain| chain.first()) {
            None => ClientAuth::Anonymous,
            Some(der) => ClientAuth::Verified {
                common_name: common_name(der),
            },
        }
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// What the live API answers where the rule is broken.
///
/// - No certificate (or plain HTTP, which the real host does not even serve):
///   api.mch.weixin.qq.com answers with nginx's "400 No required SSL certificate
///   was sent" page (WxJava #3740, weixin-python #88). The sandbox keeps those
///   words but says them the way every WeChat API refusal is said, an XML
///   `return_code FAIL`, which a client reports as a refusal and does not retry.
/// - A certificate of another merchant (under WeChat's own CA): XML `return_code
///   FAIL`, `return_msg` "certificate not match" (supersheep/wechat-pay #43).
/// - A certificate from another CA never gets this far: the handshake fails
///   (the live API answers nginx's "400 The SSL certificate error").
const NO_CERTIFICATE: &str = "No required SSL certificate was sent";
const NOT_THIS_MERCHANT: &str = "certificate not match";

/// The `/secapi/` guard: the request goes on only with a verified certificate
/// whose CN is the mch_id the request names (or, for a body without a
/// readable mch_id, which the endpoint then refuses, a hosted account's).
/// It reads the body to find that mch_id and hands it on unchanged.
pub(crate) async fn require_merchant_certificate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let common_name = match request.extensions().get::<ClientAuth>() {
        None | Some(ClientAuth::Anonymous) => None,
        Some(ClientAuth::Verified { common_name }) => Some(common_name.clone()),
    };
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    // One byte more than the XML limit: the endpoint then refuses it as too large.
    let bytes = match axum::body::to_bytes(body, MAX_XML_BYTES + 1).await {
        Ok(bytes) => bytes,
        Err(_) => return refuse(&path, "XML_FORMAT_ERROR"),
    };
    let named = xml::decode(&bytes)
        .ok()
        .and_then(|fields| fields.get("mch_id").cloned());
    let refusal = match common_name {
        None => Some(NO_CERTIFICATE),
        Some(cn) => {
            let matches = match (&named, cn) {
                (Some(mch_id), Some(cn)) => *mch_id == cn,
                (None, Some(cn)) => state.accounts().get(&cn).is_some(),
                (_, None) => false,
            };
            (!matches).then_some(NOT_THIS_MERCHANT)
        }
    };
    match refusal {
        None => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Some(return_msg) => refuse(&path, return_msg),
    }
}

fn refuse(path: &str, return_msg: &str) -> Response {
    tracing::info!(
        path,
        return_msg,
        "secapi request refused: not the client certificate of the request's merchant"
    );
    xml_response(protocol::to_xml(&Fields::from([
        ("return_code".to_owned(), "FAIL".to_owned()),
        ("return_msg".to_owned(), return_msg.to_owned()),
    ])))
}
