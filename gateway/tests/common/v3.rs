//! v3 test support: merchants in both of WeChat's key modes, WeChat's side of
//! a notification (the resource sealed with core's AES-256-GCM under an APIv3
//! key, the raw body signed with core's RSA under WeChat's test key), and a
//! key source that stands in for the platform-certificate manager. The keys
//! are core's test vectors (core/tests/testdata/v3, made with openssl).

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use async_trait::async_trait;
use gateway::wechat_keys::KeySource;
use wxpay_core::{
    domain::Order,
    wechat::{
        v3::{
            models::{
                EncryptedResource, Notification, Payer, RefundAmount, RefundResource, Transaction,
                TransactionAmount,
            },
            verify, Apiv3Key, MerchantSigner, WechatKey, WechatKeys, SCHEME,
        },
        ApiKey, Merchant, MerchantEntry, SignType, V3Merchant,
    },
};

use super::TestApp;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/testdata/v3/");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).expect("core's v3 test vector")
}

/// The APIv3 key of the v3 test merchants (and of the provider's sub-merchants).
pub const APIV3: &str = "0123456789abcdefABCDEFGHijklmnop";
pub const OTHER_APIV3: &str = "0123456789abcdefABCDEFGHijklmnoq";
/// `shop-v3`: direct, in public-key mode.
pub const V3_NAME: &str = "shop-v3";
pub const V3_APP_ID: &str = "wx3333333333333333";
pub const V3_MCH_ID: &str = "1900000300";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0119000003002025";
/// The platform certificate's serial (platform_cert.pem).
pub const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// `cert-v3`: direct, in platform-certificate mode (no public key configured).
pub const CERT_NAME: &str = "cert-v3";
pub const CERT_APP_ID: &str = "wx4444444444444444";
pub const CERT_MCH_ID: &str = "1900000400";
/// A v3 service provider and two of its sub-merchants (one APIv3 key for all).
pub const SP_APP_ID: &str = "wx5555555555555555";
pub const SP_MCH_ID: &str = "1900000500";

pub fn apiv3(s: &str) -> Apiv3Key {
    Apiv3Key::parse(s).expect("32 bytes")
}

/// WeChat Pay's public key (its private half signs, see [`wechat_pubkey_signer`]).
pub fn public_key() -> WechatKey {
    WechatKey::from_public_key_pem(PUB_KEY_ID, &read("merchant_pub.pem")).expect("public key")
}

pub fn platform_cert() -> WechatKey {
    WechatKey::from_certificate_pem(
        &String::from_utf8(read("platform_cert.pem")).expect("PEM text"),
    )
    .expect("certificate")
}

/// WeChat's signer in public-key mode: the private half of [`public_key`].
pub fn wechat_pubkey_signer() -> MerchantSigner {
    MerchantSigner::from_pem(&read("merchant_key.pem"), PUB_KEY_ID).expect("key")
}

/// WeChat's signer in certificate mode: the platform certificate's key.
pub fn wechat_cert_signer() -> MerchantSigner {
    MerchantSigner::from_pem(&read("platform_key.pem"), CERT_SERIAL).expect("key")
}

fn v3_entry(
    name: &str,
    app_id: &str,
    mch_id: &str,
    public_key: Option<WechatKey>,
) -> MerchantEntry {
    MerchantEntry {
        v3: Some(V3Merchant {
            apiv3_key: apiv3(APIV3),
            signer: MerchantSigner::from_pem(&read("merchant_key.pem"), "3775B6A45ACD5888")
                .expect("merchant key"),
            public_key,
            private_key_path: "apiclient_key.pem".into(),
            public_key_path: None,
        }),
        ..MerchantEntry::direct(
            name,
            Merchant {
                app_id: app_id.into(),
                mch_id: mch_id.into(),
                // A v3 merchant without an APIv2 key: nobody holds this one.
                api_key: ApiKey::unguessable(),
            },
            SignType::Md5,
        )
    }
}

/// `shop-v3`, in public-key mode.
pub fn shop_v3() -> MerchantEntry {
    v3_entry(V3_NAME, V3_APP_ID, V3_MCH_ID, Some(public_key()))
}

/// `cert-v3`, in platform-certificate mode: its keys come from a [`KeySource`].
pub fn cert_v3() -> MerchantEntry {
    v3_entry(CERT_NAME, CERT_APP_ID, CERT_MCH_ID, None)
}

/// A sub-merchant `name` of the v3 provider, paid as `sub_mch_id` in `sub_app_id`.
pub fn sub_v3(name: &str, sub_mch_id: &str, sub_app_id: &str) -> MerchantEntry {
    MerchantEntry {
        sub_mch_id: Some(sub_mch_id.into()),
        sub_app_id: Some(sub_app_id.into()),
        ..v3_entry(name, SP_APP_ID, SP_MCH_ID, Some(public_key()))
    }
}

/// The decrypted resource of a successful payment of `order` to `merchant`,
/// as WeChat writes it (partner fields for a sub-merchant).
pub fn transaction(order: &Order, transaction_id: &str, merchant: &MerchantEntry) -> Transaction {
    let fen = order.total_fee.fen();
    let mut t = Transaction {
        out_trade_no: order.out_trade_no.to_string(),
        transaction_id: Some(transaction_id.to_owned()),
        trade_type: Some("JSAPI".into()),
        trade_state: "SUCCESS".into(),
        trade_state_desc: "支付成功".into(),
        bank_type: Some("OTHERS".into()),
        attach: Some(String::new()),
        success_time: Some("2024-01-02T15:04:05+08:00".into()),
        payer: Some(Payer {
            openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            sub_openid: None,
        }),
        amount: Some(TransactionAmount {
            total: fen,
            payer_total: Some(fen),
            currency: Some("CNY".into()),
            payer_currency: Some("CNY".into()),
        }),
        ..Transaction::default()
    };
    match &merchant.sub_mch_id {
        None => {
            t.appid = Some(merchant.merchant.app_id.clone());
            t.mchid = Some(merchant.merchant.mch_id.clone());
        }
        Some(sub) => {
            t.sp_appid = Some(merchant.merchant.app_id.clone());
            t.sp_mchid = Some(merchant.merchant.mch_id.clone());
            t.sub_mchid = Some(sub.clone());
            t.sub_appid = merchant.sub_app_id.clone();
        }
    }
    t
}

/// The envelope WeChat POSTs, with `resource` (any JSON) sealed under `key`.
pub fn envelope(event_type: &str, resource: &[u8], key: &Apiv3Key) -> Vec<u8> {
    envelope_of("transaction", event_type, resource, key)
}

/// The envelope of a `original_type` resource (`transaction`, `refund`).
pub fn envelope_of(
    original_type: &str,
    event_type: &str,
    resource: &[u8],
    key: &Apiv3Key,
) -> Vec<u8> {
    let sealed =
        EncryptedResource::seal(key, "fdasflkja484", original_type, original_type, resource)
            .expect("seals");
    serde_json::to_vec(&Notification {
        id: format!("EV-{}", ulid::Ulid::new()),
        create_time: "2024-01-02T15:04:05+08:00".into(),
        event_type: event_type.into(),
        resource_type: "encrypt-resource".into(),
        summary: "支付成功".into(),
        resource: sealed,
    })
    .expect("json")
}

/// A `TRANSACTION.SUCCESS` body for `t`, sealed under the test APIv3 key.
pub fn paid_body(t: &Transaction) -> Vec<u8> {
    envelope(
        "TRANSACTION.SUCCESS",
        &serde_json::to_vec(t).expect("json"),
        &apiv3(APIV3),
    )
}

/// The `Wechatpay-*` headers of one message.
#[derive(Debug, Clone)]
pub struct V3Headers {
    pub serial: String,
    pub signature: String,
    pub timestamp: String,
    pub nonce: String,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// WeChat's headers for `body`, signed by `signer` at `timestamp`.
pub fn sign_at(body: &[u8], signer: &MerchantSigner, timestamp: i64) -> V3Headers {
    let timestamp = timestamp.to_string();
    let nonce = format!("n{}", ulid::Ulid::new());
    let signature = signer
        .sign(&verify::message(&timestamp, &nonce, body))
        .expect("signs");
    V3Headers {
        serial: signer.serial_no().to_owned(),
        signature,
        timestamp,
        nonce,
    }
}

/// WeChat's headers for `body`, signed now in public-key mode.
pub fn signed_now(body: &[u8]) -> V3Headers {
    sign_at(body, &wechat_pubkey_signer(), now())
}

/// The decrypted resource of refund `out_refund_no` of `fen` on the paid
/// `order` of `merchant`, in `refund_status`, as WeChat writes it.
pub fn refund_resource(
    order: &Order,
    out_refund_no: &str,
    fen: i64,
    refund_status: &str,
    merchant: &MerchantEntry,
) -> RefundResource {
    let mut r = RefundResource {
        out_trade_no: order.out_trade_no.to_string(),
        transaction_id: order.transaction_id.clone().unwrap_or_default(),
        out_refund_no: out_refund_no.to_owned(),
        refund_id: format!("5030{out_refund_no}"),
        refund_status: refund_status.to_owned(),
        success_time: (refund_status == "SUCCESS").then(|| "2024-01-03T10:00:00+08:00".into()),
        user_received_account: Some("招商银行信用卡0403".into()),
        amount: RefundAmount {
            refund: fen,
            total: order.total_fee.fen(),
            payer_total: Some(order.total_fee.fen()),
            payer_refund: Some(fen),
            currency: None,
        },
        ..RefundResource::default()
    };
    match &merchant.sub_mch_id {
        None => r.mchid = Some(merchant.merchant.mch_id.clone()),
        Some(sub) => {
            r.sp_mchid = Some(merchant.merchant.mch_id.clone());
            r.sub_mchid = Some(sub.clone());
        }
    }
    r
}

/// A `REFUND.*` body announcing `r` (`event_type` as given), sealed under
/// the test APIv3 key.
pub fn refund_body(event_type: &str, r: &RefundResource) -> Vec<u8> {
    envelope_of(
        "refund",
        event_type,
        &serde_json::to_vec(r).expect("json"),
        &apiv3(APIV3),
    )
}

impl TestApp {
    /// `POST /wechat/v3/pay/notify` with `headers` and `body` as given.
    pub async fn notify_v3(&self, headers: &V3Headers, body: Vec<u8>) -> (u16, String) {
        self.post_v3("/wechat/v3/pay/notify", headers, body).await
    }

    /// `POST /wechat/v3/refund/notify` with `headers` and `body` as given.
    pub async fn refund_notify_v3(&self, headers: &V3Headers, body: Vec<u8>) -> (u16, String) {
        self.post_v3("/wechat/v3/refund/notify", headers, body)
            .await
    }

    /// A v3 notification to `path` with `headers` and `body` as given.
    pub async fn post_v3(&self, path: &str, headers: &V3Headers, body: Vec<u8>) -> (u16, String) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("wechatpay-serial", &headers.serial)
            .header("wechatpay-signature", &headers.signature)
            .header("wechatpay-timestamp", &headers.timestamp)
            .header("wechatpay-nonce", &headers.nonce)
            .header("wechatpay-signature-type", SCHEME)
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.text().await.expect("reply body"))
    }

    /// `wxpay_gateway_refused_total{kind="pay_v3",reason=…}`, 0 when absent.
    pub async fn refused_v3(&self, reason: &str) -> u64 {
        self.refused("pay_v3", reason).await
    }

    /// `wxpay_gateway_refused_total{kind=…,reason=…}`, 0 when absent.
    pub async fn refused(&self, kind: &str, reason: &str) -> u64 {
        let (_, text) = self.metrics().await;
        let series = format!("wxpay_gateway_refused_total{{kind=\"{kind}\",reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().expect("a count"))
    }
}

/// What a v3 refusal says: `{"code":"FAIL","message":…}`.
pub fn fail_code(reply: &str) -> String {
    serde_json::from_str::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<not a v3 reply: {reply}>"))
}

/// `cert` as the row a replica keeps after downloading it for `mch_id`.
pub fn stored(mch_id: &str, cert: &WechatKey) -> wxpay_store::PlatformCertificate {
    let (not_before, not_after) = cert.validity().expect("a certificate");
    wxpay_store::PlatformCertificate {
        mch_id: mch_id.to_owned(),
        serial_no: cert.id().to_owned(),
        certificate_pem: cert.certificate_pem().expect("its PEM").to_owned(),
        not_before,
        not_after,
        fetched_at: chrono::Utc::now(),
    }
}

/// A stand-in for the platform-certificate manager: holds `keys` for
/// `cert-v3`, and on a refresh adds `pending` (a certificate WeChat rotated
/// in) when there is one. Counts refreshes.
#[derive(Default)]
pub struct TestKeySource {
    pub keys: std::sync::Mutex<WechatKeys>,
    pub pending: std::sync::Mutex<Option<WechatKey>>,
    pub refreshes: AtomicUsize,
    pub offline: AtomicBool,
}

#[async_trait]
impl KeySource for TestKeySource {
    fn keys(&self, merchant: &MerchantEntry) -> Arc<WechatKeys> {
        let mut keys = self.keys.lock().expect("lock").clone();
        if let Some(public) = merchant.v3.as_ref().and_then(|v| v.public_key.clone()) {
            keys.insert(public);
        }
        Arc::new(keys)
    }

    async fn refresh(
        &self,
        _headers: &wxpay_core::wechat::v3::SignedHeaders<'_>,
        _body: &[u8],
    ) -> bool {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        if self.offline.load(Ordering::SeqCst) {
            return false;
        }
        match self.pending.lock().expect("lock").take() {
            Some(cert) => {
                self.keys.lock().expect("lock").insert(cert);
                true
            }
            None => false,
        }
    }
}
