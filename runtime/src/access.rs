//! What an authenticated request may do: which caller it is, which merchants'
//! orders it may see and act on, and whether it may change anything. The
//! bearer-token check ([`crate::auth`]) puts one [`Access`] in every request it
//! lets through; the handlers ask it. It owns no token and reads no variable.
//!
//! A merchant outside the caller's scope is not a refusal the caller can see:
//! the handlers answer NOT_FOUND exactly as for a number nobody has, so a
//! tenant learns nothing about another tenant's orders, not even that they exist.

use wxpay_core::domain::{Caller, MerchantName};

/// Which merchants a caller acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantScope {
    /// `["*"]`, `API_TOKEN`, `API_READ_TOKEN`: every merchant, present and future.
    All,
    /// Only these (never empty: the callers file refuses an empty list).
    Only(Vec<MerchantName>),
}

impl MerchantScope {
    /// Whether an order placed with `merchant` is within the scope.
    pub fn allows(&self, merchant: &MerchantName) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(merchant),
        }
    }

    /// Whether the scope takes in every one of `configured`: such a caller may
    /// act on what concerns all merchants at once (a day's bill).
    pub fn covers<'a>(&self, mut configured: impl Iterator<Item = &'a str>) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => configured.all(|c| names.iter().any(|n| n.as_str() == c)),
        }
    }
}

/// The caller of a request and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Scopes CreateOrder's idempotency keys.
    pub caller: Caller,
    pub merchants: MerchantScope,
    /// Only the methods of [`crate::auth::READ_METHODS`].
    pub read_only: bool,
}

impl Access {
    /// Every merchant, every method: an `API_TOKEN` entry, or a server that
    /// checks no token (loopback).
    pub fn full(caller: Caller) -> Self {
        Self {
            caller,
            merchants: MerchantScope::All,
            read_only: false,
        }
    }

    /// `API_READ_TOKEN`: every merchant, reading methods only.
    pub fn read_everything() -> Self {
        Self {
            caller: Caller::default_caller(),
            merchants: MerchantScope::All,
            read_only: true,
        }
    }

    /// Whether the caller may see an order placed with `merchant`.
    pub fn sees(&self, merchant: &MerchantName) -> bool {
        self.merchants.allows(merchant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> MerchantName {
        MerchantName::parse(s).expect("a valid name")
    }

    #[test]
    fn a_confined_caller_sees_only_its_merchants() {
        let shop = Access {
            caller: Caller::parse("shop").expect("name"),
            merchants: MerchantScope::Only(vec![name("shop")]),
            read_only: false,
        };
        assert!(shop.sees(&name("shop")));
        assert!(!shop.sees(&name("default")));
        assert!(Access::full(Caller::default_caller()).sees(&name("anyone")));
        assert!(!shop.merchants.covers(["shop", "default"].into_iter()));
        assert!(shop.merchants.covers(["shop"].into_iter()));
        assert!(MerchantScope::All.covers(["shop", "default"].into_iter()));
    }
}
