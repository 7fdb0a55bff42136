//! [`PlatformKeys`]: WeChat's verifying keys per v3 merchant account (by the
//! mch_id that signs requests), for everything that believes WeChat — the
//! client's answers and the gateway's notifications. A merchant's keys are
//! its configured WeChat Pay public key (if any) plus every unexpired platform
//! certificate, accepted by whichever serial a message names, so a merchant
//! switching modes accepts both.
//!
//! Certificates live in the database, so every replica shares them and a
//! restart does not depend on WeChat being up. They are loaded at start,
//! downloaded (`GET /v3/certificates`) when a certificate-mode merchant has
//! none, again every 12 h (unless another replica just did), and when a
//! message names a serial nobody knows — at most once a minute per merchant,
//! one download at a time however many messages ask. What core's precheck
//! refuses (`WECHATPAY/SIGNTEST/` probes, stale timestamps, missing headers)
//! is refused before any key is looked up, so it never causes a download.
//!
//! It owns no protocol: verification and decryption are core's.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use wxpay_core::wechat::{
    v3::{
        models::Certificates, verify, Apiv3Key, KeyError, MerchantSigner, SignedHeaders,
        VerifyError, WechatKey, WechatKeys,
    },
    MerchantEntry,
};
use wxpay_store::{PlatformCertificate, Store, StoreError};

use crate::{
    http::{BuildError, Signed, V3Http},
    ResponseVerifier, V3Client, V3Error,
};

/// The path WeChat lists a merchant's platform certificates at.
pub const CERTIFICATES_PATH: &str = "/v3/certificates";

/// When certificates are downloaded again.
#[derive(Debug, Clone)]
pub struct KeysOptions {
    /// A merchant's certificates are downloaded again once they are this old
    /// (by the newest `fetched_at` any replica stored).
    pub refresh_every: Duration,
    /// The least time between two refreshes of one merchant for a serial it
    /// does not know (and between retries of a failed first download); also
    /// how often the background task looks.
    pub min_refresh_interval: Duration,
}

impl Default for KeysOptions {
    fn default() -> Self {
        Self {
            refresh_every: Duration::from_secs(12 * 3600),
            min_refresh_interval: Duration::from_secs(60),
        }
    }
}

/// Why a merchant's certificates could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("no v3 merchant has mch_id {0}")]
    UnknownMerchant(String),
    /// The download failed, or its answer was not trusted
    /// ([`V3Error::Untrusted`]): nothing of it was kept.
    #[error("downloading the platform certificates failed: {0}")]
    Download(#[from] V3Error),
    /// An entry did not open under the APIv3 key or is not the certificate it
    /// names: nothing of the download was kept.
    #[error("a downloaded platform certificate was refused: {0}")]
    Certificate(#[from] KeyError),
    /// The certificates are in use in this process but could not be read or
    /// kept in the database.
    #[error("the platform certificates could not be read or kept: {0}")]
    Store(#[from] StoreError),
}

/// One merchant account's keys and refresh state.
struct MerchantKeys {
    mch_id: String,
    signer: MerchantSigner,
    apiv3_key: Apiv3Key,
    /// Whether a WeChat Pay public key is configured: such a merchant does
    /// not download at start, only when a message names an unknown serial.
    has_public_key: bool,
    /// What verifies now. Replaced whole (readers clone the `Arc` and verify
    /// outside the lock); written only under `refresh`.
    current: RwLock<Arc<WechatKeys>>,
    /// Single flight: whoever holds it is the one refreshing this merchant.
    refresh: tokio::sync::Mutex<RefreshState>,
}

#[derive(Default)]
struct RefreshState {
    /// The last download attempt of any kind: a certificate-mode merchant
    /// without a certificate retries at most this often.
    last_attempt: Option<Instant>,
    /// The last refresh a message's unknown serial caused: at most one a
    /// minute, so forged serials cannot make us hammer WeChat or the
    /// database. Counted apart from the start-up and 12-hourly downloads, so
    /// a rotation just after start is still picked up at once.
    last_unknown: Option<Instant>,
    /// The newest `fetched_at` known (ours or another replica's).
    last_fetched: Option<DateTime<Utc>>,
}

impl MerchantKeys {
    fn current(&self) -> Arc<WechatKeys> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, keys: WechatKeys) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
    }

    fn has_certificates(&self) -> bool {
        self.current().iter().any(|k| k.validity().is_some())
    }
}

/// WeChat's keys for every v3 merchant of a deployment. Share it as an `Arc`.
pub struct PlatformKeys {
    store: Arc<dyn Store>,
    http: V3Http,
    merchants: HashMap<String, Arc<MerchantKeys>>,
    options: KeysOptions,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.merchants.keys().collect();
        ids.sort();
        f.debug_struct("PlatformKeys")
            .field("merchants", &ids)
            .field("options", &self.options)
            .finish()
    }
}

impl PlatformKeys {
    /// The keys of the v3 merchants among `entries` (v2 ones are skipped;
    /// entries sharing an mch_id — a provider's sub merchants — share its
    /// keys): each one's stored certificates are loaded, and a merchant
    /// without a public key and without a stored certificate downloads its
    /// certificates now. A failed download is logged, not fatal: the
    /// background task ([`Self::spawn_refresh`]) tries again every
    /// `min_refresh_interval`. A database that cannot be read is fatal.
    pub async fn start(
        store: Arc<dyn Store>,
        http: V3Http,
        entries: &[MerchantEntry],
        options: KeysOptions,
    ) -> Result<Arc<Self>, StoreError> {
        let mut merchants: HashMap<String, Arc<MerchantKeys>> = HashMap::new();
        for entry in entries {
            let Some(v3) = &entry.v3 else { continue };
            let mch_id = &entry.merchant.mch_id;
            if merchants.contains_key(mch_id) {
                continue;
            }
            // Every table of the account (a provider's sub merchants) signs
            // with the same key; any public key one of them names counts.
            let public_keys: Vec<WechatKey> = entries
                .iter()
                .filter(|e| &e.merchant.mch_id == mch_id)
                .filter_map(|e| e.v3.as_ref()?.public_key.clone())
                .collect();
            merchants.insert(
                mch_id.clone(),
                Arc::new(MerchantKeys {
                    mch_id: mch_id.clone(),
                    signer: v3.signer.clone(),
                    apiv3_key: v3.apiv3_key.clone(),
                    has_public_key: !public_keys.is_empty(),
                    current: RwLock::new(Arc::new(WechatKeys::new(public_keys))),
                    refresh: tokio::sync::Mutex::new(RefreshState::default()),
                }),
            );
        }
        let keys = Arc::new(Self {
            store,
            http,
            merchants,
            options,
        });
        for m in keys.merchants.values() {
            let mut state = m.refresh.lock().await;
            keys.reload(m, &mut state).await?;
            if !m.has_public_key && !m.has_certificates() {
                if let Err(e) = keys.download_and_keep(m, &mut state).await {
                    tracing::warn!(mch_id = %m.mch_id, error = %e,
                        "no platform certificate stored and none could be downloaded; \
                         this merchant's answers cannot be verified until one is");
                }
            }
        }
        Ok(keys)
    }

    /// A client for `entry` whose answers these keys verify.
    pub fn client(self: &Arc<Self>, entry: MerchantEntry) -> Result<V3Client, BuildError> {
        V3Client::new(self.http.clone(), entry, self.clone())
    }

    /// Verifies a message for `mch_id` (a client's answer): the headers over
    /// the raw `body` bytes, with the merchant's keys. When the serial is
    /// unknown, the keys are refreshed (the database first, then WeChat; at
    /// most once a minute per merchant, one refresh however many ask) and
    /// the message is verified once more.
    pub async fn verify(
        &self,
        mch_id: &str,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        let serial = verify::precheck(headers, Utc::now())?;
        let Some(m) = self.merchants.get(mch_id) else {
            return Err(unknown(serial));
        };
        match verify::verify(headers, body, &m.current(), Utc::now()) {
            Err(VerifyError::UnknownSerial(_)) if self.refresh_for(m, serial).await => {
                verify::verify(headers, body, &m.current(), Utc::now())
            }
            other => other,
        }
    }

    /// Verifies a message whose merchant is not known before it is believed
    /// (a v3 notification: its merchant is inside the encrypted resource).
    /// Returns the mch_ids of the merchants whose key named by the serial
    /// verifies it (usually one; the caller opens the resource with their
    /// APIv3 keys). An unknown serial refreshes every merchant, each under
    /// its own once-a-minute limit, and is tried once more.
    pub async fn verify_any(
        &self,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<Vec<String>, VerifyError> {
        let serial = verify::precheck(headers, Utc::now())?;
        let holders = |now| -> Vec<&Arc<MerchantKeys>> {
            self.merchants
                .values()
                .filter(|m| m.current().get(serial, now).is_some())
                .collect()
        };
        let mut candidates = holders(Utc::now());
        if candidates.is_empty() {
            futures::future::join_all(self.merchants.values().map(|m| self.refresh_for(m, serial)))
                .await;
            candidates = holders(Utc::now());
        }
        if candidates.is_empty() {
            return Err(unknown(serial));
        }
        let mut verified: Vec<String> = candidates
            .into_iter()
            .filter(|m| verify::verify(headers, body, &m.current(), Utc::now()).is_ok())
            .map(|m| m.mch_id.clone())
            .collect();
        verified.sort();
        if verified.is_empty() {
            return Err(VerifyError::BadSignature);
        }
        Ok(verified)
    }

    /// The WeChat key to name in a request's `Wechatpay-Serial`: the public
    /// key's id when there is one, else the certificate valid the longest.
    pub fn preferred_serial(&self, mch_id: &str) -> Option<String> {
        let m = self.merchants.get(mch_id)?;
        m.current().preferred(Utc::now()).map(|k| k.id().to_owned())
    }

    /// The keys `mch_id` verifies with now.
    pub fn keys(&self, mch_id: &str) -> Option<Arc<WechatKeys>> {
        self.merchants.get(mch_id).map(|m| m.current())
    }

    /// The mch_ids of the v3 merchants these keys are for, sorted.
    pub fn merchants(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.merchants.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Downloads `mch_id`'s certificates now (waiting for a refresh already
    /// running), whatever the once-a-minute limit says: for an operator, or a
    /// merchant that must switch keys at once.
    pub async fn refresh_now(&self, mch_id: &str) -> Result<(), RefreshError> {
        let m = self
            .merchants
            .get(mch_id)
            .ok_or_else(|| RefreshError::UnknownMerchant(mch_id.to_owned()))?;
        let mut state = m.refresh.lock().await;
        self.download_and_keep(m, &mut state).await
    }

    /// Runs the refresh loop until `shutdown`: every `min_refresh_interval`
    /// each merchant drops its expired certificates, and one that holds
    /// certificates whose newest download is `refresh_every` old (or a
    /// certificate-mode merchant still without any) refreshes — from the
    /// database when another replica has just downloaded, else from WeChat.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            // interval() refuses a zero period.
            let period = keys
                .options
                .min_refresh_interval
                .max(Duration::from_millis(10));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; start just loaded
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                for m in keys.merchants.values() {
                    keys.refresh_if_due(m).await;
                }
            }
        })
    }

    async fn refresh_if_due(&self, m: &MerchantKeys) {
        let mut state = m.refresh.lock().await;
        let now = Utc::now();
        let mut keys = (*m.current()).clone();
        keys.drop_expired(now);
        m.replace(keys);
        if !self.due(m, &state, now) {
            return;
        }
        // Another replica may have downloaded lately: its rows are enough.
        if let Err(e) = self.reload(m, &mut state).await {
            tracing::warn!(mch_id = %m.mch_id, error = %e, "platform certificates could not be read");
        }
        if !self.due(m, &state, now) {
            return;
        }
        if let Err(e) = self.download_and_keep(m, &mut state).await {
            tracing::warn!(mch_id = %m.mch_id, error = %e, "platform certificates could not be refreshed");
        }
    }

    fn due(&self, m: &MerchantKeys, state: &RefreshState, now: DateTime<Utc>) -> bool {
        if m.has_certificates() {
            let refresh_every = chrono::Duration::from_std(self.options.refresh_every)
                .unwrap_or(chrono::Duration::MAX);
            state
                .last_fetched
                .is_none_or(|t| now.signed_duration_since(t) >= refresh_every)
        } else {
            // Certificate mode without a certificate: keep trying, within the limit.
            !m.has_public_key
                && state
                    .last_attempt
                    .is_none_or(|t| t.elapsed() >= self.options.min_refresh_interval)
        }
    }

    /// The unknown-serial refresh: true when `serial` is known afterwards.
    async fn refresh_for(&self, m: &MerchantKeys, serial: &str) -> bool {
        // A public key is configured, never downloaded: no download can
        // bring an unknown `PUB_KEY_ID_…`.
        if serial.starts_with("PUB_KEY_ID_") {
            return false;
        }
        let mut state = m.refresh.lock().await;
        if m.current().get(serial, Utc::now()).is_some() {
            return true; // the refresh we waited for brought it
        }
        if state
            .last_unknown
            .is_some_and(|t| t.elapsed() < self.options.min_refresh_interval)
        {
            return false;
        }
        state.last_unknown = Some(Instant::now());
        tracing::info!(mch_id = %m.mch_id, serial, "a message names an unknown WeChat serial; refreshing");
        if let Err(e) = self.reload(m, &mut state).await {
            tracing::warn!(mch_id = %m.mch_id, error = %e, "platform certificates could not be read");
        }
        if m.current().get(serial, Utc::now()).is_none() {
            if let Err(e) = self.download_and_keep(m, &mut state).await {
                tracing::warn!(mch_id = %m.mch_id, error = %e, "platform certificates could not be refreshed");
            }
        }
        m.current().get(serial, Utc::now()).is_some()
    }

    /// Adds the stored certificates to the merchant's keys. Not an attempt
    /// in the once-a-minute sense: it asks our database, not WeChat.
    async fn reload(&self, m: &MerchantKeys, state: &mut RefreshState) -> Result<(), StoreError> {
        let now = Utc::now();
        let rows = self.store.platform_certificates(&m.mch_id, now).await?;
        let mut keys = (*m.current()).clone();
        for row in &rows {
            match WechatKey::from_certificate_pem(&row.certificate_pem) {
                Ok(k) if k.id().eq_ignore_ascii_case(&row.serial_no) => keys.insert(k),
                _ => tracing::warn!(mch_id = %m.mch_id, serial = %row.serial_no,
                    "a stored platform certificate does not read back as itself; ignored"),
            }
            state.last_fetched = state.last_fetched.max(Some(row.fetched_at));
        }
        keys.drop_expired(now);
        m.replace(keys);
        Ok(())
    }

    /// Downloads, checks and keeps the merchant's certificates (in use at
    /// once, then stored for the other replicas).
    async fn download_and_keep(
        &self,
        m: &MerchantKeys,
        state: &mut RefreshState,
    ) -> Result<(), RefreshError> {
        state.last_attempt = Some(Instant::now());
        let fresh = self.download(m).await?;
        let now = Utc::now();
        let mut keys = (*m.current()).clone();
        for k in &fresh {
            keys.insert(k.clone());
        }
        keys.drop_expired(now);
        m.replace(keys);
        state.last_fetched = Some(now);
        tracing::info!(mch_id = %m.mch_id,
            serials = ?fresh.iter().map(WechatKey::id).collect::<Vec<_>>(),
            "platform certificates downloaded");
        let rows: Vec<PlatformCertificate> = fresh
            .iter()
            .filter_map(|k| {
                let (not_before, not_after) = k.validity()?;
                Some(PlatformCertificate {
                    mch_id: m.mch_id.clone(),
                    serial_no: k.id().to_owned(),
                    certificate_pem: k.certificate_pem()?.to_owned(),
                    not_before,
                    not_after,
                    fetched_at: now,
                })
            })
            .collect();
        self.store
            .save_platform_certificates(&m.mch_id, &rows, now)
            .await?;
        Ok(())
    }

    /// `GET /v3/certificates`, every entry opened and the answer verified.
    async fn download(&self, m: &MerchantKeys) -> Result<Vec<WechatKey>, RefreshError> {
        let known = m.current();
        let serial = known.preferred(Utc::now()).map(|k| k.id().to_owned());
        let answer = self
            .http
            .send_signed(&Signed {
                signer: &m.signer,
                mch_id: &m.mch_id,
                method: reqwest::Method::GET,
                url: self.http.url(CERTIFICATES_PATH)?,
                body: "",
                wechatpay_serial: serial.as_deref(),
                max_bytes: self.http.options().max_response_bytes,
            })
            .await?;
        // This one answer is read before it is verified, because the keys
        // that verify it may be inside it (a first download, a rotation).
        // That is safe: each certificate is sealed under the APIv3 key, which
        // only WeChat and the merchant hold, so one that opens is WeChat's;
        // then the answer's signature must verify under one of them or under
        // a key already trusted, or nothing of it is kept.
        let list: Certificates = serde_json::from_slice(&answer.body)
            .map_err(|e| V3Error::BadReply(format!("not a certificate list: {e}")))?;
        let now = Utc::now();
        let mut fresh = Vec::with_capacity(list.data.len());
        for entry in &list.data {
            let key = WechatKey::from_certificate_entry(entry, &m.apiv3_key)?;
            // Kept: everything not yet expired, a certificate not yet valid
            // included (WeChat lists the next one before it signs with it).
            if key.validity().is_some_and(|(_, until)| now < until) {
                fresh.push(key);
            }
        }
        let mut candidates = (*known).clone();
        for k in &fresh {
            candidates.insert(k.clone());
        }
        verify::verify(&answer.signed_headers(), &answer.body, &candidates, now).map_err(|e| {
            tracing::warn!(mch_id = %m.mch_id, error = %e,
                "the certificate download failed verification: nothing of it kept");
            V3Error::Untrusted(e)
        })?;
        Ok(fresh)
    }
}

#[async_trait]
impl ResponseVerifier for PlatformKeys {
    async fn verify(
        &self,
        mch_id: &str,
        headers: &SignedHeaders<'_>,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        PlatformKeys::verify(self, mch_id, headers, body).await
    }

    fn preferred_serial(&self, mch_id: &str) -> Option<String> {
        PlatformKeys::preferred_serial(self, mch_id)
    }
}

fn unknown(serial: &str) -> VerifyError {
    VerifyError::UnknownSerial(serial.chars().take(64).collect())
}
