//! RFC 3339 timestamps in UTC (`2026-12-01T00:00:00Z`) as seconds since the Unix epoch: the
//! small part of RFC 3339 a config needs, without a date crate.
//!
//! Only UTC is accepted (`Z`, or an offset of `+00:00`): a config is read on machines in every
//! time zone, and a moment written in UTC means the same one on all of them. Times are kept to
//! the second, so a fraction must be zero (`.000Z`, as JavaScript's `toISOString` writes).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("empty timestamp; write a UTC date and time, e.g. '2026-12-01T00:00:00Z'")]
    Empty,
    #[error("'{0}' has no time of day; write e.g. '{0}T00:00:00Z'")]
    NoTime(String),
    #[error("'{0}' has no time zone; add 'Z' for UTC, e.g. '2026-12-01T00:00:00Z'")]
    NoZone(String),
    #[error("'{0}' is not in UTC; write the time in UTC with a 'Z', e.g. '2026-12-01T00:00:00Z'")]
    NotUtc(String),
    #[error("'{0}' has a fraction of a second; the time is kept to the second")]
    Fraction(String),
    #[error("'{0}' is not a valid date and time")]
    OutOfRange(String),
    #[error("'{0}' is before 1970")]
    BeforeEpoch(String),
    #[error("'{0}' is not a timestamp; write a UTC date and time, e.g. '2026-12-01T00:00:00Z'")]
    Invalid(String),
}

const SECONDS_PER_DAY: i64 = 86_400;

/// Parses `2026-12-01T00:00:00Z` (also with a lowercase `t` or `z`, a space for the `T`, a
/// zero fraction, or `+00:00`) into seconds since 1970-01-01T00:00:00Z.
pub fn parse_timestamp(text: &str) -> Result<u64, TimestampError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(TimestampError::Empty);
    }
    let invalid = || TimestampError::Invalid(t.to_owned());
    let (date, rest) = t.split_at_checked(10).ok_or_else(invalid)?;
    let [year, month, day] = fields(date, '-', [4, 2, 2]).ok_or_else(invalid)?;
    if rest.is_empty() {
        return Err(TimestampError::NoTime(t.to_owned()));
    }
    let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(invalid)?;
    let (time, zone) = rest.split_at_checked(8).ok_or_else(invalid)?;
    let [hour, minute, second] = fields(time, ':', [2, 2, 2]).ok_or_else(invalid)?;
    let zone = match zone.strip_prefix('.') {
        Some(after) => {
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            let (fraction, zone) = after.split_at(digits);
            if fraction.is_empty() {
                return Err(invalid());
            }
            if fraction.bytes().any(|b| b != b'0') {
                return Err(TimestampError::Fraction(t.to_owned()));
            }
            zone
        }
        None => zone,
    };
    match zone {
        "Z" | "z" | "+00:00" | "-00:00" => {}
        "" => return Err(TimestampError::NoZone(t.to_owned())),
        _ if is_offset(zone) => return Err(TimestampError::NotUtc(t.to_owned())),
        _ => return Err(invalid()),
    }
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return Err(TimestampError::OutOfRange(t.to_owned()));
    }
    let seconds =
        days_from_civil(year, month, day) * SECONDS_PER_DAY + (hour * 3600 + minute * 60 + second);
    u64::try_from(seconds).map_err(|_| TimestampError::BeforeEpoch(t.to_owned()))
}

/// Formats seconds since the epoch the way [`parse_timestamp`] reads them:
/// `2026-12-01T00:00:00Z`.
pub fn format_timestamp(seconds: u64) -> String {
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    let (days, time) = (
        seconds.div_euclid(SECONDS_PER_DAY),
        seconds.rem_euclid(SECONDS_PER_DAY),
    );
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

/// Three numbers of exactly `widths` digits separated by `sep`: `2026-12-01`, `00:00:00`.
fn fields(text: &str, sep: char, widths: [usize; 3]) -> Option<[i64; 3]> {
    let mut parts = text.split(sep);
    let mut out = [0; 3];
    for (slot, width) in out.iter_mut().zip(widths) {
        let part = parts.next()?;
        if part.len() != width || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// `+01:00`, `-05:30`: a numeric offset, as RFC 3339 writes one.
fn is_offset(zone: &str) -> bool {
    zone.strip_prefix(['+', '-'])
        .is_some_and(|hm| fields(&format!("{hm}:00"), ':', [2, 2, 2]).is_some())
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The number of days in `month` (1–12) of `year`, proleptic Gregorian.
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the date (proleptic Gregorian), after Howard Hinnant's
/// `days_from_civil`.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("2026-12-01T00:00:00Z"), Ok(1_796_083_200));
        assert_eq!(parse_timestamp("2000-02-29T23:59:59Z"), Ok(951_868_799));
        assert_eq!(parse_timestamp(" 2026-12-01t00:00:00z "), Ok(1_796_083_200));
        assert_eq!(parse_timestamp("2026-12-01 00:00:00Z"), Ok(1_796_083_200));
        assert_eq!(
            parse_timestamp("2026-12-01T00:00:00.000Z"),
            Ok(1_796_083_200)
        );
        assert_eq!(
            parse_timestamp("2026-12-01T00:00:00+00:00"),
            Ok(1_796_083_200)
        );
        assert_eq!(parse_timestamp("9999-12-31T23:59:59Z"), Ok(253_402_300_799));
    }

    #[test]
    fn refuses_what_is_not_a_utc_timestamp() {
        use TimestampError::*;
        let err = |text: &str| parse_timestamp(text).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(
            err("2026-12-01").to_string(),
            "'2026-12-01' has no time of day; write e.g. '2026-12-01T00:00:00Z'"
        );
        assert_eq!(
            err("2026-12-01T00:00:00"),
            NoZone("2026-12-01T00:00:00".into())
        );
        assert_eq!(
            err("2026-12-01T01:00:00+01:00"),
            NotUtc("2026-12-01T01:00:00+01:00".into())
        );
        assert_eq!(
            err("2026-12-01T00:00:00.5Z"),
            Fraction("2026-12-01T00:00:00.5Z".into())
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T00:60:00Z",
            "2026-12-01T00:00:60Z",
            "2026-00-01T00:00:00Z",
        ] {
            assert_eq!(err(bad), OutOfRange(bad.into()), "{bad}");
        }
        assert_eq!(
            err("1969-12-31T23:59:59Z"),
            BeforeEpoch("1969-12-31T23:59:59Z".into())
        );
        for bad in [
            "tomorrow",
            "2026-1-01T00:00:00Z",
            "2026-12-01T00:00Z",
            "2026-12-01X00:00:00Z",
            "2026-12-01T00:00:00.Z",
            "2026-12-01T00:00:00 UTC",
            "+2026-12-01T00:00:00Z",
            "2026-12-01T00:00:00Zulu",
        ] {
            assert_eq!(err(bad), Invalid(bad.into()), "{bad}");
        }
    }

    #[test]
    fn timestamps_round_trip() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2024-02-29T12:34:56Z",
            "2100-03-01T00:00:01Z",
            "9999-12-31T23:59:59Z",
        ] {
            let seconds = parse_timestamp(text).unwrap();
            assert_eq!(format_timestamp(seconds), text);
        }
        // Every day over a few leap cycles lands on the date it came from.
        for day in 0..(366 * 9) {
            let seconds = day * 86_400 + 3_661;
            assert_eq!(
                parse_timestamp(&format_timestamp(seconds)),
                Ok(seconds),
                "day {day}"
            );
        }
    }
}
