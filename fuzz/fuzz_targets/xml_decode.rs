//! Fuzzes `wxpay_core::wechat::xml::decode` / `decode_with` on raw bytes.
//!
//! Checks, for every input:
//! - the size bound is applied before anything else (`TooLarge` for any limit
//!   below the input's length), and `decode` is `decode_with("xml", MAX_XML_BYTES)`;
//! - non-UTF-8 is refused, and nothing containing `<!DOCTYPE` or `<!ENTITY` is
//!   accepted; every accepted element name is in WeChat's `[A-Za-z0-9_]`;
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
        // Declarations are refused; the same characters inside a CDATA value
        // or a comment are not markup (finding 1).
        let markup = outside_cdata(text);
        assert!(!markup.contains("<!DOCTYPE") && !markup.contains("<!ENTITY"));
        for v in fields.values() {
            check_value(v);
        }
        // Only WeChat's field-name alphabet gets through (finding 2).
        for k in fields.keys() {
            assert!(
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "accepted element name {k:?}"
            );
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

/// `text` without its CDATA sections and comments: where a declaration would be
/// markup rather than text.
fn outside_cdata(text: &str) -> String {
    // Spans whose text is not markup: CDATA, comments, and processing
    // instructions (the XML declaration included), whose content runs to the
    // first `?>` whatever it holds (finding 3).
    const SPANS: [(&str, &str); 3] = [("<![CDATA[", "]]>"), ("<!--", "-->"), ("<?", "?>")];
    let mut out = String::new();
    let mut rest = text;
    loop {
        let next = SPANS
            .iter()
            .filter_map(|(open, close)| rest.find(open).map(|i| (i, *open, *close)))
            .min_by_key(|(i, _, _)| *i);
        let Some((i, open, close)) = next else { break };
        out.push_str(&rest[..i]);
        let body = i + open.len();
        rest = match rest[body..].find(close) {
            Some(j) => &rest[body + j + close.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}
