//! Fuzzes the XML codec from the encoder's side: an arbitrary field map
//! (input `key\0value\0key\0value…`, lossy UTF-8) is encoded with
//! `xml::encode` / `encode_with`, and must
//! - be refused exactly when a name is not `[A-Za-z_][A-Za-z0-9_]*` or a value
//!   holds a control character other than tab, LF and CR;
//! - otherwise decode back to the same map (values with `]]>`, markup, `&`,
//!   CR/LF, non-ASCII), under both roots, within the default size bound
//!   (a value holding `<!DOCTYPE`/`<!ENTITY` must give exactly `Err(Doctype)`:
//!   known finding 1, see `wxpay_fuzz::decoder_refuses_value`);
//! - and, once signed with either algorithm, still verify after the trip
//!   through the wire format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxpay_core::wechat::{sign, xml, SignType};
use wxpay_fuzz::{encodable, fields_from_pairs, key, pairs, round_trip_expectation};

fuzz_target!(|data: &[u8]| {
    let fields = fields_from_pairs(data);
    let encoded = xml::encode(pairs(&fields));
    assert_eq!(
        encoded.is_ok(),
        encodable(&fields),
        "encode's refusal for {fields:?}"
    );
    let Ok(doc) = encoded else { return };
    let expected = round_trip_expectation(&fields);
    if doc.len() <= xml::MAX_XML_BYTES {
        assert_eq!(xml::decode(doc.as_bytes()), expected, "{doc:?}");
    }
    let root = xml::encode_with(pairs(&fields), "root").expect("same fields, other root");
    assert_eq!(
        xml::decode_with(root.as_bytes(), "root", usize::MAX),
        expected
    );
    if expected.is_err() {
        return;
    }

    for st in [SignType::Md5, SignType::HmacSha256] {
        let mut signed = fields.clone();
        sign::sign_fields(&mut signed, &key(), st);
        let Ok(wire) = xml::encode(pairs(&signed)) else {
            continue;
        };
        let back = xml::decode_with(wire.as_bytes(), "xml", usize::MAX).expect("decodes");
        assert_eq!(back, signed);
        assert_eq!(sign::verify(&back, &key(), st), Ok(()));
    }
});
