//! How domain values travel as JSON (the order events on the bus): as the plain
//! strings and numbers WeChat and every consumer know, parsed back through the
//! same validating constructors, so a malformed event is refused at the edge
//! instead of becoming an invalid value inside the product.

use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

use super::{Fee, OrderStatus, OutTradeNo};

impl Serialize for OutTradeNo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OutTradeNo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OutTradeNo::parse(&s).map_err(D::Error::custom)
    }
}

/// As its WeChat name (`"SUCCESS"`, `"NOTPAY"`, …).
impl Serialize for OrderStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for OrderStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// As an integer number of fen.
impl Serialize for Fee {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.fen())
    }
}

impl<'de> Deserialize<'de> for Fee {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fen = i64::deserialize(d)?;
        Fee::new(fen).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_plain_json() {
        let no = OutTradeNo::parse("A1_b-2").expect("valid");
        assert_eq!(serde_json::to_string(&no).expect("encode"), "\"A1_b-2\"");
        assert_eq!(
            serde_json::from_str::<OutTradeNo>("\"A1_b-2\"").expect("decode"),
            no
        );
        assert_eq!(
            serde_json::to_string(&OrderStatus::NotPay).expect("encode"),
            "\"NOTPAY\""
        );
        assert_eq!(
            serde_json::from_str::<Fee>("101").expect("decode"),
            Fee::new(101).expect("valid")
        );
    }

    #[test]
    fn invalid_values_are_refused_at_the_edge() {
        assert!(serde_json::from_str::<OutTradeNo>("\"has space\"").is_err());
        assert!(serde_json::from_str::<OutTradeNo>("\"\"").is_err());
        assert!(serde_json::from_str::<OrderStatus>("\"PAID\"").is_err());
        assert!(serde_json::from_str::<Fee>("0").is_err());
        assert!(serde_json::from_str::<Fee>("-5").is_err());
    }
}
