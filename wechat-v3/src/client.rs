//! [`V3Client`]: one v3 merchant's calls. Every request is signed with the
//! merchant's API key and names, in `Wechatpay-Serial`, the WeChat key it
//! verifies with; every 2xx answer is verified (the `Wechatpay-*` headers over
//! the raw body bytes, through a [`ResponseVerifier`]) before a byte of it is
//! parsed. An answer that fails is [`V3Error::Untrusted`], logged, and nothing
//! of it is returned. Endpoint bodies are core's models; what the endpoints
//! mean (placing, querying, closing, refunds) is the callers' business.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::Method;
use serde::{de::DeserializeOwned, Serialize};
use wxpay_core::wechat::{
    v3::{verify, MerchantSigner, SignedHeaders, VerifyError, WechatKeys},
    MerchantEntry,
};

use crate::{
    http::{BuildError, Signed, V3Http},
    V3Error,
};

/// What verifies WeChat's answers for a merchant, by its mch_id. Answers
/// are verified over their raw bytes; an implementation may refresh its keys
/// when an answer names a serial it does not know (the platform-certificate
/// manager does), so it is async.
#[async_trait]
pub trait ResponseVerifier: Send + Sync + 'static {
    /// Whether `body` is what WeChat signed in `headers` for `mch_id`.
    async fn verify(
        &self,
        mch_id: &str,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), VerifyError>;

    /// The WeChat key to name in a request's `Wechatpay-Serial` (the public
    /// key's `PUB_KEY_ID_…` in public-key mode), if one is known.
    fn preferred_serial(&self, mch_id: &str) -> Option<String>;
}

/// A fixed set of keys (a merchant in public-key mode, or a test): verifies
/// with core's rules and never refreshes.
#[async_trait]
impl ResponseVerifier for WechatKeys {
    async fn verify(
        &self,
        _mch_id: &str,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        verify::verify(headers, body, self, Utc::now())
    }

    fn preferred_serial(&self, _mch_id: &str) -> Option<String> {
        self.preferred(Utc::now()).map(|k| k.id().to_owned())
    }
}

/// A verified 2xx answer: its status and its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Verified {
    /// The body as the endpoint's JSON model.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, V3Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| V3Error::BadReply(format!("not the JSON expected: {e}")))
    }
}

/// One v3 merchant's client. Cheap to clone.
#[derive(Clone)]
pub struct V3Client {
    http: V3Http,
    entry: MerchantEntry,
    signer: MerchantSigner,
    keys: Arc<dyn ResponseVerifier>,
}

impl std::fmt::Debug for V3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V3Client")
            .field("base", &self.http.base())
            .field("merchant", &self.entry.name)
            .field("mch_id", &self.entry.merchant.mch_id)
            .field("signer", &self.signer)
            .finish()
    }
}

impl V3Client {
    /// The client of `entry`, which must be a v3 merchant, over `http`,
    /// verifying answers with `keys`.
    pub fn new(
        http: V3Http,
        entry: MerchantEntry,
        keys: Arc<dyn ResponseVerifier>,
    ) -> Result<Self, BuildError> {
        let signer = entry
            .v3
            .as_ref()
            .map(|v3| v3.signer.clone())
            .ok_or_else(|| BuildError::NotV3(entry.name.clone()))?;
        Ok(Self {
            http,
            entry,
            signer,
            keys,
        })
    }

    /// The merchant this client acts for.
    pub fn entry(&self) -> &MerchantEntry {
        &self.entry
    }

    /// The account that signs (the provider's in service-provider mode).
    pub fn mch_id(&self) -> &str {
        &self.entry.merchant.mch_id
    }

    /// `GET path_and_query`, the answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, V3Error> {
        self.send(Method::GET, path_and_query, None).await?.json()
    }

    /// `POST path` with `body` as JSON, the answer as `T`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, V3Error> {
        let json = to_json(body)?;
        self.send(Method::POST, path, Some(&json)).await?.json()
    }

    /// `POST path` with `body` as JSON for an endpoint that answers 204 with
    /// no content (closing an order). The empty answer is verified too.
    pub async fn post_no_content<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(), V3Error> {
        let json = to_json(body)?;
        self.send(Method::POST, path, Some(&json)).await.map(drop)
    }

    /// Sends one signed request and returns the verified answer, unparsed.
    #[tracing::instrument(skip_all, fields(mch_id = %self.entry.merchant.mch_id, %method, path = path_and_query))]
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        json_body: Option<&str>,
    ) -> Result<Verified, V3Error> {
        let url = self.http.url(path_and_query)?;
        let serial = self.keys.preferred_serial(self.mch_id());
        let answer = self
            .http
            .send_signed(&Signed {
                signer: &self.signer,
                mch_id: self.mch_id(),
                method,
                url,
                body: json_body.unwrap_or_default(),
                wechatpay_serial: serial.as_deref(),
                max_bytes: self.http.options().max_response_bytes,
            })
            .await?;
        if let Err(e) = self
            .keys
            .verify(self.mch_id(), &answer.signed_headers(), &answer.body)
            .await
        {
            tracing::warn!(error = %e, status = answer.status,
                "WeChat Pay's answer failed verification: not trusted, nothing of it used");
            return Err(V3Error::Untrusted(e));
        }
        Ok(Verified {
            status: answer.status,
            body: answer.body,
        })
    }

    /// A signed `GET` of a file WeChat hands out by URL (a bill's
    /// `download_url`), which must be on the API's origin. WeChat does not
    /// sign this answer, so it is returned unverified: the caller must check
    /// it against the signed `hash_value` it came with before using it.
    #[tracing::instrument(skip_all, fields(mch_id = %self.entry.merchant.mch_id))]
    pub async fn download(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, V3Error> {
        let url = self.http.same_origin(url)?;
        let answer = self
            .http
            .send_signed(&Signed {
                signer: &self.signer,
                mch_id: self.mch_id(),
                method: Method::GET,
                url,
                body: "",
                wechatpay_serial: None,
                max_bytes,
            })
            .await?;
        Ok(answer.body)
    }
}

fn to_json<B: Serialize + ?Sized>(body: &B) -> Result<String, V3Error> {
    serde_json::to_string(body)
        .map_err(|e| V3Error::Request(format!("the body does not serialize: {e}")))
}
