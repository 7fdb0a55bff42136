//! How every identifier type here is built: the `string_newtype!` shape (a
//! `String` behind a private field, readable but never constructible from
//! outside), the [`ValidationError`] a refused value gives, and the length and
//! control-character checks the parsers share. No type is declared here and no
//! field rule lives here: those belong to the parsers in `generated` and
//! `received`.

/// Why a value was refused, naming the field so the caller can fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct ValidationError {
    pub field: &'static str,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Declares one identifier type. It is invoked in `ids/mod.rs`, not here, so the
/// private field is visible to the parsers in the sibling modules (a private
/// field is visible in its defining module and that module's descendants).
/// Paths are spelled in full (`::std::fmt`) so the macro needs no import at
/// the call site.
macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

// Re-exported by path so `ids/mod.rs` can invoke the macro with a normal `use`.
pub(super) use string_newtype;

pub(super) fn check_len(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    if s.len() < min {
        return Err(ValidationError::new(field, "is required"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, at most {max} allowed", s.len()),
        ));
    }
    Ok(())
}

pub(super) fn check_no_control(field: &'static str, s: &str) -> Result<(), ValidationError> {
    if s.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "contains control characters"));
    }
    Ok(())
}

/// 1..=`max` of `[A-Za-z0-9_-]`: the rule of names (a caller, a merchant) and
/// of a product id.
pub(super) fn check_plain_word(
    field: &'static str,
    s: &str,
    max: usize,
) -> Result<(), ValidationError> {
    check_len(field, s, 1, max)?;
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ValidationError::new(
            field,
            "may contain only letters, digits, '_' and '-'",
        ));
    }
    Ok(())
}
