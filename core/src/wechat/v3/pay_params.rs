//! What the payer's side needs to pay a v3 prepay_id: `wx.requestPayment`'s
//! parameters for JSAPI (`signType` `RSA`, `paySign` = base64 RSA-SHA256
//! over `appId\ntimeStamp\nnonceStr\npackage\n`) and the OpenSDK's PayReq for
//! APP (`sign` over `appid\ntimestamp\nnoncestr\nprepayid\n`), both signed
//! with the merchant's API private key.

use super::{keys::KeyError, MerchantSigner};
use crate::{
    domain::Nonce,
    wechat::pay_params::{AppPaymentParams, PaySignType, PaymentParams},
};

/// `wx.requestPayment`'s parameters, v3: `sign_type` is always `RSA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsapiParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub pay_sign: String,
}

impl From<JsapiParams> for PaymentParams {
    /// The dialect-neutral object the service hands out, `signType` `RSA`.
    fn from(p: JsapiParams) -> Self {
        PaymentParams {
            app_id: p.app_id,
            time_stamp: p.time_stamp,
            nonce_str: p.nonce_str,
            package: p.package,
            sign_type: PaySignType::Rsa,
            pay_sign: p.pay_sign,
        }
    }
}

/// What `signType` says for every v3 payment.
pub const SIGN_TYPE: &str = "RSA";

/// The string `paySign` covers.
pub fn jsapi_message(app_id: &str, time_stamp: &str, nonce_str: &str, package: &str) -> String {
    format!("{app_id}\n{time_stamp}\n{nonce_str}\n{package}\n")
}

pub fn jsapi(
    signer: &MerchantSigner,
    app_id: &str,
    prepay_id: &str,
    unix_seconds: i64,
    nonce: &Nonce,
) -> Result<JsapiParams, KeyError> {
    let time_stamp = unix_seconds.to_string();
    let package = format!("prepay_id={prepay_id}");
    let pay_sign =
        signer.sign(jsapi_message(app_id, &time_stamp, nonce.as_str(), &package).as_bytes())?;
    Ok(JsapiParams {
        app_id: app_id.to_owned(),
        time_stamp,
        nonce_str: nonce.as_str().to_owned(),
        package,
        pay_sign,
    })
}

/// The OpenSDK's PayReq for a v3 APP order (the same fields as v2's; only
/// the signature differs). `partner_id` is the merchant the money goes to.
pub fn app(
    signer: &MerchantSigner,
    app_id: &str,
    partner_id: &str,
    prepay_id: &str,
    unix_seconds: i64,
    nonce: &Nonce,
) -> Result<AppPaymentParams, KeyError> {
    let timestamp = unix_seconds.to_string();
    let sign = signer
        .sign(format!("{app_id}\n{timestamp}\n{}\n{prepay_id}\n", nonce.as_str()).as_bytes())?;
    Ok(AppPaymentParams {
        appid: app_id.to_owned(),
        partnerid: partner_id.to_owned(),
        prepayid: prepay_id.to_owned(),
        package: crate::wechat::pay_params::APP_PACKAGE.to_owned(),
        noncestr: nonce.as_str().to_owned(),
        timestamp,
        sign,
    })
}
