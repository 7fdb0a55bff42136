//! The rules of the values that say where an order is placed: the merchant's
//! name and a NATIVE order's product id. Both come from the caller.

use super::{
    newtype::{check_plain_word, ValidationError},
    MerchantName, ProductId,
};

impl MerchantName {
    /// The merchant the `WECHAT_*` variables define, used when a request names none.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_plain_word("merchant", s, 32)?;
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
        check_plain_word("product_id", s, 32)?;
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
