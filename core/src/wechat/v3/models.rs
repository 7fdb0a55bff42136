//! The JSON bodies of the v3 endpoints and notifications this product uses,
//! shared by the client (payment-service), the notification handler
//! (gateway) and the sandbox, so the two ends of every message are one type.
//! Direct and service-provider (partner) bodies are one type each: the
//! partner fields (`sp_appid`, `sp_mchid`, `sub_appid`, `sub_mchid`,
//! `payer.sub_openid`) are simply present or absent, as on the wire.
//! Amounts are integer fen (`i64`), never floats.

use serde::{Deserialize, Serialize};

use super::aead::{self, Apiv3Key, DecryptError};

/// A notification as WeChat POSTs it (`resource` still sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub create_time: String,
    pub event_type: String,
    pub resource_type: String,
    #[serde(default)]
    pub summary: String,
    pub resource: EncryptedResource,
}

/// A sealed body (a notification's `resource`, a certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}

impl EncryptedResource {
    /// Opens the resource with the merchant's APIv3 key.
    pub fn decrypt(&self, key: &Apiv3Key) -> Result<Vec<u8>, DecryptError> {
        if self.algorithm != aead::ALGORITHM {
            return Err(DecryptError::Algorithm);
        }
        aead::decrypt(key, &self.nonce, &self.associated_data, &self.ciphertext)
    }

    /// Seals `plaintext` into a resource (the sandbox's side).
    pub fn seal(
        key: &Apiv3Key,
        nonce: &str,
        associated_data: &str,
        original_type: &str,
        plaintext: &[u8],
    ) -> Result<Self, DecryptError> {
        Ok(Self {
            algorithm: aead::ALGORITHM.to_owned(),
            ciphertext: aead::encrypt(key, nonce, associated_data, plaintext)?,
            associated_data: associated_data.to_owned(),
            nonce: nonce.to_owned(),
            original_type: Some(original_type.to_owned()),
        })
    }
}

/// `TRANSACTION.SUCCESS`: the event type that pays an order.
pub const TRANSACTION_SUCCESS: &str = "TRANSACTION.SUCCESS";

/// A payment as v3 describes it: the decrypted resource of a payment
/// notification, and the answer of a query by out_trade_no.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    pub trade_state: String,
    #[serde(default)]
    pub trade_state_desc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// RFC 3339 in +08:00 (see [`crate::wechat::china_time::parse_rfc3339`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

impl Transaction {
    /// The account the payment was made to: `mchid`, or `sp_mchid` on the
    /// partner endpoints.
    pub fn merchant_mch_id(&self) -> Option<&str> {
        self.mchid.as_deref().or(self.sp_mchid.as_deref())
    }

    /// The app the payer paid in: `appid`, or `sp_appid` on partner ones.
    pub fn merchant_app_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.sp_appid.as_deref())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// What the order asked, in fen.
    pub total: i64,
    /// What the payer paid, in fen (less than total with a coupon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// The body of `POST /v3/pay/[partner/]transactions/{jsapi|native|app|h5}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub description: String,
    pub out_trade_no: String,
    /// RFC 3339 in +08:00.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    pub notify_url: String,
    pub amount: OrderAmount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderAmount {
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// `scene_info`: what `h5` requires (the payer's IP and the H5 kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneInfo {
    pub payer_client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_info: Option<H5Info>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct H5Info {
    /// `Wap`, `iOS` or `Android`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_url: Option<String>,
}

/// What placing an order answers: one of these, by trade type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepay_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h5_url: Option<String>,
}

/// The body of `POST …/out-trade-no/{no}/close`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
}

/// WeChat's error body (any 4xx/5xx), and what a notification handler
/// answers when it refuses (`{"code":"FAIL","message":…}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// `GET /v3/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    pub data: Vec<CertificateEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateEntry {
    pub serial_no: String,
    pub effective_time: String,
    pub expire_time: String,
    pub encrypt_certificate: EncryptedResource,
}

/// The decrypted resource of a refund notification (`REFUND.SUCCESS`,
/// `REFUND.ABNORMAL`, `REFUND.CLOSED`): `refund_status`, not `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sp_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub total: i64,
    pub refund: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_transaction_names_the_provider_as_its_merchant() {
        let t: Transaction = serde_json::from_str(
            r#"{"sp_appid":"wxsp","sp_mchid":"1900000100","sub_appid":"wxsub","sub_mchid":"1900000109",
                "out_trade_no":"o1","transaction_id":"4200","trade_type":"JSAPI","trade_state":"SUCCESS",
                "trade_state_desc":"","success_time":"2018-06-08T10:34:56+08:00",
                "payer":{"sub_openid":"oSub"},"amount":{"total":100,"payer_total":90,"currency":"CNY","payer_currency":"CNY"}}"#,
        )
        .expect("a partner payment");
        assert_eq!(t.merchant_mch_id(), Some("1900000100"));
        assert_eq!(t.merchant_app_id(), Some("wxsp"));
        assert_eq!(t.sub_mchid.as_deref(), Some("1900000109"));
        assert_eq!(
            t.amount.map(|a| (a.total, a.payer_total)),
            Some((100, Some(90)))
        );
    }

    #[test]
    fn a_place_body_leaves_out_what_is_absent() {
        let body = PlaceOrder {
            appid: Some("wxd678efh567hg6787".into()),
            mchid: Some("1230000109".into()),
            description: "d".into(),
            out_trade_no: "o1".into(),
            notify_url: "https://example.com/n".into(),
            amount: OrderAmount {
                total: 1,
                currency: Some("CNY".into()),
            },
            ..PlaceOrder::default()
        };
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"d","out_trade_no":"o1","notify_url":"https://example.com/n","amount":{"total":1,"currency":"CNY"}}"#
        );
    }
}
