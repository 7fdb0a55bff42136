//! The rules of the values that say where an order is placed: the merchant's
//! name and a NATIVE order's product id. They come
//! from the caller, are stored with the order and must repeat on a retry.

use super::{
    newtype::{check_len, ValidationError},
    MerchantName, ProductId,
};

/// `[A-Za-z0-9_-]` only: what a merchant name and a product id may hold.
fn plain_word(field: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
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

impl MerchantName {
    /// The merchant the `WECHAT_*` variables define, used when a request names none.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        plain_word("merchant", s, 32)?;
        Ok(Self(s.to_owned()))
    }

    /// An empty name is the default merchant (proto3's unset string).
    pub fn parse_or_default(s: &str) -> Result<Self, ValidationError> {
        if s.is_empty() {
            Ok(Self::default_merchant())
        } else {
            Self::parse(s)
        }
    }

    pub fn default_merchant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl ProductId {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        plain_word("product_id", s, 32)?;
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_product_ids_are_plain_words() {
        assert!(MerchantName::parse("shop-2_b").is_ok());
        assert_eq!(
            MerchantName::parse_or_default("").unwrap().as_str(),
            "default"
        );
        assert_eq!(MerchantName::parse("a b").unwrap_err().field, "merchant");
        assert_eq!(
            MerchantName::parse(&"x".repeat(33)).unwrap_err().field,
            "merchant"
        );
        assert!(ProductId::parse("sku-1").is_ok());
        assert_eq!(ProductId::parse("").unwrap_err().field, "product_id");
        assert_eq!(ProductId::parse("a/b").unwrap_err().field, "product_id");
    }
}
