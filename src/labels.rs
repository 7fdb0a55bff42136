//! How the single-process stack's storage and bus are shown to a person (the
//! banner, the demo): URLs without their passwords.

use crate::settings::{Bus, Storage};

/// How the storage is shown to a person: a Postgres URL without its password.
pub fn storage_label(storage: &Storage) -> String {
    match storage {
        Storage::Sqlite(path) => format!("SQLite {} (WAL)", path.display()),
        Storage::Postgres(url) => format!("Postgres {}", redact_password(url)),
    }
}

/// How the bus is shown to a person.
pub fn bus_label(bus: &Bus) -> String {
    match bus {
        Bus::InProcess => "in-process bus".to_owned(),
        Bus::Redis(url) => format!("Redis {}", redact_password(url)),
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
pub fn redact_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..start],
            &authority[..colon],
            &url[start + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_banner() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/wxpay?sslmode=require"),
            "postgres://app:***@db:5432/wxpay?sslmode=require"
        );
        assert_eq!(
            redact_password("redis://:s3cret@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(
            redact_password("postgres://postgres@127.0.0.1:5432/wxpay"),
            "postgres://postgres@127.0.0.1:5432/wxpay"
        );
    }
}
