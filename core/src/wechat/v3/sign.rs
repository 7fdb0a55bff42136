//! The merchant's side of a v3 request: the string it signs
//! (`METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`, each line ending in `\n`,
//! the body empty for a GET, the URL part exactly the request URI sent) and
//! the `Authorization` header that carries the signature.

use super::{keys::KeyError, MerchantSigner, SCHEME};

/// The string a request's signature covers.
pub fn request_message(method: &str, uri: &str, timestamp: i64, nonce: &str, body: &str) -> String {
    format!("{method}\n{uri}\n{timestamp}\n{nonce}\n{body}\n")
}

/// `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="…",nonce_str="…",
/// timestamp="…",serial_no="…",signature="…"` for one request. `mch_id` is
/// the account that signs (the provider's in service-provider mode).
pub fn authorization(
    signer: &MerchantSigner,
    mch_id: &str,
    method: &str,
    uri: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> Result<String, KeyError> {
    let signature = signer.sign(request_message(method, uri, timestamp, nonce, body).as_bytes())?;
    Ok(format!(
        "{SCHEME} mchid=\"{mch_id}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{}\",signature=\"{signature}\"",
        signer.serial_no()
    ))
}

/// An `Authorization` header taken apart (the sandbox's side: it checks
/// requests as WeChat would). `None` unless it is the v3 scheme with all five
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mch_id: String,
    pub nonce: String,
    pub timestamp: i64,
    pub serial_no: String,
    pub signature: String,
}

impl Authorization {
    pub fn parse(header: &str) -> Option<Self> {
        let params = header.strip_prefix(SCHEME)?.strip_prefix(' ')?;
        let (mut mch_id, mut nonce, mut timestamp, mut serial_no, mut signature) =
            (None, None, None, None, None);
        for part in params.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.strip_prefix('"')?.strip_suffix('"')?.to_owned();
            let slot = match k {
                "mchid" => &mut mch_id,
                "nonce_str" => &mut nonce,
                "timestamp" => &mut timestamp,
                "serial_no" => &mut serial_no,
                "signature" => &mut signature,
                _ => return None,
            };
            if slot.replace(v).is_some() {
                return None;
            }
        }
        Some(Self {
            mch_id: mch_id?,
            nonce: nonce?,
            timestamp: timestamp?.parse().ok()?,
            serial_no: serial_no?,
            signature: signature?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_signs_an_empty_body_line() {
        assert_eq!(
            request_message(
                "GET",
                "/v3/certificates",
                1554208460,
                "593BEC0C930BF1AFEB40B4A08C8FB242",
                ""
            ),
            "GET\n/v3/certificates\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n\n"
        );
    }

    #[test]
    fn an_authorization_header_reads_back_and_nothing_else_does() {
        let h = r#"WECHATPAY2-SHA256-RSA2048 mchid="1900009191",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",timestamp="1554208460",serial_no="1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",signature="uOVRnA4qG/MNnYzdQxJanN+zU+lTgIcnU9BxGw5dKjK+VdEUz2FeIoC+D5sB/LN+nGzX3hfZg6r5wT1pl2ZobmIc6p0ldN7J6yDgUzbX8Uk3sD4a4eZVPTBvqNDoUqcYMlZ9uuDdCvNv4TM3c1WzsXUrExwVkI1XO5jCNbgDJ25nkT/c1gIFvqoogl7MdSFGc4W4xZsqCItnqbypR3RuGIlR9h9vlRsy7zJR9PBI83X8alLDIfR1ukt1P7tMnmogZ0cuDY8cZsd8ZlCgLadmvej58SLsIkVxFJ8XyUgx9FmutKSYTmYtWBZ0+tNvfGmbXU7cob8H/4nLBiCwIUFluw==""#;
        let a = Authorization::parse(h).expect("the documented example header");
        assert_eq!(a.mch_id, "1900009191");
        assert_eq!(a.timestamp, 1554208460);
        assert_eq!(a.serial_no, "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C");
        assert!(Authorization::parse(
            &h.replace("WECHATPAY2-SHA256-RSA2048", "WECHATPAY2-SHA256-RSA")
        )
        .is_none());
        assert!(Authorization::parse(&h.replace("mchid=", "mchid2=")).is_none());
        assert!(
            Authorization::parse(&h.replace("timestamp=\"1554208460\"", "timestamp=\"x\""))
                .is_none()
        );
    }
}
