//! Money: an amount in fen (1 CNY = 100 fen), an integer, always positive.
//! There is no floating point anywhere near money in this codebase.

use std::fmt;

use super::ValidationError;

/// A WeChat Pay amount in fen. Parsing is the only way to make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fee(i64);

impl Fee {
    /// WeChat's `total_fee` is a 32-bit integer on the wire; larger amounts are
    /// refused here rather than truncated by WeChat.
    pub const MAX: i64 = i32::MAX as i64;

    pub fn new(fen: i64) -> Result<Self, ValidationError> {
        if fen <= 0 {
            return Err(ValidationError::new(
                "total_fee",
                "must be a positive number of fen",
            ));
        }
        if fen > Self::MAX {
            return Err(ValidationError::new(
                "total_fee",
                "is larger than WeChat Pay accepts",
            ));
        }
        Ok(Self(fen))
    }

    /// [`Fee::new`] for a field with another name (`refund_fee`), so the error names it.
    pub fn for_field(field: &'static str, fen: i64) -> Result<Self, ValidationError> {
        Self::new(fen).map_err(|e| ValidationError::new(field, e.reason))
    }

    /// Parses the decimal integer WeChat writes in XML (`"1"`, `"12345"`).
    /// Anything else (`"1.00"`, `"+1"`, `" 1"`, `"01"`) is refused: an amount we cannot
    /// read exactly is an amount we must not act on.
    pub fn parse_wire(field: &'static str, s: &str) -> Result<Self, ValidationError> {
        let canonical = !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_digit())
            && !(s.len() > 1 && s.starts_with('0'));
        if !canonical {
            return Err(ValidationError::new(field, "is not a whole number of fen"));
        }
        let fen: i64 = s
            .parse()
            .map_err(|_| ValidationError::new(field, "is out of range"))?;
        Self::for_field(field, fen)
    }

    pub fn fen(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Fee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_negative_amounts_are_refused() {
        assert!(Fee::new(0).is_err());
        assert!(Fee::new(-1).is_err());
        assert_eq!(Fee::new(1).map(Fee::fen), Ok(1));
    }

    #[test]
    fn amounts_beyond_wechats_int_are_refused() {
        assert!(Fee::new(Fee::MAX).is_ok());
        assert!(Fee::new(Fee::MAX + 1).is_err());
    }

    #[test]
    fn wire_amounts_must_be_plain_integers() {
        assert_eq!(Fee::parse_wire("total_fee", "101").map(Fee::fen), Ok(101));
        for bad in [
            "",
            "1.00",
            "+1",
            " 1",
            "01",
            "-1",
            "1e3",
            "0",
            "99999999999999999999",
        ] {
            assert!(
                Fee::parse_wire("total_fee", bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
