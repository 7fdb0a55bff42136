//! The v2 XML codec: a flat `<xml><field>value</field>…</xml>` to and from a
//! field map. It is deliberately strict, because notifications come from the
//! internet: no DOCTYPE or entity declarations (XXE, billion laughs), no nesting,
//! no duplicate fields, UTF-8 only, and a size bound checked before parsing.
//!
//! This module owns the message shape both directions agree on ([`Fields`]),
//! the size bound and the error type; `decode` owns parsing (every refusal
//! above) and `encode` owns writing. Neither side calls the other.

mod decode;
mod encode;

use std::collections::BTreeMap;

pub use decode::{decode, decode_with};
pub use encode::{encode, encode_with, notify_reply};

/// The fields of one message, as received. Kept as a map of raw strings (not a
/// typed struct) so signatures are verified over every field WeChat sent.
pub type Fields = BTreeMap<String, String>;

/// The default bound on a message: WeChat's messages are a few KiB at most.
pub const MAX_XML_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the body is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("the body is empty")]
    Empty,
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    #[error("DOCTYPE and entity declarations are refused")]
    Doctype,
    #[error("the root element must be <{0}>")]
    WrongRoot(&'static str),
    #[error("field {0:?} appears more than once")]
    DuplicateField(String),
    #[error("field {0:?} is nested; only flat messages are accepted")]
    Nested(String),
    #[error("unknown entity reference")]
    UnknownEntity,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("field name {0:?} is not a valid XML name")]
    BadFieldName(String),
}

/// Builds the field map a test expects from literal pairs; shared by the decode
/// and encode tests so both sides compare against the same shape.
#[cfg(test)]
fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}
