//! The refund notification's `req_info`: base64 of AES-256-ECB with PKCS#7
//! padding, keyed by the lowercase hex MD5 of the API key. It decrypts to a
//! flat XML document whose root is `<root>`.

use aes::Aes256;
use base64::{engine::general_purpose::STANDARD, Engine};
use ecb::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyInit};

use super::{xml, ApiKey, Fields};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReqInfoError {
    #[error("req_info is not base64")]
    Base64,
    #[error("req_info does not decrypt under this merchant's key")]
    Decrypt,
    #[error("req_info is not a valid document: {0}")]
    Xml(#[from] xml::XmlError),
}

fn cipher_key(key: &ApiKey) -> [u8; 32] {
    let hex = key.md5_hex();
    let mut out = [0u8; 32];
    out.copy_from_slice(hex.as_bytes());
    out
}

/// Decrypts and parses `req_info`.
pub fn decrypt_req_info(req_info: &str, key: &ApiKey) -> Result<Fields, ReqInfoError> {
    let data = STANDARD
        .decode(req_info.trim())
        .map_err(|_| ReqInfoError::Base64)?;
    let plain = ecb::Decryptor::<Aes256>::new(&cipher_key(key).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&data)
        .map_err(|_| ReqInfoError::Decrypt)?;
    Ok(xml::decode_with(&plain, "root", xml::MAX_XML_BYTES)?)
}

/// Encrypts a `<root>` document the way WeChat does (for the sandbox and tests).
pub fn encrypt_req_info(fields: &Fields, key: &ApiKey) -> Result<String, ReqInfoError> {
    let doc = xml::encode_with(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())), "root")?;
    let data = ecb::Encryptor::<Aes256>::new(&cipher_key(key).into())
        .encrypt_padded_vec_mut::<Pkcs7>(doc.as_bytes());
    Ok(STANDARD.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn req_info_round_trips_and_refuses_another_key() {
        let key = ApiKey::parse("192006250b4c09247ec02edce69f6a2d").expect("key");
        let fields: Fields = [
            ("out_refund_no", "R1"),
            ("refund_fee", "100"),
            ("refund_status", "SUCCESS"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let enc = encrypt_req_info(&fields, &key).expect("encrypts");
        assert_eq!(decrypt_req_info(&enc, &key), Ok(fields));
        let other = ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("key");
        assert!(decrypt_req_info(&enc, &other).is_err());
        assert_eq!(decrypt_req_info("***", &key), Err(ReqInfoError::Base64));
    }
}
