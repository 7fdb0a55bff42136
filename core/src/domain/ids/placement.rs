//! The rules of the values that say where an order is placed: the merchant's
//! name, a NATIVE order's product id and an MWEB order's scene. All come from
//! the caller.

use super::{
    newtype::{check_len, check_plain_word, ValidationError},
    MerchantName, ProductId, SceneInfo,
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

impl SceneInfo {
    /// WeChat's String(256); its documentation shows `{"h5_info": {"type": "Wap",
    /// "wap_url": ..., "wap_name": ...}}`, and unifiedorder refuses an MWEB
    /// order whose scene it cannot read, so the shape is checked here, where the
    /// caller can still be told which field is wrong.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        const FIELD: &str = "scene_info";
        check_len(FIELD, s, 1, 256)?;
        let value: serde_json::Value =
            serde_json::from_str(s).map_err(|_| ValidationError::new(FIELD, "must be JSON"))?;
        let kind = value
            .get("h5_info")
            .and_then(|h5| h5.get("type"))
            .and_then(serde_json::Value::as_str);
        match kind {
            Some("Wap" | "IOS" | "Android") => Ok(Self(s.to_owned())),
            _ => Err(ValidationError::new(
                FIELD,
                "must be an object with h5_info.type Wap, IOS or Android",
            )),
        }
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

    #[test]
    fn a_scene_is_wechats_h5_json() {
        let wap =
            r#"{"h5_info":{"type":"Wap","wap_url":"https://m.shop.example","wap_name":"shop"}}"#;
        assert_eq!(SceneInfo::parse(wap).unwrap().as_str(), wap);
        assert!(SceneInfo::parse(r#"{"h5_info":{"type":"IOS","app_name":"a"}}"#).is_ok());
        for bad in [
            "",
            "Wap",
            r#"{"h5_info":{}}"#,
            r#"{"h5_info":{"type":"Desktop"}}"#,
            r#"["h5_info"]"#,
        ] {
            assert_eq!(
                SceneInfo::parse(bad).unwrap_err().field,
                "scene_info",
                "{bad}"
            );
        }
        let long = format!(
            r#"{{"h5_info":{{"type":"Wap","wap_name":"{}"}}}}"#,
            "x".repeat(240)
        );
        assert!(SceneInfo::parse(&long).is_err());
    }
}
