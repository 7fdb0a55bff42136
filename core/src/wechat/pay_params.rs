//! The parameters of `wx.requestPayment`, signed with the order's key and sign type.
//! Exactly `appId, nonceStr, package, signType, timeStamp` are signed, in that
//! case; `timeStamp` is seconds, as a string.

use super::{sign, ApiKey, SignType};
use crate::domain::Nonce;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: SignType,
    pub pay_sign: String,
}

/// Builds and signs requestPayment parameters for `prepay_id` at `unix_seconds`.
pub fn build(
    app_id: &str,
    prepay_id: &str,
    key: &ApiKey,
    sign_type: SignType,
    unix_seconds: i64,
    nonce: &Nonce,
) -> PaymentParams {
    let time_stamp = unix_seconds.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign = sign::sign(
        [
            ("appId", app_id),
            ("nonceStr", nonce.as_str()),
            ("package", package.as_str()),
            ("signType", sign_type.as_str()),
            ("timeStamp", time_stamp.as_str()),
        ],
        key,
        sign_type,
    );
    PaymentParams {
        app_id: app_id.to_owned(),
        time_stamp,
        nonce_str: nonce.as_str().to_owned(),
        package,
        sign_type,
        pay_sign,
    }
}

/// Verifies requestPayment parameters the way WeChat's client does (used by the
/// sandbox, the examples and the tests).
pub fn verify(params: &PaymentParams, key: &ApiKey) -> bool {
    let expected = sign::sign(
        [
            ("appId", params.app_id.as_str()),
            ("nonceStr", params.nonce_str.as_str()),
            ("package", params.package.as_str()),
            ("signType", params.sign_type.as_str()),
            ("timeStamp", params.time_stamp.as_str()),
        ],
        key,
        params.sign_type,
    );
    subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), params.pay_sign.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_pay_sign_vector() {
        let key = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("vector key");
        let nonce = Nonce::parse("5K8264ILTKCH16CQ2502SI8ZNMTM67VS").expect("vector nonce");
        let p = build(
            "wxd678efh567hg6787",
            "wx2017033010242291fcfe0db70013231072",
            &key,
            SignType::Md5,
            1490840662,
            &nonce,
        );
        assert_eq!(p.pay_sign, "22D9B4E54AB1950F51E0649E8810ACD6");
        assert_eq!(p.package, "prepay_id=wx2017033010242291fcfe0db70013231072");
        assert_eq!(p.time_stamp, "1490840662");
        assert!(verify(&p, &key));
    }

    #[test]
    fn hmac_orders_get_hmac_pay_signs() {
        let key = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("vector key");
        let nonce = Nonce::generate();
        let p = build(
            "wxapp",
            "wx123",
            &key,
            SignType::HmacSha256,
            1_700_000_000,
            &nonce,
        );
        assert_eq!(p.sign_type, SignType::HmacSha256);
        assert_eq!(p.pay_sign.len(), 64);
        assert!(verify(&p, &key));
        let mut tampered = p.clone();
        tampered.package = "prepay_id=wx124".into();
        assert!(!verify(&tampered, &key));
    }
}
