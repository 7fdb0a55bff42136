//! WeChat's timestamps in China Standard Time (UTC+8, no DST): `yyyyMMddHHmmss`
//! on v2 payments, `yyyy-MM-dd HH:mm:ss` on v2 refunds (`success_time`,
//! `refund_success_time_$n`), RFC 3339 with `+08:00` everywhere in v3
//! (`time_expire`, `success_time`, a certificate's dates).

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

const FORMAT: &str = "%Y%m%d%H%M%S";

fn china() -> FixedOffset {
    // 8 hours is a valid offset; east_opt only fails beyond ±24 h.
    match FixedOffset::east_opt(8 * 3600) {
        Some(tz) => tz,
        None => unreachable!("UTC+8 is a valid offset"),
    }
}

pub fn format(t: DateTime<Utc>) -> String {
    t.with_timezone(&china()).format(FORMAT).to_string()
}

/// Parses `time_end`/`time_expire`; `None` when it is not exactly 14 digits of a real time.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(s, FORMAT).ok()?;
    china()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a refund's `yyyy-MM-dd HH:mm:ss`; `None` unless it is exactly that.
pub fn parse_readable(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 19 {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    china()
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// v3's form: RFC 3339 in Beijing time, seconds, `+08:00`
/// (`2018-06-08T10:34:56+08:00`), which is what WeChat writes and expects.
pub fn format_rfc3339(t: DateTime<Utc>) -> String {
    t.with_timezone(&china())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

/// Parses a v3 time (RFC 3339, any offset WeChat might write); `None` unless valid.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_time_is_utc_plus_eight() {
        let t = parse("20170330102422").expect("valid");
        assert_eq!(t.to_rfc3339(), "2017-03-30T02:24:22+00:00");
        assert_eq!(format(t), "20170330102422");
        assert!(parse("2017033010242").is_none());
        assert!(parse("20171330102422").is_none());
        assert!(parse("2017-03-30 10:2").is_none());
    }

    #[test]
    fn refund_times_are_readable_china_time() {
        let t = parse_readable("2017-03-30 10:24:22").expect("valid");
        assert_eq!(t.to_rfc3339(), "2017-03-30T02:24:22+00:00");
        assert!(parse_readable("2017-03-30 10:24").is_none());
        assert!(parse_readable("20170330102422").is_none());
        assert!(parse_readable("2017-02-30 10:24:22").is_none());
    }

    #[test]
    fn v3_times_are_rfc3339_in_beijing_time() {
        let t = parse_rfc3339("2018-06-08T10:34:56+08:00").expect("valid");
        assert_eq!(t.to_rfc3339(), "2018-06-08T02:34:56+00:00");
        assert_eq!(format_rfc3339(t), "2018-06-08T10:34:56+08:00");
        assert_eq!(parse_rfc3339("2018-06-08T02:34:56Z"), Some(t));
        assert!(parse_rfc3339("2018-06-08 10:34:56").is_none());
    }
}
