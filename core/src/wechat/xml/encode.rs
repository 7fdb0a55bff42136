//! Writing [`Fields`](super::Fields) as a flat message, CDATA-wrapped so any value round-trips
//! through `decode`, and the fixed reply a notification handler sends. Refuses
//! what it could not write faithfully (names that are not XML names, control
//! characters); parsing is `decode`'s.

use super::XmlError;

fn valid_field_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Encodes fields as `<xml><k><![CDATA[v]]></k>…</xml>`. A value containing `]]>`
/// is split across two CDATA sections so it round-trips exactly.
pub fn encode<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, XmlError> {
    encode_with(fields, "xml")
}

/// [`encode`] with another root element.
pub fn encode_with<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    root: &str,
) -> Result<String, XmlError> {
    let mut out = String::with_capacity(512);
    out.push('<');
    out.push_str(root);
    out.push('>');
    for (k, v) in fields {
        if !valid_field_name(k) {
            return Err(XmlError::BadFieldName(k.to_owned()));
        }
        if v.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(XmlError::Malformed(format!(
                "control character in field {k:?}"
            )));
        }
        out.push('<');
        out.push_str(k);
        out.push_str("><![CDATA[");
        out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(k);
        out.push('>');
    }
    out.push_str("</");
    out.push_str(root);
    out.push('>');
    Ok(out)
}

/// The reply a notification handler sends: `SUCCESS`/`OK` or `FAIL`/reason.
pub fn notify_reply(success: bool, msg: &str) -> String {
    let code = if success { "SUCCESS" } else { "FAIL" };
    // Field names are constants, so encoding cannot fail; fall back to a fixed
    // FAIL rather than panic if a message ever held a control character.
    encode([("return_code", code), ("return_msg", msg)]).unwrap_or_else(|_| {
        "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[ERROR]]></return_msg></xml>".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml::{decode, fields};

    #[test]
    fn values_with_cdata_terminators_and_markup_round_trip() {
        let original = fields(&[
            ("attach", "x]]>y<z>&amp;"),
            ("body", "]]>]]>"),
            ("detail", "<xml><a>1</a></xml>"),
            ("nonce_str", "abc"),
        ]);
        let xml = encode(original.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodes");
        assert_eq!(decode(xml.as_bytes()), Ok(original));
    }

    #[test]
    fn encoding_refuses_names_that_are_not_xml_names() {
        assert!(encode([("a b", "1")]).is_err());
        assert!(encode([("1a", "1")]).is_err());
        assert!(encode([("a", "\u{0}")]).is_err());
    }

    #[test]
    fn notify_replies_are_what_wechat_expects() {
        assert_eq!(
            notify_reply(true, "OK"),
            "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        );
    }
}
