//! The bill file both dialects download: WeChat's ALL bill as gzipped text,
//! unpacked within [`MAX_BILL_BYTES`] and read by core's bill reader
//! ([`wxpay_core::wechat::bill::parse`]). How the file is fetched and proven
//! (v2's signed request, v3's SHA1 from a signed answer) is each dialect's own.

use std::io::Read;

use wxpay_core::wechat::bill::{self, Bill};

use super::WechatError;

/// A day's bill is a few hundred bytes per trade; 64 MiB (packed, and again
/// unpacked) is far past any merchant's day and bounds what a bad reply can
/// make us hold.
pub(crate) const MAX_BILL_BYTES: usize = 64 * 1024 * 1024;

/// The bill in `gzipped`: refused when it is not gzip, not UTF-8, larger than
/// [`MAX_BILL_BYTES`] unpacked (never read cut short: a bill missing its tail
/// would report trades missing), or not a bill.
pub(crate) fn read_gzipped(gzipped: &[u8]) -> Result<Bill, WechatError> {
    let limit = u64::try_from(MAX_BILL_BYTES).unwrap_or(u64::MAX);
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .take(limit.saturating_add(1))
        .read_to_end(&mut unpacked)
        .map_err(|e| WechatError::BadReply(format!("the bill is not gzipped: {e}")))?;
    if unpacked.len() > MAX_BILL_BYTES {
        return Err(WechatError::BadReply(format!(
            "the bill is larger than {MAX_BILL_BYTES} bytes unpacked"
        )));
    }
    let text = String::from_utf8(unpacked)
        .map_err(|_| WechatError::BadReply("the bill is not UTF-8 text".into()))?;
    bill::parse(&text).map_err(|e| WechatError::BadReply(format!("the bill cannot be read: {e}")))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn only_a_gzipped_utf8_bill_is_read() {
        assert!(matches!(
            read_gzipped(b"plain text"),
            Err(WechatError::BadReply(_))
        ));
        assert!(matches!(
            read_gzipped(&gzip(&[0xff, 0xfe, 0x00])),
            Err(WechatError::BadReply(_))
        ));
    }
}
