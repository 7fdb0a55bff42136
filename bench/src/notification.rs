//! Builds what WeChat would POST to the gateway: a signed v2 payment notification,
//! MD5-signed without `sign_type` (WeChat's usual form), for a seeded order.

use wxpay_core::wechat::{sign, xml, Fields, Merchant, SignType};

/// The fields of a paid notification for `out_trade_no`, signed with the merchant's key.
pub fn paid_fields(merchant: &Merchant, out_trade_no: &str, total_fee: i64) -> Fields {
    // Transaction ids are unique per payment; derive one from the order number.
    let transaction_id: String = format!("4200{out_trade_no}")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    let fee = total_fee.to_string();
    let mut fields = Fields::new();
    for (k, v) in [
        ("appid", merchant.app_id.as_str()),
        ("bank_type", "CMC"),
        ("cash_fee", fee.as_str()),
        ("fee_type", "CNY"),
        ("is_subscribe", "N"),
        ("mch_id", merchant.mch_id.as_str()),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("out_trade_no", out_trade_no),
        ("result_code", "SUCCESS"),
        ("return_code", "SUCCESS"),
        ("time_end", "20240101120000"),
        ("total_fee", fee.as_str()),
        ("trade_type", "JSAPI"),
        ("transaction_id", transaction_id.as_str()),
    ] {
        fields.insert(k.to_owned(), v.to_owned());
    }
    sign::sign_fields(&mut fields, &merchant.api_key, SignType::Md5);
    fields
}

/// The XML body of [`paid_fields`].
pub fn paid_xml(merchant: &Merchant, out_trade_no: &str, total_fee: i64) -> anyhow::Result<String> {
    let fields = paid_fields(merchant, out_trade_no, total_fee);
    Ok(xml::encode(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notification_verifies_under_the_merchant_key() {
        let merchant = wechat_sandbox::SandboxConfig::for_tests().merchant;
        let body = paid_xml(&merchant, "B01TEST", 1).unwrap();
        let fields = xml::decode(body.as_bytes()).unwrap();
        assert!(sign::verify(&fields, &merchant.api_key, SignType::Md5).is_ok());
        assert_eq!(
            fields.get("out_trade_no").map(String::as_str),
            Some("B01TEST")
        );
    }
}
