//! Fuzzes `wxpay_core::wechat::xml::decode` / `decode_with` on raw bytes.
//!
//! Checks, for every input:
//! - the size bound is applied before anything else (`TooLarge` for any limit
//!   below the input's length), and `decode` is `decode_with("xml", MAX_XML_BYTES)`;
//! - non-UTF-8 is refused, and nothing containing `<!DOCTYPE` or `<!ENTITY` is
//!   accepted;
//! - a map it accepts re-encodes (`encode`) unless a name or value is outside
//!   what the encoder writes (stated independently in `wxpay_fuzz::encodable`),
//!   and `decode(encode(map)) == map`: the codec loses nothing (but for
//!   known finding 1, `wxpay_fuzz::decoder_refuses_value`, where it must be
//!   exactly `Err(Doctype)`);
//! - the same holds for the `<root>` variant used by refund `req_info`;
//! - every accepted value goes through the amount, time and id parsers' oracles.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::xml::{self, XmlError, MAX_XML_BYTES};
use wxpay_fuzz::{check_value, encodable, pairs, round_trip_expectation};

fuzz_target!(|data: &[u8]| {
    let got = xml::decode(data);
    assert_eq!(got, xml::decode_with(data, "xml", MAX_XML_BYTES));
    if !data.is_empty() {
        let limit = data.len() - 1;
        assert_eq!(
            xml::decode_with(data, "xml", limit),
            Err(XmlError::TooLarge(data.len()))
        );
    }
    let text = std::str::from_utf8(data);
    if text.is_err() {
        assert_eq!(got, Err(XmlError::NotUtf8));
    }
    if let Ok(fields) = &got {
        let text = text.expect("accepted input is UTF-8");
        assert!(!text.contains("<!DOCTYPE") && !text.contains("<!ENTITY"));
        for v in fields.values() {
            check_value(v);
        }
        match xml::encode(pairs(fields)) {
            Ok(again) => {
                assert!(encodable(fields), "encode wrote a map it should refuse");
                assert_eq!(
                    xml::decode(again.as_bytes()),
                    round_trip_expectation(fields),
                    "decode(encode(m)) != m for {again:?}"
                );
            }
            Err(_) => assert!(!encodable(fields), "encode refused {fields:?}"),
        }
    }

    // The refund `req_info` document is the same codec with root `<root>`.
    if let Ok(fields) = xml::decode_with(data, "root", MAX_XML_BYTES) {
        if let Ok(again) = xml::encode_with(pairs(&fields), "root") {
            assert_eq!(
                xml::decode_with(again.as_bytes(), "root", MAX_XML_BYTES),
                round_trip_expectation(&fields)
            );
        }
    }
});
