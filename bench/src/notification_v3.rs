//! Builds what WeChat would POST to the gateway's v3 path: a `TRANSACTION.SUCCESS`
//! notification whose resource is sealed under the merchant's APIv3 key and
//! whose body is signed with WeChat's key (headers `Wechatpay-*`), for a
//! seeded order. The bytes are exactly what the gateway verifies.

use chrono::Utc;
use wxpay_core::wechat::{
    china_time,
    v3::{
        models::{
            EncryptedResource, Notification, Payer, Transaction, TransactionAmount,
            TRANSACTION_SUCCESS,
        },
        verify, Apiv3Key, MerchantSigner, SCHEME,
    },
};

/// A v3 notification as sent: its headers and its raw body.
#[derive(Debug, Clone)]
pub struct SignedNotification {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl SignedNotification {
    /// The header `name` (lowercase), as a server reads it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Who the payment is for and who signs it as WeChat.
pub struct V3Parties<'a> {
    pub app_id: &'a str,
    pub mch_id: &'a str,
    pub apiv3_key: &'a Apiv3Key,
    /// WeChat's signing key and the id (`PUB_KEY_ID_…` or certificate serial) it goes by.
    pub wechat: &'a MerchantSigner,
    pub wechat_key_id: &'a str,
}

/// A paid notification for `out_trade_no`, signed at `timestamp` (unix s).
pub fn paid_v3(
    parties: &V3Parties<'_>,
    out_trade_no: &str,
    total: i64,
    timestamp: i64,
) -> anyhow::Result<SignedNotification> {
    let transaction_id: String = format!("4200{out_trade_no}")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let payment = Transaction {
        appid: Some(parties.app_id.to_owned()),
        mchid: Some(parties.mch_id.to_owned()),
        out_trade_no: out_trade_no.to_owned(),
        transaction_id: Some(transaction_id),
        trade_type: Some("JSAPI".into()),
        trade_state: "SUCCESS".into(),
        trade_state_desc: "支付成功".into(),
        bank_type: Some("CMC".into()),
        attach: Some(String::new()),
        success_time: Some(china_time::format_rfc3339(Utc::now())),
        payer: Some(Payer {
            openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            sub_openid: None,
        }),
        amount: Some(TransactionAmount {
            total,
            payer_total: Some(total),
            currency: Some("CNY".into()),
            payer_currency: Some("CNY".into()),
        }),
        ..Transaction::default()
    };
    let plain = serde_json::to_vec(&payment)?;
    // 12 bytes, different per message as WeChat's are.
    let nonce: String = format!("{:012x}", timestamp.unsigned_abs() ^ plain.len() as u64)
        .chars()
        .rev()
        .take(12)
        .collect();
    let resource = EncryptedResource::seal(
        parties.apiv3_key,
        &nonce,
        "transaction",
        "transaction",
        &plain,
    )
    .map_err(|e| anyhow::anyhow!("sealing the resource: {e}"))?;
    let envelope = Notification {
        id: format!("EV-{out_trade_no}"),
        create_time: china_time::format_rfc3339(Utc::now()),
        event_type: TRANSACTION_SUCCESS.into(),
        resource_type: "encrypt-resource".into(),
        summary: "支付成功".into(),
        resource,
    };
    let body = serde_json::to_vec(&envelope)?;
    let ts = timestamp.to_string();
    let header_nonce = format!("{:032x}", (timestamp as u128) << 40 | body.len() as u128);
    let signature = parties
        .wechat
        .sign(&verify::message(&ts, &header_nonce, &body))
        .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
    Ok(SignedNotification {
        headers: vec![
            ("wechatpay-serial", parties.wechat_key_id.to_owned()),
            ("wechatpay-signature", signature),
            ("wechatpay-timestamp", ts),
            ("wechatpay-nonce", header_nonce),
            ("wechatpay-signature-type", SCHEME.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        body,
    })
}
