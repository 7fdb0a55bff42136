//! Parsing a flat message into [`Fields`], and every refusal that makes it safe
//! for bodies from the internet: the size bound before parsing, UTF-8 only, no
//! DOCTYPE or entity declarations, no attributes, nesting or duplicate fields.
//! Writing messages is `encode`'s; nothing here builds XML.

use quick_xml::{
    escape::resolve_predefined_entity,
    events::{BytesStart, Event},
    Reader,
};

use super::{Fields, XmlError, MAX_XML_BYTES};

/// Decodes a `<xml>` message bounded by [`MAX_XML_BYTES`].
pub fn decode(body: &[u8]) -> Result<Fields, XmlError> {
    decode_with(body, "xml", MAX_XML_BYTES)
}

/// Decodes a flat message whose root element is `root` (`xml` for messages,
/// `root` for a decrypted refund `req_info`), refusing bodies over `max_bytes`.
pub fn decode_with(body: &[u8], root: &'static str, max_bytes: usize) -> Result<Fields, XmlError> {
    if body.len() > max_bytes {
        return Err(XmlError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlError::NotUtf8)?;
    if text.trim().is_empty() {
        return Err(XmlError::Empty);
    }
    // No substring pre-check for "<!DOCTYPE": the parser refuses a DocType
    // event and any entity it does not know, while the same characters inside a
    // value (a payer's `attach` echoed back by WeChat) are just text. Refusing
    // those would refuse a genuine payment notification (found by fuzzing).

    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut fields = Fields::new();
    // Where we are: before the root, inside the root, inside a field, after the root.
    let mut seen_root = false;
    let mut closed_root = false;
    let mut current: Option<(String, String)> = None;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::Comment(_) => {}
            Event::PI(_) => return Err(XmlError::Malformed("processing instruction".into())),
            Event::Start(start) => {
                let name = element_name(&start)?;
                if closed_root {
                    return Err(XmlError::Malformed("content after the root element".into()));
                }
                if !seen_root {
                    if name != root {
                        return Err(XmlError::WrongRoot(root));
                    }
                    seen_root = true;
                } else if let Some((field, _)) = &current {
                    return Err(XmlError::Nested(field.clone()));
                } else {
                    current = Some((name, String::new()));
                }
            }
            Event::Empty(start) => {
                let name = element_name(&start)?;
                if !seen_root || closed_root {
                    return Err(XmlError::WrongRoot(root));
                }
                if let Some((field, _)) = &current {
                    return Err(XmlError::Nested(field.clone()));
                }
                insert(&mut fields, name, String::new())?;
            }
            Event::End(_) => {
                // check_end_names guarantees the end tag matches its start tag.
                match current.take() {
                    Some((name, value)) => insert(&mut fields, name, value)?,
                    None => closed_root = true,
                }
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|_| XmlError::NotUtf8)?;
                match &mut current {
                    Some((_, value)) => value.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(XmlError::Malformed("text outside a field".into())),
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|_| XmlError::NotUtf8)?;
                match &mut current {
                    Some((_, value)) => value.push_str(&s),
                    None => return Err(XmlError::Malformed("CDATA outside a field".into())),
                }
            }
            Event::GeneralRef(r) => {
                let resolved: String = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => {
                        let name = r.decode().map_err(|_| XmlError::NotUtf8)?;
                        resolve_predefined_entity(&name)
                            .ok_or(XmlError::UnknownEntity)?
                            .to_owned()
                    }
                    Err(_) => return Err(XmlError::UnknownEntity),
                };
                match &mut current {
                    Some((_, value)) => value.push_str(&resolved),
                    None => return Err(XmlError::Malformed("text outside a field".into())),
                }
            }
            Event::Eof => break,
        }
    }
    if !seen_root || !closed_root || current.is_some() {
        return Err(XmlError::Malformed("truncated document".into()));
    }
    Ok(fields)
}

fn element_name(start: &BytesStart<'_>) -> Result<String, XmlError> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|_| XmlError::NotUtf8)?
        .to_owned();
    // WeChat's field names are letters, digits and underscores (`refund_fee_0`);
    // anything else (a control character, a `<` the parser let through, an
    // attribute) is not a message WeChat wrote. Found by fuzzing: the parser
    // alone accepts such names.
    let wechat_name =
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !wechat_name {
        return Err(XmlError::Malformed(format!(
            "element name {:?} is not a WeChat field name",
            name.chars().take(32).collect::<String>()
        )));
    }
    if start.attributes().next().is_some() {
        return Err(XmlError::Malformed(format!("attributes on <{name}>")));
    }
    Ok(name)
}

fn insert(fields: &mut Fields, name: String, value: String) -> Result<(), XmlError> {
    if fields.contains_key(&name) {
        return Err(XmlError::DuplicateField(name));
    }
    fields.insert(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wechat::xml::fields;

    #[test]
    fn element_names_outside_wechats_alphabet_are_refused() {
        for body in [
            &b"<xml><\x14a>1</\x14a></xml>"[..],
            b"<xml><a-b>1</a-b></xml>",
            b"<xml><a.b>1</a.b></xml>",
            b"<xml><x\x14<!DOCTYPE\x14/><sign>X</sign></xml>",
        ] {
            assert!(decode(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        assert!(decode(b"<xml><refund_fee_0>1</refund_fee_0></xml>").is_ok());
    }

    #[test]
    fn decodes_cdata_text_and_entities() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<xml>
  <return_code><![CDATA[SUCCESS]]></return_code>
  <total_fee>101</total_fee>
  <attach>a &amp; b &lt;c&gt; &#20013;</attach>
  <empty></empty>
  <selfclosed/>
  <body><![CDATA[中文]]></body>
</xml>"#;
        let f = decode(body.as_bytes()).expect("valid message");
        assert_eq!(
            f,
            fields(&[
                ("return_code", "SUCCESS"),
                ("total_fee", "101"),
                ("attach", "a & b <c> 中"),
                ("empty", ""),
                ("selfclosed", ""),
                ("body", "中文"),
            ])
        );
    }

    #[test]
    fn external_entities_are_refused() {
        let fields: Fields = [("attach".to_owned(), "<!DOCTYPE x><!ENTITY y>".to_owned())]
            .into_iter()
            .collect();
        let encoded =
            crate::wechat::xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .expect("encodable");
        assert_eq!(
            decode(encoded.as_bytes()),
            Ok(fields),
            "markup-like text in a value is a value"
        );
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><attach>&xxe;</attach></xml>"#;
        assert_eq!(decode(xxe), Err(XmlError::Doctype));
    }

    #[test]
    fn parameter_entities_are_refused() {
        let pe = br#"<!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/x.dtd"> %remote;]><xml><a>1</a></xml>"#;
        assert_eq!(decode(pe), Err(XmlError::Doctype));
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            doc.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        doc.push_str("]><xml><a>&lol9;</a></xml>");
        assert_eq!(decode(doc.as_bytes()), Err(XmlError::Doctype));
    }

    #[test]
    fn undeclared_entities_are_refused() {
        assert_eq!(
            decode(b"<xml><a>&xxe;</a></xml>"),
            Err(XmlError::UnknownEntity)
        );
    }

    #[test]
    fn a_doctype_in_lowercase_or_odd_spacing_is_still_refused_by_the_parser() {
        // The substring pre-check is an optimisation; the parser's DocType event is the guard.
        let body = b"<!doctype xml><xml><a>1</a></xml>";
        assert!(decode(body).is_err());
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let mut big = b"<xml><a>".to_vec();
        big.extend(std::iter::repeat_n(b'x', 1024 * 1024));
        big.extend(b"</a></xml>");
        assert!(matches!(decode(&big), Err(XmlError::TooLarge(_))));
    }

    #[test]
    fn duplicate_fields_are_refused() {
        assert_eq!(
            decode(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>"),
            Err(XmlError::DuplicateField("total_fee".into()))
        );
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert_eq!(
            decode(b"<xml><body>\xff\xfe</body></xml>"),
            Err(XmlError::NotUtf8)
        );
    }

    #[test]
    fn truncated_and_malformed_documents_are_refused() {
        for bad in [
            &b"<xml><a>1</a>"[..],
            b"<xml><a>1</xml>",
            b"<xml><a>1</b></xml>",
            b"<xml><a><b>1</b></a></xml>",
            b"<other><a>1</a></other>",
            b"<xml a=\"1\"><a>1</a></xml>",
            b"<xml><a>1</a></xml><xml></xml>",
            b"<xml>loose<a>1</a></xml>",
            b"",
            b"not xml",
        ] {
            assert!(
                decode(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
