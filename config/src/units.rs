//! Durations (`250ms`, `1.5s`, `1m30s`), byte sizes (`60KiB`, `10MB`, `1024`) and percentages
//! (`50%`, `12.5%`) as people write them in config files.
//!
//! Parsing uses integer arithmetic only, never floating point, so a value read and formatted
//! back is identical and `1.1s` is exactly 1100 ms. The proxy reuses these for its flags.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Duration units. A unit is the whole run of letters after a number, so `ms` is never read as
/// `m` followed by `s`.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("ns", 1),
    ("h", 3_600 * NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("s", NANOS_PER_SEC),
];

/// Size units, compared case-insensitively. SI units are powers of 1000 and IEC units powers of
/// 1024, as everywhere else (`KB` is not 1024 here: that is `KiB`).
const SIZE_UNITS: &[(&str, u128)] = &[
    ("", 1),
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write a number and a unit, e.g. '10s'")]
    Empty,
    #[error("'{0}' has no unit; add one, e.g. '{0}s' or '{0}ms'")]
    NoUnit(String),
    #[error("'{text}': the number '{number}' has no unit; add one, e.g. '{number}s'")]
    TrailingNumber { text: String, number: String },
    #[error("unknown unit '{unit}' in '{text}'; use h, m, s, ms, us or ns")]
    UnknownUnit { text: String, unit: String },
    #[error("'{0}' is not a duration; write e.g. '250ms', '1.5s' or '1m30s'")]
    Invalid(String),
    #[error("'{0}' is finer than a nanosecond")]
    TooPrecise(String),
    #[error("'{0}' is too long")]
    TooLarge(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size; write a number of bytes, or a number and a unit, e.g. '64KiB'")]
    Empty,
    #[error("unknown unit '{unit}' in '{text}'; use B, KB, MB, GB, KiB, MiB or GiB")]
    UnknownUnit { text: String, unit: String },
    #[error("'{0}' is not a size; write bytes ('1024') or a number and a unit ('64KiB', '1.5MB')")]
    Invalid(String),
    #[error("'{0}' is not a whole number of bytes")]
    Fractional(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("empty percentage; write a number and '%', e.g. '10%'")]
    Empty,
    /// `0.5` could be half or half a percent; only the `%` says which.
    #[error("'{0}' has no '%'; write a percentage, e.g. '10%'")]
    NoSign(String),
    #[error("'{0}' is not a percentage; write e.g. '10%' or '12.5%'")]
    Invalid(String),
    #[error("'{0}' is finer than 0.001%")]
    TooPrecise(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Percentages are kept to a thousandth of a percent: exact in decimal, and far finer than any
/// share of endpoints or of a health-check interval needs.
const PERCENT_SCALE: u128 = 1_000;

/// A decimal number split into its integer digits and fraction digits, read exactly.
struct Decimal<'a> {
    int: &'a str,
    frac: &'a str,
}

impl Decimal<'_> {
    /// `self * unit`, which must be a whole number; `None` if it is not, `Err` on overflow.
    fn times(&self, unit: u128) -> Result<Option<u128>, ()> {
        // 30 digits already exceed anything that fits a Duration or u64 times any unit.
        if self.int.len() > 30 || self.frac.len() > 30 {
            return Err(());
        }
        let int: u128 = if self.int.is_empty() {
            0
        } else {
            self.int.parse().map_err(|_| ())?
        };
        let frac: u128 = if self.frac.is_empty() {
            0
        } else {
            self.frac.parse().map_err(|_| ())?
        };
        let scale = 10u128.pow(self.frac.len() as u32);
        let whole = int.checked_mul(unit).ok_or(())?;
        let part = frac.checked_mul(unit).ok_or(())?;
        if !part.is_multiple_of(scale) {
            return Ok(None);
        }
        whole.checked_add(part / scale).ok_or(()).map(Some)
    }
}

/// Splits a leading decimal number (`12`, `1.5`, `.5`) off `s`.
fn split_number(s: &str) -> Option<(Decimal<'_>, &str)> {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let end = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            after.split_at(end)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    Some((Decimal { int, frac }, rest))
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h`, `1m30s` (units h, m, s, ms, us, ns; several
/// number-unit pairs add up). A bare number is refused: `10` could mean seconds or
/// milliseconds, and guessing wrong is a thousandfold error.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    if split_number(t).is_some_and(|(_, rest)| rest.is_empty()) {
        return Err(DurationError::NoUnit(t.to_owned()));
    }
    let mut rest = t;
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let (number, after) =
            split_number(rest).ok_or_else(|| DurationError::Invalid(t.to_owned()))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        // Spaces are allowed around units ("1m 30s"): they cannot change the meaning.
        let unit = unit.trim();
        if unit.is_empty() {
            let number = &rest[..rest.len() - after.len()];
            return Err(DurationError::TrailingNumber {
                text: t.to_owned(),
                number: number.to_owned(),
            });
        }
        let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                text: t.to_owned(),
                unit: unit.to_owned(),
            });
        };
        let value = number
            .times(scale)
            .map_err(|()| DurationError::TooLarge(t.to_owned()))?
            .ok_or_else(|| DurationError::TooPrecise(t.to_owned()))?;
        nanos = nanos
            .checked_add(value)
            .ok_or_else(|| DurationError::TooLarge(t.to_owned()))?;
        rest = after;
    }
    let secs =
        u64::try_from(nanos / NANOS_PER_SEC).map_err(|_| DurationError::TooLarge(t.to_owned()))?;
    Ok(Duration::new(secs, (nanos % NANOS_PER_SEC) as u32))
}

/// Formats a duration the way a person would write it, such that [`parse_duration`] reads it
/// back exactly: `1h`, `1m30s`, `1.5s`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut out = String::new();
    let total = d.as_secs();
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let nanos = d.subsec_nanos();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if nanos == 0 {
        if seconds > 0 || out.is_empty() {
            out.push_str(&format!("{seconds}s"));
        }
    } else if seconds > 0 {
        let frac = format!("{nanos:09}");
        out.push_str(&format!("{seconds}.{}s", frac.trim_end_matches('0')));
    } else if nanos.is_multiple_of(1_000_000) {
        out.push_str(&format!("{}ms", nanos / 1_000_000));
    } else if nanos.is_multiple_of(1_000) {
        out.push_str(&format!("{}us", nanos / 1_000));
    } else {
        out.push_str(&format!("{nanos}ns"));
    }
    out
}

/// Parses a byte size: `1024`, `512B`, `64KiB`, `1.5MiB`, `10MB`, `1GiB` (units are
/// case-insensitive; a space before the unit is allowed).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let (number, unit) = split_number(t).ok_or_else(|| SizeError::Invalid(t.to_owned()))?;
    let unit = unit.trim_start();
    let Some(&(_, scale)) = SIZE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
    else {
        if unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(SizeError::UnknownUnit {
                text: t.to_owned(),
                unit: unit.to_owned(),
            });
        }
        return Err(SizeError::Invalid(t.to_owned()));
    };
    let bytes = number
        .times(scale)
        .map_err(|()| SizeError::TooLarge(t.to_owned()))?
        .ok_or_else(|| SizeError::Fractional(t.to_owned()))?;
    u64::try_from(bytes).map_err(|_| SizeError::TooLarge(t.to_owned()))
}

/// Formats a size in the largest unit that divides it exactly, preferring the binary units
/// people use for buffers: `60KiB`, `10MiB`, `10MB`, `1500B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ];
    for &(name, scale) in UNITS {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{name}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

/// Parses `50%`, `12.5%`, `0%`, `100 %` into a share of one (`0.5`, `0.125`...). A bare number
/// is refused: `0.5` could mean half or half a percent.
pub fn parse_percent(text: &str) -> Result<f64, PercentError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(PercentError::Empty);
    }
    let Some(number) = t.strip_suffix('%').map(str::trim_end) else {
        return match split_number(t) {
            Some((_, "")) => Err(PercentError::NoSign(t.to_owned())),
            _ => Err(PercentError::Invalid(t.to_owned())),
        };
    };
    let Some((decimal, "")) = split_number(number) else {
        return Err(PercentError::Invalid(t.to_owned()));
    };
    let thousandths = decimal
        .times(PERCENT_SCALE)
        .map_err(|()| PercentError::TooLarge(t.to_owned()))?
        .ok_or_else(|| PercentError::TooPrecise(t.to_owned()))?;
    // Anything this large is out of every range anyway; the bound keeps the f64 exact.
    if thousandths > u128::from(u32::MAX) {
        return Err(PercentError::TooLarge(t.to_owned()));
    }
    Ok(thousandths as f64 / (100 * PERCENT_SCALE) as f64)
}

/// Formats a share of one as a percentage that [`parse_percent`] reads back to the same value:
/// `0.5` is `50%`, `0.125` is `12.5%`. Shares finer than 0.001% are rounded to it.
pub fn format_percent(share: f64) -> String {
    let thousandths = (share * (100 * PERCENT_SCALE) as f64).round().max(0.0) as u128;
    let (whole, frac) = (thousandths / PERCENT_SCALE, thousandths % PERCENT_SCALE);
    if frac == 0 {
        format!("{whole}%")
    } else {
        let frac = format!("{frac:03}");
        format!("{whole}.{}%", frac.trim_end_matches('0'))
    }
}

/// Rate units: tokens per second, minute or hour.
const RATE_UNITS: &[(&str, f64)] = &[("s", 1.0), ("m", 60.0), ("h", 3600.0)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("empty rate; write a number per second, minute or hour, e.g. '100/s'")]
    Empty,
    /// `100` could be per second or per minute; only the unit says which.
    #[error("'{0}' has no unit; write e.g. '{0}/s' or '{0}/m'")]
    NoUnit(String),
    #[error("unknown unit '{unit}' in '{text}'; use s, m or h (per second, minute or hour)")]
    UnknownUnit { text: String, unit: String },
    #[error("'{0}' is not a rate; write e.g. '100/s', '2.5/s' or '30/m'")]
    Invalid(String),
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Parses `100/s`, `2.5/s`, `30/m`, `1/h` into tokens per second. The unit is required: a
/// bare `100` could mean per second or per minute.
pub fn parse_rate(text: &str) -> Result<f64, RateError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(RateError::Empty);
    }
    let Some((number, unit)) = t.split_once('/') else {
        return match split_number(t) {
            Some((_, "")) => Err(RateError::NoUnit(t.to_owned())),
            _ => Err(RateError::Invalid(t.to_owned())),
        };
    };
    let (number, unit) = (number.trim_end(), unit.trim_start());
    let Some((decimal, "")) = split_number(number) else {
        return Err(RateError::Invalid(t.to_owned()));
    };
    let Some(&(_, seconds)) = RATE_UNITS.iter().find(|(name, _)| *name == unit) else {
        if !unit.is_empty() && unit.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(RateError::UnknownUnit {
                text: t.to_owned(),
                unit: unit.to_owned(),
            });
        }
        return Err(RateError::Invalid(t.to_owned()));
    };
    // 30 digits is far past any range; the bound keeps the f64 finite.
    if decimal.int.len() > 30 {
        return Err(RateError::TooLarge(t.to_owned()));
    }
    let count: f64 = number
        .parse()
        .map_err(|_| RateError::Invalid(t.to_owned()))?;
    Ok(count / seconds)
}

/// Formats tokens per second as a rate that [`parse_rate`] reads back to the same value,
/// per second when that is exact to three decimals (`100/s`, `0.5/s`), else per minute or
/// per hour (`10/m`, `1/h`), else with every digit it takes.
pub fn format_rate(per_second: f64) -> String {
    for (unit, seconds) in RATE_UNITS {
        let count = per_second * seconds;
        for decimals in 0..=3 {
            let candidate = format!("{count:.decimals$}/{unit}");
            if parse_rate(&candidate) == Ok(per_second) {
                return candidate;
            }
        }
    }
    format!("{per_second}/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1.1s"), Ok(ms(1100)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration(" 10s "), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("5 s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5us"), Ok(Duration::from_micros(5)));
        assert_eq!(parse_duration("5µs"), Ok(Duration::from_micros(5)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_bare_numbers_with_a_hint() {
        let err = parse_duration("10").unwrap_err();
        assert_eq!(err, DurationError::NoUnit("10".into()));
        assert_eq!(
            err.to_string(),
            "'10' has no unit; add one, e.g. '10s' or '10ms'"
        );
        assert_eq!(
            parse_duration("1.5").unwrap_err(),
            DurationError::NoUnit("1.5".into())
        );
        assert_eq!(
            parse_duration("1m30").unwrap_err().to_string(),
            "'1m30': the number '30' has no unit; add one, e.g. '30s'"
        );
    }

    #[test]
    fn refuses_bad_durations() {
        assert_eq!(parse_duration("").unwrap_err(), DurationError::Empty);
        assert_eq!(
            parse_duration("5x").unwrap_err().to_string(),
            "unknown unit 'x' in '5x'; use h, m, s, ms, us or ns"
        );
        assert_eq!(
            parse_duration("5 sec").unwrap_err(),
            DurationError::UnknownUnit {
                text: "5 sec".into(),
                unit: "sec".into()
            }
        );
        assert_eq!(
            parse_duration("-1s").unwrap_err(),
            DurationError::Invalid("-1s".into())
        );
        assert_eq!(
            parse_duration("s").unwrap_err(),
            DurationError::Invalid("s".into())
        );
        assert_eq!(
            parse_duration("1.5ns").unwrap_err(),
            DurationError::TooPrecise("1.5ns".into())
        );
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_durations_readably() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(250)), "250ms");
        assert_eq!(format_duration(ms(1000)), "1s");
        assert_eq!(format_duration(ms(1500)), "1.5s");
        assert_eq!(format_duration(ms(90_000)), "1m30s");
        assert_eq!(format_duration(ms(3_600_000)), "1h");
        assert_eq!(format_duration(ms(3_660_000)), "1h1m");
        assert_eq!(format_duration(ms(3_600_250)), "1h250ms");
        assert_eq!(format_duration(Duration::from_micros(5)), "5us");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(format_duration(Duration::new(1, 1)), "1.000000001s");
    }

    #[test]
    fn durations_round_trip() {
        for text in [
            "250ms", "1s", "1.5s", "2m", "1h", "1m30s", "24h", "168h", "1h250ms",
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        for nanos in [1, 999, 1_000, 1_000_001, 59_999_999_999, 3_600_000_000_001] {
            let d = Duration::from_nanos(nanos);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{nanos}ns");
        }
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("60KiB"), Ok(61_440));
        assert_eq!(parse_size("60kib"), Ok(61_440));
        assert_eq!(parse_size("60 KiB"), Ok(61_440));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5MiB"), Ok(1_572_864));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert_eq!(parse_size(" ").unwrap_err(), SizeError::Empty);
        assert_eq!(
            parse_size("10kbit").unwrap_err().to_string(),
            "unknown unit 'kbit' in '10kbit'; use B, KB, MB, GB, KiB, MiB or GiB"
        );
        assert_eq!(
            parse_size("1.5B").unwrap_err(),
            SizeError::Fractional("1.5B".into())
        );
        assert_eq!(
            parse_size("-1").unwrap_err(),
            SizeError::Invalid("-1".into())
        );
        assert_eq!(
            parse_size("KiB").unwrap_err(),
            SizeError::Invalid("KiB".into())
        );
        assert!(matches!(
            parse_size("99999999999GiB"),
            Err(SizeError::TooLarge(_))
        ));
    }

    #[test]
    fn formats_sizes_exactly() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1500), "1500B");
        assert_eq!(format_size(1000), "1KB");
        assert_eq!(format_size(61_440), "60KiB");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(10_000_000), "10MB");
        assert_eq!(format_size(1 << 30), "1GiB");
        for n in [0, 1, 1023, 1024, 1000, 61_440, 1_572_864, u64::MAX] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }

    #[test]
    fn parses_percentages() {
        assert_eq!(parse_percent("50%"), Ok(0.5));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        assert_eq!(parse_percent("100%"), Ok(1.0));
        assert_eq!(parse_percent("12.5%"), Ok(0.125));
        assert_eq!(parse_percent(" 10 % "), Ok(0.1));
        assert_eq!(parse_percent(".5%"), Ok(0.005));
        assert_eq!(parse_percent("150%"), Ok(1.5));
    }

    #[test]
    fn refuses_bad_percentages() {
        assert_eq!(parse_percent(""), Err(PercentError::Empty));
        assert_eq!(
            parse_percent("50").unwrap_err().to_string(),
            "'50' has no '%'; write a percentage, e.g. '10%'"
        );
        assert_eq!(
            parse_percent("0.5"),
            Err(PercentError::NoSign("0.5".into()))
        );
        assert_eq!(
            parse_percent("-5%"),
            Err(PercentError::Invalid("-5%".into()))
        );
        assert_eq!(
            parse_percent("half"),
            Err(PercentError::Invalid("half".into()))
        );
        assert_eq!(parse_percent("%"), Err(PercentError::Invalid("%".into())));
        assert_eq!(
            parse_percent("5%%"),
            Err(PercentError::Invalid("5%%".into()))
        );
        assert_eq!(
            parse_percent("0.0001%"),
            Err(PercentError::TooPrecise("0.0001%".into()))
        );
        assert!(matches!(
            parse_percent("99999999999999999999999%"),
            Err(PercentError::TooLarge(_))
        ));
    }

    #[test]
    fn percentages_round_trip() {
        for text in [
            "0%", "10%", "50%", "100%", "12.5%", "0.001%", "33.333%", "99.99%",
        ] {
            let share = parse_percent(text).unwrap();
            assert_eq!(format_percent(share), text);
            assert_eq!(parse_percent(&format_percent(share)), Ok(share));
        }
        assert_eq!(format_percent(0.1), "10%");
        assert_eq!(format_percent(0.145), "14.5%");
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("2.5/s"), Ok(2.5));
        assert_eq!(parse_rate(" 30 / m "), Ok(0.5));
        assert_eq!(parse_rate("1/h"), Ok(1.0 / 3600.0));
        assert_eq!(parse_rate(".5/s"), Ok(0.5));
        assert_eq!(parse_rate("0/s"), Ok(0.0));
    }

    #[test]
    fn refuses_bad_rates() {
        assert_eq!(parse_rate(""), Err(RateError::Empty));
        assert_eq!(
            parse_rate("100").unwrap_err().to_string(),
            "'100' has no unit; write e.g. '100/s' or '100/m'"
        );
        assert_eq!(
            parse_rate("100/d").unwrap_err().to_string(),
            "unknown unit 'd' in '100/d'; use s, m or h (per second, minute or hour)"
        );
        for bad in ["/s", "-1/s", "1e3/s", "ten/s", "100/", "100/s/s", "1/1s"] {
            assert_eq!(
                parse_rate(bad),
                Err(RateError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_rate("9999999999999999999999999999999/s"),
            Err(RateError::TooLarge(_))
        ));
    }

    #[test]
    fn rates_round_trip_readably() {
        for (text, shown) in [
            ("100/s", "100/s"),
            ("2.5/s", "2.5/s"),
            ("30/m", "0.5/s"),
            ("10/m", "10/m"),
            ("1/h", "1/h"),
            ("7/h", "7/h"),
            ("1000000000/s", "1000000000/s"),
        ] {
            let rate = parse_rate(text).unwrap();
            assert_eq!(format_rate(rate), shown, "{text}");
            assert_eq!(parse_rate(&format_rate(rate)), Ok(rate), "{text}");
        }
        for rate in [1.0 / 7.0, 0.1 + 0.2, 123.456_789, 1e-9] {
            assert_eq!(parse_rate(&format_rate(rate)), Ok(rate), "{rate}");
        }
    }
}
