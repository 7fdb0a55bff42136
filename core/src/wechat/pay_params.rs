//! What the payer's side needs to pay a prepay_id, signed with the order's key
//! and sign type: the parameters of `wx.requestPayment` (JSAPI: exactly `appId,
//! nonceStr, package, signType, timeStamp` are signed, in that case; `timeStamp`
//! is seconds, as a string) and those of the OpenSDK's PayReq (APP: `appid,
//! partnerid, prepayid, package=Sign=WXPay, noncestr, timestamp`, all lowercase).
//! v3 orders get the same objects signed with RSA (see `v3::pay_params`):
//! [`PaySignType`] says which, so one type reaches the payer in both dialects.

use super::{sign, ApiKey, SignType};
use crate::domain::Nonce;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: PaySignType,
    pub pay_sign: String,
}

/// `wx.requestPayment`'s `signType`: the order's v2 sign type (MD5 or
/// HMAC-SHA256, signed with the API key), or `RSA` for a v3 order (signed
/// with the merchant's API private key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaySignType {
    V2(SignType),
    Rsa,
}

impl PaySignType {
    /// What `signType` says on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PaySignType::V2(t) => t.as_str(),
            PaySignType::Rsa => super::v3::pay_params::SIGN_TYPE,
        }
    }
}

impl From<SignType> for PaySignType {
    fn from(t: SignType) -> Self {
        PaySignType::V2(t)
    }
}

impl std::str::FromStr for PaySignType {
    type Err = ();

    /// `MD5`, `HMAC-SHA256` or `RSA`, as a payer's `signType` names them.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s == super::v3::pay_params::SIGN_TYPE {
            return Ok(PaySignType::Rsa);
        }
        s.parse::<SignType>().map(PaySignType::V2).map_err(|_| ())
    }
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
        sign_type: sign_type.into(),
        pay_sign,
    }
}

/// Verifies v2 requestPayment parameters the way WeChat's client does (used
/// by the sandbox, the examples and the tests). RSA (v3) parameters are not
/// signed with the API key: they never verify here.
pub fn verify(params: &PaymentParams, key: &ApiKey) -> bool {
    let PaySignType::V2(sign_type) = params.sign_type else {
        return false;
    };
    let expected = sign::sign(
        [
            ("appId", params.app_id.as_str()),
            ("nonceStr", params.nonce_str.as_str()),
            ("package", params.package.as_str()),
            ("signType", sign_type.as_str()),
            ("timeStamp", params.time_stamp.as_str()),
        ],
        key,
        sign_type,
    );
    subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), params.pay_sign.as_bytes()).into()
}

/// What an app hands the OpenSDK's PayReq (APP orders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPaymentParams {
    pub appid: String,
    /// The merchant number the payment goes to (`mch_id`; the sub merchant's in
    /// service-provider mode).
    pub partnerid: String,
    pub prepayid: String,
    /// Always `Sign=WXPay`.
    pub package: String,
    pub noncestr: String,
    /// Unix time in seconds, as a string.
    pub timestamp: String,
    pub sign: String,
}

/// The fixed `package` of an APP payment.
pub const APP_PACKAGE: &str = "Sign=WXPay";

/// Builds and signs an APP payment's parameters for `prepay_id` at `unix_seconds`.
pub fn build_app(
    appid: &str,
    partnerid: &str,
    prepay_id: &str,
    key: &ApiKey,
    sign_type: SignType,
    unix_seconds: i64,
    nonce: &Nonce,
) -> AppPaymentParams {
    let mut p = AppPaymentParams {
        appid: appid.to_owned(),
        partnerid: partnerid.to_owned(),
        prepayid: prepay_id.to_owned(),
        package: APP_PACKAGE.to_owned(),
        noncestr: nonce.as_str().to_owned(),
        timestamp: unix_seconds.to_string(),
        sign: String::new(),
    };
    p.sign = sign::sign(app_fields(&p), key, sign_type);
    p
}

/// Verifies APP parameters as WeChat's OpenSDK backend does.
pub fn verify_app(params: &AppPaymentParams, key: &ApiKey, sign_type: SignType) -> bool {
    let expected = sign::sign(app_fields(params), key, sign_type);
    subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), params.sign.as_bytes()).into()
}

/// The six signed fields, under WeChat's APP names (no sign_type among them:
/// the app reads the algorithm from its own configuration, as the order was placed).
fn app_fields(p: &AppPaymentParams) -> [(&'static str, &str); 6] {
    [
        ("appid", p.appid.as_str()),
        ("noncestr", p.noncestr.as_str()),
        ("package", p.package.as_str()),
        ("partnerid", p.partnerid.as_str()),
        ("prepayid", p.prepayid.as_str()),
        ("timestamp", p.timestamp.as_str()),
    ]
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
        assert_eq!(p.sign_type, PaySignType::V2(SignType::HmacSha256));
        assert_eq!(p.pay_sign.len(), 64);
        assert!(verify(&p, &key));
        let mut tampered = p.clone();
        tampered.package = "prepay_id=wx124".into();
        assert!(!verify(&tampered, &key));
    }

    #[test]
    fn sign_types_read_and_write_as_the_payer_names_them() {
        for (text, t) in [
            ("MD5", PaySignType::V2(SignType::Md5)),
            ("HMAC-SHA256", PaySignType::V2(SignType::HmacSha256)),
            ("RSA", PaySignType::Rsa),
        ] {
            assert_eq!(t.as_str(), text);
            assert_eq!(text.parse::<PaySignType>(), Ok(t));
        }
        assert!("rsa".parse::<PaySignType>().is_err());
        // RSA parameters are not the API key's to verify.
        let key = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("vector key");
        let mut p = build("wxapp", "wx1", &key, SignType::Md5, 1, &Nonce::generate());
        assert!(verify(&p, &key));
        p.sign_type = PaySignType::Rsa;
        assert!(!verify(&p, &key));
    }

    #[test]
    fn app_params_sign_the_six_lowercase_fields() {
        let key = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("vector key");
        let nonce = Nonce::parse("abc123").expect("nonce");
        let p = build_app(
            "wxapp",
            "1900000109",
            "wx201",
            &key,
            SignType::Md5,
            1_700_000_000,
            &nonce,
        );
        assert_eq!(p.package, "Sign=WXPay");
        // Independently: the string WeChat's docs describe, hashed by hand.
        let plain = "appid=wxapp&noncestr=abc123&package=Sign=WXPay&partnerid=1900000109\
                     &prepayid=wx201&timestamp=1700000000&key=qazwsxedcrfvtgbyhnujmikolp111111";
        use md5::Digest as _;
        let expected: String = md5::Md5::digest(plain.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(p.sign, expected);
        assert!(verify_app(&p, &key, SignType::Md5));
        assert!(!verify_app(&p, &key, SignType::HmacSha256));
        let mut other = p.clone();
        other.partnerid = "1900000110".into();
        assert!(!verify_app(&other, &key, SignType::Md5));
    }
}
