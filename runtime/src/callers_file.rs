//! `API_CALLERS_FILE`: callers confined to merchants. One `[[caller]]` table
//! each, with `name`, `token_env` (the variable holding its token: the file
//! itself holds no secret), `merchants` (`["shop", …]` or `["*"]`) and
//! `read_only` (default false). Parsed strictly: an unknown field, a merchant
//! nobody configured, a name or a token used twice, a short token or an unset
//! variable is one reason naming the caller, never its token. What a caller may
//! then do is an [`Access`]; the check of tokens is `auth`'s.

use std::collections::HashSet;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use wxpay_core::domain::{Caller, MerchantName};

use crate::{
    access::{Access, MerchantScope},
    callers::MIN_TOKEN_LEN,
};

/// One `[[caller]]` of the file, its token read from its variable.
#[derive(Clone)]
pub struct ScopedCaller {
    pub access: Access,
    pub token: SecretString,
}

impl std::fmt::Debug for ScopedCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedCaller")
            .field("access", &self.access)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A table as written. Unknown fields are refused: a misspelt `read_only`
/// must not silently give a caller write access.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    name: String,
    token_env: String,
    merchants: Vec<String>,
    #[serde(default)]
    read_only: bool,
}

/// Parses the file's text. `env` reads a variable; `merchants`, when given,
/// are the configured merchants' names, and a scope naming another is
/// refused. The reason names the caller (or its position) and never a token.
pub fn parse(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
    merchants: Option<&[&str]>,
) -> Result<Vec<ScopedCaller>, String> {
    let root: toml::Table = toml::from_str(text).map_err(|e| {
        // The parser's Display would quote the offending line: keep only where and why.
        let at = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: ")
            })
            .unwrap_or_default();
        format!("is not valid TOML: {at}{}", e.message().trim())
    })?;
    if let Some(key) = root.keys().find(|k| k.as_str() != "caller") {
        return Err(format!(
            "has an unknown top-level key `{key}` (only [[caller]] tables are read)"
        ));
    }
    let tables = match root.get("caller") {
        None => return Err("has no [[caller]] table".to_owned()),
        Some(toml::Value::Array(items)) => items,
        Some(_) => return Err("`caller` must be [[caller]] tables".to_owned()),
    };
    let mut names = HashSet::new();
    let mut callers: Vec<ScopedCaller> = Vec::with_capacity(tables.len());
    for (i, item) in tables.iter().enumerate() {
        let label = item
            .get("name")
            .and_then(toml::Value::as_str)
            .filter(|n| Caller::parse(n).is_ok())
            .map_or_else(|| format!("#{}", i + 1), str::to_owned);
        let at = |reason: String| format!("caller {label}: {reason}");
        let table: Table = item
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| at(e.message().trim().to_owned()))?;
        let caller = Caller::parse(&table.name).map_err(|e| at(format!("name {}", e.reason)))?;
        if !names.insert(caller.clone()) {
            return Err(at("the name is used by an earlier caller".to_owned()));
        }
        let scope = scope(&table.merchants, merchants).map_err(at)?;
        let token = token(&table.token_env, &env).map_err(at)?;
        if callers
            .iter()
            .any(|c| c.token.expose_secret() == token.expose_secret())
        {
            return Err(at(format!(
                "token_env {}: the same token as an earlier caller's",
                table.token_env
            )));
        }
        callers.push(ScopedCaller {
            access: Access {
                caller,
                merchants: scope,
                read_only: table.read_only,
            },
            token,
        });
    }
    Ok(callers)
}

fn scope(listed: &[String], configured: Option<&[&str]>) -> Result<MerchantScope, String> {
    match listed {
        [] => Err("merchants is empty: list its merchants, or [\"*\"] for all".to_owned()),
        [star] if star == "*" => Ok(MerchantScope::All),
        _ if listed.iter().any(|m| m == "*") => {
            Err("merchants: \"*\" stands alone (it already means every merchant)".to_owned())
        }
        _ => {
            let mut names = Vec::with_capacity(listed.len());
            for m in listed {
                let name = MerchantName::parse(m).map_err(|e| format!("merchants: {e}"))?;
                if configured.is_some_and(|known| !known.contains(&name.as_str())) {
                    return Err(format!(
                        "merchants: {name} is not a configured merchant (configured: {})",
                        configured.unwrap_or_default().join(", ")
                    ));
                }
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            Ok(MerchantScope::Only(names))
        }
    }
}

fn token(var: &str, env: &impl Fn(&str) -> Option<String>) -> Result<SecretString, String> {
    if var.trim().is_empty() {
        return Err("token_env is empty: name the variable that holds its token".to_owned());
    }
    match env(var).map(|v| v.trim().to_owned()) {
        None => Err(format!("token_env {var} is not set")),
        Some(t) if t.is_empty() => Err(format!("token_env {var} is empty")),
        Some(t) if t.len() < MIN_TOKEN_LEN => Err(format!(
            "token_env {var}: the token must be at least {MIN_TOKEN_LEN} characters"
        )),
        Some(t) => Ok(SecretString::from(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "shop-token-0123456789abcdef-0123456";
    const OPS: &str = "ops-token-0123456789abcdef-01234567";

    fn env(var: &str) -> Option<String> {
        match var {
            "SHOP_TOKEN" => Some(SHOP.to_owned()),
            "OPS_TOKEN" => Some(OPS.to_owned()),
            "SHORT_TOKEN" => Some("short-secret".to_owned()),
            "SAME_TOKEN" => Some(SHOP.to_owned()),
            _ => None,
        }
    }

    fn parsed(text: &str) -> Result<Vec<ScopedCaller>, String> {
        parse(text, env, Some(&["default", "shop", "mall"]))
    }

    #[test]
    fn callers_get_their_merchants_and_access() {
        let callers = parsed(
            r#"
[[caller]]
name = "shop"
token_env = "SHOP_TOKEN"
merchants = ["shop"]

[[caller]]
name = "ops"
token_env = "OPS_TOKEN"
merchants = ["*"]
read_only = true
"#,
        )
        .expect("valid");
        assert_eq!(callers.len(), 2);
        assert_eq!(callers[0].access.caller.as_str(), "shop");
        assert_eq!(
            callers[0].access.merchants,
            MerchantScope::Only(vec![MerchantName::parse("shop").expect("name")])
        );
        assert!(!callers[0].access.read_only);
        assert_eq!(callers[0].token.expose_secret(), SHOP);
        assert_eq!(callers[1].access.merchants, MerchantScope::All);
        assert!(callers[1].access.read_only);
        assert!(!format!("{callers:?}").contains(SHOP), "Debug hides tokens");
    }

    #[test]
    fn each_mistake_names_the_caller_and_never_the_token() {
        let table = |body: &str| format!("[[caller]]\nname = \"shop\"\n{body}\n");
        let cases = [
            (
                table("token_env = \"SHOP_TOKEN\"\nmerchants = [\"shop\"]\nreadonly = true"),
                "readonly",
            ),
            (
                table("token_env = \"SHOP_TOKEN\"\nmerchants = [\"nobody\"]"),
                "nobody is not a configured merchant",
            ),
            (table("token_env = \"SHOP_TOKEN\"\nmerchants = []"), "empty"),
            (
                table("token_env = \"SHOP_TOKEN\"\nmerchants = [\"*\", \"shop\"]"),
                "stands alone",
            ),
            (
                table("token_env = \"UNSET_TOKEN\"\nmerchants = [\"shop\"]"),
                "UNSET_TOKEN is not set",
            ),
            (
                table("token_env = \"SHORT_TOKEN\"\nmerchants = [\"shop\"]"),
                "at least 32",
            ),
            (table("token_env = \"SHOP_TOKEN\""), "merchants"),
            (
                format!(
                    "{}{}",
                    table("token_env = \"SHOP_TOKEN\"\nmerchants = [\"shop\"]"),
                    table("token_env = \"OPS_TOKEN\"\nmerchants = [\"shop\"]")
                ),
                "used by an earlier caller",
            ),
        ];
        for (text, expected) in cases {
            let err = parsed(&text).expect_err(expected);
            assert!(err.contains("caller shop"), "{expected}: {err}");
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(
                !err.contains(SHOP) && !err.contains("short-secret"),
                "{err}"
            );
        }
        let twice = parsed(
            "[[caller]]\nname = \"a\"\ntoken_env = \"SHOP_TOKEN\"\nmerchants = [\"*\"]\n\
             [[caller]]\nname = \"b\"\ntoken_env = \"SAME_TOKEN\"\nmerchants = [\"*\"]\n",
        )
        .expect_err("one token for two callers");
        assert!(
            twice.contains("caller b") && twice.contains("same token") && !twice.contains(SHOP),
            "{twice}"
        );
        let top = parsed("[[callers]]\nname = \"a\"\n").expect_err("misspelt table");
        assert!(top.contains("callers"), "{top}");
    }

    #[test]
    fn without_the_merchant_list_names_are_only_checked_as_names() {
        let text = "[[caller]]\nname = \"shop\"\ntoken_env = \"SHOP_TOKEN\"\nmerchants = [\"elsewhere\"]\n";
        assert!(parse(text, env, None).is_ok());
        let bad =
            "[[caller]]\nname = \"shop\"\ntoken_env = \"SHOP_TOKEN\"\nmerchants = [\"no such\"]\n";
        assert!(parse(bad, env, None).is_err());
    }
}
