//! The v3 harness: one payment-service with the `default` merchant (v2,
//! MD5) beside three v3 ones, against the sandbox speaking v3: `v3pub` (a
//! direct merchant verifying WeChat with its public key), `v3cert` (platform
//! certificates) and `v3sp` (a service provider placing for its sub merchant).
//! Each v3 merchant's API key pair is issued by the running sandbox.

use std::{path::Path, sync::OnceLock};

use wechat_sandbox::{
    Account, KeyMode, SandboxConfig, SandboxHandle, SubMerchant, V3Account, WechatSideKeys,
};
use wxpay_core::wechat::{
    v3::{Apiv3Key, MerchantSigner, WechatKey},
    ApiKey, Merchant, MerchantEntry, SignType, V3Merchant,
};
use wxpay_proto::v1::{
    CloseOrderRequest, CreateOrderRequest, CreateOrderResponse, GetOrderRequest, QueryOrderRequest,
    TradeType,
};

use super::{request, start_on, Harness, Options};

pub const APIV3_KEY: &str = "v3sandboxtestkey0123456789abcdef";
/// `v3pub`: a direct merchant verifying WeChat with its public key.
pub const PUB_MCH: &str = "1900000300";
pub const PUB_APP: &str = "wx3333333333333333";
/// `v3cert`: a direct merchant verifying WeChat with platform certificates.
pub const CERT_MCH: &str = "1900000500";
pub const CERT_APP: &str = "wx6666666666666666";
/// `v3sp`: a service provider placing for its sub merchant.
pub const SP_MCH: &str = "1900000400";
pub const SP_APP: &str = "wx4444444444444444";
pub const SUB_MCH: &str = "1900000401";
pub const SUB_APP: &str = "wx5555555555555555";

/// WeChat's key pairs, made once for every sandbox of this binary.
pub fn wechat_keys() -> WechatSideKeys {
    static KEYS: OnceLock<WechatSideKeys> = OnceLock::new();
    KEYS.get_or_init(|| WechatSideKeys::generate().expect("key pairs"))
        .clone()
}

pub fn account_merchant(mch_id: &str, app_id: &str) -> Merchant {
    Merchant {
        app_id: app_id.into(),
        mch_id: mch_id.into(),
        // v3 merchants onboarded today have no APIv2 key.
        api_key: ApiKey::unguessable(),
    }
}

pub fn apiv3_key() -> Apiv3Key {
    Apiv3Key::parse(APIV3_KEY).expect("32 bytes")
}

/// The service with `default` (v2, MD5), `v3pub`, `v3cert` and `v3sp`.
pub struct V3Harness {
    pub h: Harness,
    /// Each v3 merchant's API key: what verifies its `paySign`.
    pub pub_signer: MerchantSigner,
    pub sp_signer: MerchantSigner,
    pub cert_signer: MerchantSigner,
    pub pub_entry: MerchantEntry,
    pub _dir: tempfile::TempDir,
}

/// Issues `mch_id` its API key pair in the sandbox and configures it as the
/// merchants file would: `public_key` for public-key mode, none for certificates.
pub async fn v3_entry(
    sandbox: &SandboxHandle,
    dir: &Path,
    name: &str,
    merchant: Merchant,
    public_key: bool,
) -> (MerchantEntry, MerchantSigner) {
    let issued = sandbox
        .issue_merchant_key(&merchant.mch_id, &dir.join(name))
        .await
        .expect("a key pair issued");
    let pem = std::fs::read(&issued.private_key_path).expect("apiclient_key.pem");
    let signer = MerchantSigner::from_pem(&pem, &issued.serial_no).expect("PKCS#8");
    let public_key = if public_key {
        let view = sandbox
            .v3_merchant(&merchant.mch_id)
            .await
            .expect("a v3 merchant");
        Some(
            WechatKey::from_public_key_pem(&view.public_key_id, view.public_key_pem.as_bytes())
                .expect("WeChat's public key"),
        )
    } else {
        None
    };
    let entry = MerchantEntry {
        v3: Some(V3Merchant {
            apiv3_key: apiv3_key(),
            signer: signer.clone(),
            public_key,
            private_key_path: issued.private_key_path.display().to_string(),
            public_key_path: None,
        }),
        ..MerchantEntry::direct(name, merchant, SignType::Md5)
    };
    (entry, signer)
}

pub async fn harness() -> V3Harness {
    harness_with(Options::default()).await
}

/// [`harness`] with `defaults`' reconciler (and anything else but the
/// sandbox and the merchants, which are this harness's own).
pub async fn harness_with(defaults: Options) -> V3Harness {
    let sandbox = wechat_sandbox::spawn(SandboxConfig {
        wechat_keys: Some(wechat_keys()),
        accounts: vec![
            Account::direct(account_merchant(PUB_MCH, PUB_APP))
                .with_v3(V3Account::new(apiv3_key(), KeyMode::PublicKey)),
            Account::direct(account_merchant(CERT_MCH, CERT_APP))
                .with_v3(V3Account::new(apiv3_key(), KeyMode::Certificates)),
            Account::provider(
                account_merchant(SP_MCH, SP_APP),
                vec![SubMerchant {
                    sub_mch_id: SUB_MCH.into(),
                    sub_app_id: Some(SUB_APP.into()),
                }],
            )
            .with_v3(V3Account::new(apiv3_key(), KeyMode::PublicKey)),
        ],
        ..defaults.sandbox.clone()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (pub_entry, pub_signer) = v3_entry(
        &sandbox,
        dir.path(),
        "v3pub",
        account_merchant(PUB_MCH, PUB_APP),
        true,
    )
    .await;
    let (cert_entry, cert_signer) = v3_entry(
        &sandbox,
        dir.path(),
        "v3cert",
        account_merchant(CERT_MCH, CERT_APP),
        false,
    )
    .await;
    let (sp_entry, sp_signer) = v3_entry(
        &sandbox,
        dir.path(),
        "v3sp",
        account_merchant(SP_MCH, SP_APP),
        true,
    )
    .await;
    let sp_entry = MerchantEntry {
        sub_mch_id: Some(SUB_MCH.into()),
        sub_app_id: Some(SUB_APP.into()),
        ..sp_entry
    };
    let h = start_on(
        Options {
            merchants: vec![pub_entry.clone(), cert_entry, sp_entry],
            ..defaults
        },
        sandbox,
    )
    .await;
    V3Harness {
        h,
        pub_signer,
        sp_signer,
        cert_signer,
        pub_entry,
        _dir: dir,
    }
}

pub fn order_of(merchant: &str, key: &str, trade_type: TradeType) -> CreateOrderRequest {
    let base = request(key, 120);
    CreateOrderRequest {
        merchant: merchant.into(),
        trade_type: trade_type as i32,
        openid: if trade_type == TradeType::Jsapi {
            base.openid.clone()
        } else {
            String::new()
        },
        product_id: if trade_type == TradeType::Native {
            "sku-1".into()
        } else {
            String::new()
        },
        ..base
    }
}

impl V3Harness {
    pub async fn create(&mut self, req: CreateOrderRequest) -> CreateOrderResponse {
        self.h
            .client
            .create_order(req)
            .await
            .expect("created")
            .into_inner()
    }

    pub async fn status(&mut self, out_trade_no: &str) -> wxpay_proto::v1::Order {
        self.h
            .client
            .get_order(GetOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .expect("get")
            .into_inner()
    }

    pub async fn close(
        &mut self,
        out_trade_no: &str,
    ) -> Result<wxpay_proto::v1::Order, tonic::Status> {
        self.h
            .client
            .close_order(CloseOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn query(
        &mut self,
        out_trade_no: &str,
    ) -> Result<wxpay_proto::v1::Order, tonic::Status> {
        self.h
            .client
            .query_order(QueryOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The payer pays in the sandbox; its notification is dropped (nobody
    /// listens), so only QueryOrder can tell the service.
    pub async fn pay_at_wechat(&self, out_trade_no: &str) {
        let paid = self
            .h
            .control(
                &format!("/sandbox/orders/{out_trade_no}/pay"),
                serde_json::json!({"delivery": "drop"}),
            )
            .await;
        assert!(paid.is_success(), "{paid}");
    }
}
