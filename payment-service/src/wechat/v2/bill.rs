//! `/pay/downloadbill`: the daily bill, asked for gzipped. A success is the
//! file itself (unsigned, not XML); a failure is the usual XML, where "No Bill
//! Exist" means a day without trades (an empty bill, not an error).

use chrono::NaiveDate;
use wxpay_core::wechat::{
    bill::{self, Bill},
    sign, xml, SignType,
};

use super::{transport_error, V2Client};
use crate::wechat::{bill_file, WechatError};

impl V2Client {
    /// The ALL bill of `day` (Beijing time); `None` when WeChat has no trade that day.
    #[tracing::instrument(skip(self))]
    pub async fn download_bill(
        &self,
        day: NaiveDate,
        sign_type: SignType,
    ) -> Result<Option<Bill>, WechatError> {
        let mut fields = self.base_fields();
        fields.insert("bill_date".into(), day.format("%Y%m%d").to_string());
        fields.insert("bill_type".into(), "ALL".into());
        fields.insert("tar_type".into(), "GZIP".into());
        sign::sign_fields(&mut fields, &self.merchant().api_key, sign_type);
        let body = xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| WechatError::BadReply(format!("request could not be encoded: {e}")))?;
        let response = self
            .http
            .post(format!("{}/pay/downloadbill", self.base))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(WechatError::Transport(format!(
                "HTTP {}",
                response.status()
            )));
        }
        let bytes = response.bytes().await.map_err(transport_error)?;
        if bytes.starts_with(b"<xml>") || bytes.starts_with(b"<?xml") {
            let reply = xml::decode_with(&bytes, "xml", 64 * 1024)
                .map_err(|e| WechatError::BadReply(e.to_string()))?;
            if bill::is_no_bill(&reply) {
                return Ok(None);
            }
            let code = reply.get("error_code").or_else(|| reply.get("err_code"));
            return Err(match code {
                Some(code) => WechatError::Business {
                    code: code.clone(),
                    message: reply.get("return_msg").cloned().unwrap_or_default(),
                },
                None => WechatError::Return(reply.get("return_msg").cloned().unwrap_or_default()),
            });
        }
        bill_file::read_gzipped(&bytes).map(Some)
    }
}
