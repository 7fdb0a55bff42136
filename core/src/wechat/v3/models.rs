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

/// A refund's amounts, in fen: what the order was (`total`) and what this
/// refund gives back (`refund`); in answers and notifications also the
/// payer's share of each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    pub refund: i64,
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The body of `POST /v3/refund/domestic/refunds` (direct and partner alike:
/// a sub merchant's refund carries `sub_mchid`). The order is named by
/// `out_trade_no` (this service made it); `amount` carries `refund`, `total`
/// and `currency` only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_trade_no: Option<String>,
    pub out_refund_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    pub amount: RefundAmount,
}

/// One refund as WeChat describes it: the answer of `POST
/// /v3/refund/domestic/refunds` and of `GET …/refunds/{out_refund_no}`.
/// Here the state is `status` (in a notification it is `refund_status`:
/// wechatpay-java #213 is about confusing the two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAnswer {
    pub refund_id: String,
    pub out_refund_no: String,
    pub transaction_id: String,
    pub out_trade_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    /// RFC 3339 in +08:00, once the money is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    /// `SUCCESS`, `CLOSED`, `PROCESSING` or `ABNORMAL` ([`refund_status`]).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds_account: Option<String>,
    pub amount: RefundAmount,
}

/// `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`: the event types of
/// a refund notification, each naming the refund's new state.
pub const REFUND_SUCCESS: &str = "REFUND.SUCCESS";
pub const REFUND_ABNORMAL: &str = "REFUND.ABNORMAL";
pub const REFUND_CLOSED: &str = "REFUND.CLOSED";

/// A v3 refund status (`status` of a refund answer, `refund_status` of a
/// refund notification) as ours: v3's `ABNORMAL` is v2's `CHANGE` (the money
/// could not go back to the original account; someone must act in the
/// merchant console), `CLOSED` v2's `REFUNDCLOSE`. `None` for anything else,
/// which no caller may guess at.
pub fn refund_status(s: &str) -> Option<crate::domain::RefundStatus> {
    use crate::domain::RefundStatus;
    match s {
        "PROCESSING" => Some(RefundStatus::Processing),
        "SUCCESS" => Some(RefundStatus::Success),
        "ABNORMAL" => Some(RefundStatus::Change),
        "CLOSED" => Some(RefundStatus::Closed),
        _ => None,
    }
}

/// The refund state a refund notification's `event_type` announces; `None`
/// for any other event.
pub fn refund_event_status(event_type: &str) -> Option<crate::domain::RefundStatus> {
    use crate::domain::RefundStatus;
    match event_type {
        REFUND_SUCCESS => Some(RefundStatus::Success),
        REFUND_ABNORMAL => Some(RefundStatus::Change),
        REFUND_CLOSED => Some(RefundStatus::Closed),
        _ => None,
    }
}

/// What `GET /v3/bill/tradebill` answers: where to download the day's bill
/// and the SHA1 of the file there. The download itself is not signed, so
/// this hash (in a signed answer) is the only proof of the file
/// ([`super::bill::check_hash`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeBill {
    pub hash_type: String,
    pub hash_value: String,
    pub download_url: String,
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
    fn a_refund_answer_reads_status_and_amounts_and_maps_abnormal_to_change() {
        use crate::domain::RefundStatus;
        let a: RefundAnswer = serde_json::from_str(
            r#"{"refund_id":"50000000382019052709732678859","out_refund_no":"1217752501201407033233368018",
                "transaction_id":"1217752501201407033233368018","out_trade_no":"1217752501201407033233368018",
                "channel":"ORIGINAL","user_received_account":"招商银行信用卡0403","success_time":"2020-12-01T16:18:12+08:00",
                "create_time":"2020-12-01T16:18:12+08:00","status":"ABNORMAL","funds_account":"UNSETTLED",
                "amount":{"total":100,"refund":100,"payer_total":90,"payer_refund":90,"settlement_refund":100,
                "settlement_total":100,"discount_refund":10,"currency":"CNY"}}"#,
        )
        .expect("a refund answer");
        assert_eq!(refund_status(&a.status), Some(RefundStatus::Change));
        assert_eq!((a.amount.total, a.amount.refund), (100, 100));
        assert_eq!(refund_status("CLOSED"), Some(RefundStatus::Closed));
        assert_eq!(
            refund_status("REFUNDCLOSE"),
            None,
            "v2's spelling is not v3's"
        );
        assert_eq!(
            refund_event_status(REFUND_ABNORMAL),
            Some(RefundStatus::Change)
        );
        assert_eq!(refund_event_status(TRANSACTION_SUCCESS), None);
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
