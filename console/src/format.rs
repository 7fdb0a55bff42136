//! How the console writes money, times and statuses for a person: fen as yuan
//! with two decimals (never through a float), times in Beijing time (the
//! merchants' and WeChat's clock), and the parsing of what a person types into
//! a search form.

use chrono::{DateTime, FixedOffset, NaiveDate, Offset, TimeZone, Utc};

/// Beijing time, UTC+8 (no daylight saving).
pub fn beijing() -> FixedOffset {
    // 8 hours is within ±24 h, so this cannot fail; UTC is the fallback all the same.
    FixedOffset::east_opt(8 * 3600).unwrap_or(Utc.fix())
}

/// `2468` → `¥24.68`, `-5` → `-¥0.05`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}¥{}.{:02}", group(abs / 100), abs % 100)
}

/// Thousands separated by commas: 1234567 → 1,234,567.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn count(n: i64) -> String {
    if n < 0 {
        format!("-{}", group(n.unsigned_abs()))
    } else {
        group(n.unsigned_abs())
    }
}

/// `n` and the noun it counts, singular for one: "1 row", "3 rows".
pub fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// A moment in Beijing time, to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.with_timezone(&beijing())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn time_opt(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_default()
}

/// An amount typed in yuan (`12`, `12.3`, `12.34`, `¥1,234.50`) as fen,
/// exactly: more than two decimals is refused rather than rounded.
pub fn parse_yuan(field: &str, s: &str) -> Result<i64, String> {
    let cleaned: String = s
        .trim()
        .trim_start_matches('¥')
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let bad = || format!("{field} must be an amount in yuan such as 12.34 (got {s:?})");
    let (whole, frac) = match cleaned.split_once('.') {
        Some((w, f)) => (w, f),
        None => (cleaned.as_str(), ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 2 {
        return Err(format!(
            "{field} has more than two decimals: a fen is the smallest amount (got {s:?})"
        ));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().map_err(|_| bad())? * 10,
        _ => frac.parse().map_err(|_| bad())?,
    };
    whole
        .checked_mul(100)
        .and_then(|f| f.checked_add(frac))
        .ok_or_else(bad)
}

/// A day typed as `2026-12-07` (or `20261207`).
pub fn parse_day(field: &str, s: &str) -> Result<NaiveDate, String> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y%m%d"))
        .map_err(|_| format!("{field} must be a day such as 2026-12-07 (got {s:?})"))
}

/// The first moment of a Beijing day, in UTC.
pub fn day_start(day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    beijing()
        .from_local_datetime(&midnight)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// Today's date in Beijing.
pub fn today() -> NaiveDate {
    Utc::now().with_timezone(&beijing()).date_naive()
}

/// HTML-escapes text put into markup built outside a template (charts, error pages).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fen_read_as_yuan() {
        assert_eq!(yuan(2468), "¥24.68");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(123456789), "¥1,234,567.89");
        assert_eq!(yuan(-5), "-¥0.05");
        assert_eq!(yuan(0), "¥0.00");
    }

    #[test]
    fn yuan_typed_become_exact_fen() {
        assert_eq!(parse_yuan("min", "12.34"), Ok(1234));
        assert_eq!(parse_yuan("min", "12.3"), Ok(1230));
        assert_eq!(parse_yuan("min", "12"), Ok(1200));
        assert_eq!(parse_yuan("min", "¥1,234.50"), Ok(123450));
        assert_eq!(parse_yuan("min", ".5"), Ok(50));
        assert!(parse_yuan("min", "0.001").is_err());
        assert!(parse_yuan("min", "1e3").is_err());
        assert!(parse_yuan("min", "-1").is_err());
        assert!(parse_yuan("min", "").is_err());
        assert!(parse_yuan("min", "99999999999999999999").is_err());
    }

    #[test]
    fn days_start_at_beijing_midnight() {
        let day = parse_day("from", "2026-12-07").unwrap();
        assert_eq!(day_start(day).to_rfc3339(), "2026-12-06T16:00:00+00:00");
        assert_eq!(parse_day("from", "20261207").unwrap(), day);
        assert!(parse_day("from", "7/12/2026").is_err());
    }
}
