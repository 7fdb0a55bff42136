//! Fuzzes the refund notification's `req_info` decryption
//! (`wxpay_core::wechat::refund_crypto`: base64 → AES-256-ECB/PKCS#7 under the
//! MD5 of the API key → the `<root>` XML codec). The first input byte picks
//! the mode (seed files start with `0`, `1` or `2`):
//! - `0…`: the rest is the `req_info` text itself (garbage, bad base64, bad
//!   padding): decryption never panics, ignores surrounding whitespace, and
//!   anything it accepts re-encrypts and decrypts to the same fields;
//! - `1…`: the rest is a plaintext that this target encrypts as WeChat does:
//!   decryption must be transparent, i.e. give exactly what
//!   `xml::decode_with(plaintext, "root", MAX_XML_BYTES)` gives, and the same
//!   ciphertext must not decrypt to a document under another key;
//! - `2…`: the rest is a field map (`key\0value\0…`): `encrypt_req_info` refuses
//!   it exactly when the XML encoder must, and otherwise
//!   `decrypt(encrypt(map)) == map` (but for known finding 1, see
//!   `wxpay_fuzz::decoder_refuses_value`), and another key gets no document out of it.
#![no_main]

use aes::Aes256;
use base64::{engine::general_purpose::STANDARD, Engine};
use ecb::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyInit};
use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::{
    refund_crypto::{decrypt_req_info, encrypt_req_info, ReqInfoError},
    xml, ApiKey,
};
use wxpay_fuzz::{
    check_value, encodable, fields_from_pairs, key, other_key, round_trip_expectation,
};

fn encrypt_raw(plain: &[u8], key: &ApiKey) -> String {
    let k: [u8; 32] = key
        .md5_hex()
        .as_bytes()
        .try_into()
        .expect("32 hex characters");
    STANDARD.encode(ecb::Encryptor::<Aes256>::new(&k.into()).encrypt_padded_vec_mut::<Pkcs7>(plain))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = key();
    match mode % 3 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let got = decrypt_req_info(&text, &key);
            assert_eq!(got, decrypt_req_info(&format!("\r\n {text}\t "), &key));
            if let Ok(fields) = got {
                for v in fields.values() {
                    check_value(v);
                }
                if let Ok(again) = encrypt_req_info(&fields, &key) {
                    assert_eq!(
                        decrypt_req_info(&again, &key),
                        round_trip_expectation(&fields).map_err(ReqInfoError::Xml)
                    );
                }
            }
        }
        1 => {
            let req_info = encrypt_raw(rest, &key);
            let expected =
                xml::decode_with(rest, "root", xml::MAX_XML_BYTES).map_err(ReqInfoError::Xml);
            assert_eq!(decrypt_req_info(&req_info, &key), expected);
            assert!(
                decrypt_req_info(&req_info, &other_key()).is_err(),
                "another key decrypted a document"
            );
        }
        _ => {
            let fields = fields_from_pairs(rest);
            match encrypt_req_info(&fields, &key) {
                Ok(req_info) => {
                    assert!(
                        encodable(&fields),
                        "encrypted a map the encoder must refuse"
                    );
                    let doc =
                        xml::encode_with(wxpay_fuzz::pairs(&fields), "root").expect("encodable");
                    if doc.len() > xml::MAX_XML_BYTES {
                        return;
                    }
                    assert_eq!(
                        decrypt_req_info(&req_info, &key),
                        round_trip_expectation(&fields).map_err(ReqInfoError::Xml)
                    );
                    assert!(decrypt_req_info(&req_info, &other_key()).is_err());
                }
                Err(e) => {
                    assert!(!encodable(&fields), "refused an encodable map: {e}");
                    assert!(matches!(e, ReqInfoError::Xml(_)));
                }
            }
        }
    }
});
