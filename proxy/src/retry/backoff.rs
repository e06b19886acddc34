//! How long to wait before a retry: exponential backoff with full jitter, unless the upstream
//! said how long (`Retry-After`, `grpc-retry-pushback-ms`).
//!
//! Everything here is a pure function of its inputs (durations, a header value, the wall clock
//! passed in, an injected RNG), so the timing rules are tested without a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::{Rng, RngExt};
use remora_config::timestamp::{days_from_civil, days_in_month};

/// gRPC's server pushback (gRFC A6): how long the client should wait before retrying.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// RFC 9110 §10.2.3: a delta-seconds past 2^31 is read as 2^31.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The largest delay before a retry, `attempt` retries having been made already (0 before the
/// first retry): `base` × 2^`attempt`, capped at `max`. Saturates instead of overflowing.
pub fn backoff_cap(base: Duration, max: Duration, attempt: u32) -> Duration {
    let base = base.as_nanos();
    // A shift that would lose high bits saturates, so a huge attempt count still means `max`.
    let grown = if base == 0 || attempt < base.leading_zeros() {
        base << attempt.min(127)
    } else {
        u128::MAX
    };
    if grown >= max.as_nanos() {
        return max;
    }
    duration_from_nanos(grown)
}

/// A delay drawn uniformly from [0, `cap`] ("full jitter"), to the nanosecond. Spreading
/// retries over the whole interval is what keeps clients that failed together from retrying
/// together (AWS Architecture Blog, "Exponential Backoff And Jitter").
pub fn full_jitter<R: Rng + ?Sized>(cap: Duration, rng: &mut R) -> Duration {
    // Caps past 584 years are not a thing a retry policy asks for; they draw from 584 years.
    let cap = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=cap))
}

/// An exponential backoff with full jitter, valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// `base` was longer than `max`: every delay would be `max`, which is not what was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("backoff base interval {base:?} is longer than its max interval {max:?}")]
pub struct InvalidBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// A zero `base` is allowed and means "retry at once" (every delay is zero).
    pub fn try_new(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base > max {
            return Err(InvalidBackoff { base, max });
        }
        Ok(Backoff { base, max })
    }

    /// The bound the delay before retry number `attempt + 1` is drawn under.
    pub fn cap(&self, attempt: u32) -> Duration {
        backoff_cap(self.base, self.max, attempt)
    }

    /// The delay before retry number `attempt + 1` (`attempt` = retries made so far).
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        full_jitter(self.cap(attempt), rng)
    }
}

/// What the upstream asked about retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// Retry no sooner than this.
    Wait(Duration),
    /// Do not retry this request at all (a negative or malformed `grpc-retry-pushback-ms`).
    DontRetry,
}

/// The delay a retry must wait for, from the upstream's response (or, for a trailers-only gRPC
/// response, its headers; for a gRPC response with a body, its trailers):
/// `grpc-retry-pushback-ms` first, then `Retry-After`. A wait is capped at `max_retry_after`;
/// a zero `max_retry_after` ignores waits (the config's "0 ignores `Retry-After`"), though a
/// gRPC "do not retry" is still honoured. `None` when the response says nothing usable (no
/// header, or a `Retry-After` that does not parse, which is ignored: it is advice, and the
/// backoff still applies).
pub fn server_delay(
    headers: &HeaderMap,
    now: SystemTime,
    max_retry_after: Duration,
) -> Option<Pushback> {
    let said = match headers.get(GRPC_RETRY_PUSHBACK_MS) {
        Some(v) => parse_grpc_pushback(v),
        None if max_retry_after.is_zero() => return None,
        None => Pushback::Wait(parse_retry_after(headers.get(RETRY_AFTER)?, now)?),
    };
    match said {
        Pushback::Wait(_) if max_retry_after.is_zero() => None,
        Pushback::Wait(d) => Some(Pushback::Wait(d.min(max_retry_after))),
        Pushback::DontRetry => Some(Pushback::DontRetry),
    }
}

/// Parses `grpc-retry-pushback-ms`. gRFC A6: a non-negative integer is the milliseconds to wait;
/// "if the value for pushback is negative or unparseable, then it will be seen as the server
/// asking the client not to retry at all".
pub fn parse_grpc_pushback(value: &HeaderValue) -> Pushback {
    let bytes = value.as_bytes().trim_ascii();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Pushback::DontRetry;
    }
    // Too many digits for a u64 is a very long wait, which the caller caps anyway.
    let ms = bytes.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Pushback::Wait(Duration::from_millis(ms.unwrap_or(u64::MAX)))
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date (IMF-fixdate,
/// or the obsolete RFC 850 and asctime forms recipients must accept). A date in the past means
/// "now" (zero). `None` for anything else.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs = text
            .parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |s| s.min(MAX_DELTA_SECONDS));
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(text, now)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An HTTP-date as a point in time. `now` resolves the two-digit year of the RFC 850 form.
pub fn parse_http_date(text: &str, now: SystemTime) -> Option<SystemTime> {
    let tokens: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, month, year, time) = match tokens.as_slice() {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        [wd, day, month, year, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, false)?;
            (
                number(day, 1, 2)?,
                month_number(month)?,
                number(year, 4, 4)?,
                time,
            )
        }
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        [wd, date, time, "GMT"] => {
            weekday(wd.strip_suffix(',')?, true)?;
            let mut parts = date.split('-');
            let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let yy = number(yy, 2, 2)?;
            (
                number(day, 2, 2)?,
                month_number(month)?,
                full_year(yy, now),
                time,
            )
        }
        // asctime: `Sun Nov  6 08:49:37 1994`
        [wd, month, day, time, year] => {
            weekday(wd, false)?;
            (
                number(day, 1, 2)?,
                month_number(month)?,
                number(year, 4, 4)?,
                time,
            )
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let (h, m, s) = (number(h, 2, 2)?, number(m, 2, 2)?, number(s, 2, 2)?);
    // Second 60 is a leap second, which the grammar allows.
    if h > 23 || m > 59 || s > 60 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
        // Before 1970: certainly in the past; the epoch serves as well.
        Err(_) => Some(UNIX_EPOCH),
    }
}

/// Between `min` and `max` ASCII digits.
fn number(s: &str, min: usize, max: usize) -> Option<i64> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn weekday(name: &str, long: bool) -> Option<()> {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    // The day name is redundant; a wrong one is malformed, but it is not checked against the date.
    let names: &[&str] = if long { &LONG } else { &SHORT };
    names.contains(&name).then_some(())
}

fn month_number(name: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as i64 + 1)
}

/// RFC 9110 §5.6.7: a two-digit year is the one with those last digits that is not more than
/// 50 years in the future. The current year is estimated from the mean Gregorian year, which is
/// off by a day at most: plenty for a 50-year window.
fn full_year(yy: i64, now: SystemTime) -> i64 {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let this_year = 1970 + secs / 31_556_952;
    let mut year = this_year - this_year.rem_euclid(100) + yy;
    if year > this_year + 50 {
        year -= 100;
    } else if year <= this_year - 50 {
        year += 100;
    }
    year
}

fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const MS: Duration = Duration::from_millis(1);

    /// The Kolmogorov–Smirnov statistic of `samples` (each in [0, 1]) against Uniform[0, 1]:
    /// the largest distance between their empirical CDF and the identity.
    pub(crate) fn ks_uniform(samples: &mut [f64]) -> f64 {
        samples.sort_by(f64::total_cmp);
        let n = samples.len() as f64;
        samples
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let below = x - i as f64 / n;
                let above = (i + 1) as f64 / n - x;
                below.max(above)
            })
            .fold(0.0, f64::max)
    }

    /// The one-sample KS critical value for `n` samples at significance `alpha`, from the
    /// asymptotic distribution: sqrt(-ln(alpha / 2) / 2) / sqrt(n). Accurate for n in the
    /// thousands.
    pub(crate) fn ks_critical(n: usize, alpha: f64) -> f64 {
        (-(alpha / 2.0).ln() / 2.0).sqrt() / (n as f64).sqrt()
    }

    #[test]
    fn cap_doubles_from_base_up_to_max() {
        let (base, max) = (25 * MS, Duration::from_secs(1));
        let caps: Vec<_> = (0..8).map(|a| backoff_cap(base, max, a)).collect();
        let want = [25, 50, 100, 200, 400, 800, 1000, 1000];
        assert_eq!(caps, want.map(|ms| ms * MS));
    }

    #[test]
    fn cap_saturates_for_huge_attempts_and_bases() {
        let max = Duration::from_secs(30);
        for attempt in [35, 63, 64, 127, 128, 1000, u32::MAX] {
            assert_eq!(backoff_cap(Duration::from_nanos(1), max, attempt), max);
            assert_eq!(
                backoff_cap(Duration::MAX, Duration::MAX, attempt),
                Duration::MAX
            );
        }
        // 1 ns × 2^40 is about 18 minutes: not cut short by a 32-bit multiplier.
        let long = Duration::from_secs(3600);
        assert_eq!(
            backoff_cap(Duration::from_nanos(1), long, 40),
            Duration::from_nanos(1 << 40)
        );
        assert_eq!(backoff_cap(Duration::ZERO, max, u32::MAX), Duration::ZERO);
    }

    #[test]
    fn backoff_rejects_base_above_max_and_delays_stay_under_the_cap() {
        let err = Backoff::try_new(2 * MS, MS).unwrap_err();
        assert_eq!(
            err,
            InvalidBackoff {
                base: 2 * MS,
                max: MS
            }
        );
        assert!(Backoff::try_new(Duration::ZERO, Duration::ZERO).is_ok());

        let backoff = Backoff::try_new(10 * MS, 300 * MS).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        for attempt in 0..10 {
            let cap = backoff.cap(attempt);
            let delays: Vec<_> = (0..500).map(|_| backoff.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= cap));
            // The draws reach near both ends of [0, cap].
            assert!(delays.iter().any(|d| *d < cap / 10));
            assert!(delays.iter().any(|d| *d > cap * 9 / 10));
        }
        let mut zero = SmallRng::seed_from_u64(1);
        let none = Backoff::try_new(Duration::ZERO, Duration::ZERO).unwrap();
        assert_eq!(none.delay(3, &mut zero), Duration::ZERO);
    }

    #[test]
    fn full_jitter_is_uniform_by_kolmogorov_smirnov() {
        const N: usize = 10_000;
        // α = 0.001: a correct generator fails this one time in a thousand seeds; the seed is
        // fixed, so the test is deterministic.
        let critical = ks_critical(N, 0.001);
        assert!((critical - 0.019495).abs() < 1e-5, "{critical}");

        let cap = Duration::from_millis(800);
        let mut rng = SmallRng::seed_from_u64(0x5eed);
        let unit = |d: Duration| d.as_secs_f64() / cap.as_secs_f64();
        let mut samples: Vec<f64> = (0..N).map(|_| unit(full_jitter(cap, &mut rng))).collect();
        let d = ks_uniform(&mut samples);
        assert!(d < critical, "full jitter: D = {d} >= {critical}");

        // The test has the power to tell wrong distributions apart. "Half jitter" (cap/2 plus
        // uniform [0, cap/2]) is far off (D = 0.5); so is drawing from [0, 0.95 cap] (D ≈ 0.05).
        let mut half: Vec<f64> = (0..N)
            .map(|_| unit(cap / 2 + full_jitter(cap / 2, &mut rng)))
            .collect();
        let d = ks_uniform(&mut half);
        assert!(d > critical, "half jitter passed: D = {d}");
        let mut short: Vec<f64> = (0..N)
            .map(|_| unit(full_jitter(cap * 95 / 100, &mut rng)))
            .collect();
        let d = ks_uniform(&mut short);
        assert!(d > critical, "95% jitter passed: D = {d}");
    }

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    fn rfc_example() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = rfc_example();
        assert_eq!(
            parse_retry_after(&header("120"), now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(&header("0"), now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(&header(" 7 "), now),
            Some(Duration::from_secs(7))
        );
        let huge = parse_retry_after(&header("99999999999999999999999"), now);
        assert_eq!(huge, Some(Duration::from_secs(1 << 31)));
    }

    #[test]
    fn retry_after_http_dates_in_three_forms() {
        let date = rfc_example();
        let before = date - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form, before), Some(date), "{form}");
            let future = parse_retry_after(&header(form), before);
            assert_eq!(future, Some(Duration::from_secs(90)), "{form}");
            // A date already past means retry now.
            let later = date + Duration::from_secs(3600);
            assert_eq!(
                parse_retry_after(&header(form), later),
                Some(Duration::ZERO)
            );
        }
        // Sub-second `now`: the wait is what is left.
        let now = date - Duration::from_millis(1500);
        let got = parse_retry_after(&header("Sun, 06 Nov 1994 08:49:37 GMT"), now);
        assert_eq!(got, Some(Duration::from_millis(1500)));
        // Leap day, and a date before the epoch.
        let leap = parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT", date).unwrap();
        assert_eq!(leap, UNIX_EPOCH + Duration::from_secs(1_709_164_800));
        let old = parse_retry_after(&header("Thu, 01 Jan 1960 00:00:00 GMT"), date);
        assert_eq!(old, Some(Duration::ZERO));
    }

    #[test]
    fn rfc850_two_digit_years_are_never_more_than_50_years_ahead() {
        // In 2030, "94" is 1994 and "60" is 2060 (30 years ahead), "81" is 1981.
        let in_2030 = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
        assert_eq!(full_year(94, in_2030), 1994);
        assert_eq!(full_year(60, in_2030), 2060);
        assert_eq!(full_year(81, in_2030), 1981);
        assert_eq!(full_year(80, in_2030), 2080);
        assert_eq!(full_year(79, in_2030), 2079);
        assert_eq!(full_year(30, in_2030), 2030);
        assert_eq!(full_year(94, rfc_example()), 1994);
    }

    #[test]
    fn retry_after_garbage_is_none() {
        let now = rfc_example();
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "0x10",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Funday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37",
        ] {
            assert_eq!(parse_retry_after(&header(bad), now), None, "{bad:?}");
        }
        let not_utf8 = HeaderValue::from_bytes(b"\xff12").unwrap();
        assert_eq!(parse_retry_after(&not_utf8, now), None);
    }

    #[test]
    fn grpc_pushback_waits_or_refuses() {
        let wait = |ms| Pushback::Wait(Duration::from_millis(ms));
        assert_eq!(parse_grpc_pushback(&header("0")), wait(0));
        assert_eq!(parse_grpc_pushback(&header("250")), wait(250));
        assert_eq!(
            parse_grpc_pushback(&header("99999999999999999999999")),
            wait(u64::MAX)
        );
        for refuse in ["-1", "-250", "", "abc", "1.5", "+3"] {
            assert_eq!(
                parse_grpc_pushback(&header(refuse)),
                Pushback::DontRetry,
                "{refuse}"
            );
        }
    }

    #[test]
    fn server_delay_prefers_grpc_pushback_and_caps_waits() {
        let now = rfc_example();
        let max = Duration::from_secs(10);
        let mut h = HeaderMap::new();
        assert_eq!(server_delay(&h, now, max), None);
        h.insert(RETRY_AFTER, header("3"));
        assert_eq!(
            server_delay(&h, now, max),
            Some(Pushback::Wait(3 * 1000 * MS))
        );
        h.insert(RETRY_AFTER, header("3600"));
        assert_eq!(server_delay(&h, now, max), Some(Pushback::Wait(max)));
        h.insert(RETRY_AFTER, header("whenever"));
        assert_eq!(server_delay(&h, now, max), None);
        h.insert(GRPC_RETRY_PUSHBACK_MS, header("40"));
        assert_eq!(server_delay(&h, now, max), Some(Pushback::Wait(40 * MS)));
        h.insert(GRPC_RETRY_PUSHBACK_MS, header("-1"));
        assert_eq!(server_delay(&h, now, max), Some(Pushback::DontRetry));

        // A zero max ignores the server's waits, but not its refusal.
        let zero = Duration::ZERO;
        assert_eq!(server_delay(&h, now, zero), Some(Pushback::DontRetry));
        h.insert(GRPC_RETRY_PUSHBACK_MS, header("40"));
        assert_eq!(server_delay(&h, now, zero), None);
        h.remove(GRPC_RETRY_PUSHBACK_MS);
        h.insert(RETRY_AFTER, header("3"));
        assert_eq!(server_delay(&h, now, zero), None);
    }
}
