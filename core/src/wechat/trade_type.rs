//! unifiedorder's `trade_type`: how the payer pays, and so what the order needs
//! (an openid, a product id, a scene) and what it gives back (a prepay_id to
//! sign, a QR code, a link).

use std::{fmt, str::FromStr};

/// The four trade types of a v2 order this product places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TradeType {
    /// In a mini program or official account: `wx.requestPayment` with a paySign.
    #[default]
    Jsapi,
    /// A QR code (`code_url`) scanned with WeChat.
    Native,
    /// A native app, through the OpenSDK (`Sign=WXPay`).
    App,
    /// H5 in a mobile browser outside WeChat (`mweb_url`).
    Mweb,
}

impl TradeType {
    pub const ALL: [TradeType; 4] = [
        TradeType::Jsapi,
        TradeType::Native,
        TradeType::App,
        TradeType::Mweb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TradeType::Jsapi => "JSAPI",
            TradeType::Native => "NATIVE",
            TradeType::App => "APP",
            TradeType::Mweb => "MWEB",
        }
    }

    /// How long what unifiedorder returns may be handed out again. A prepay_id
    /// and a code_url live 2 hours, an mweb_url 5 minutes; each is reused until
    /// a margin before that, so a payer never gets one that dies in their hands.
    pub fn reuse_window(self) -> chrono::Duration {
        match self {
            TradeType::Mweb => chrono::Duration::minutes(4),
            _ => chrono::Duration::minutes(115),
        }
    }
}

impl fmt::Display for TradeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A trade type that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trade_type (JSAPI, NATIVE, APP or MWEB)")]
pub struct UnknownTradeType;

impl FromStr for TradeType {
    type Err = UnknownTradeType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TradeType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownTradeType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for t in TradeType::ALL {
            assert_eq!(t.as_str().parse::<TradeType>(), Ok(t));
        }
        assert!("MICROPAY".parse::<TradeType>().is_err());
        assert!("jsapi".parse::<TradeType>().is_err());
        assert_eq!(TradeType::default(), TradeType::Jsapi);
    }
}
