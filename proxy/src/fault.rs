//! Fault injection: what a route's [`Fault`] does to one request, decided up front as a
//! [`FaultPlan`] (delay it, abort it, both, or neither). The request path then sleeps the delay
//! (within the route timeout) and answers the abort itself instead of calling the upstream.
//!
//! Deciding is a pure function of the fault, the request's headers, the wall clock and an
//! injected RNG, so percentages and ranges are tested with a seeded generator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, StatusCode};
use rand::{Rng, RngExt};
use remora_config::model::{Fault, FaultDelay, HeaderMatch, HeaderValueMatch};

/// With `header_triggered`, delays the request this many milliseconds.
pub const FAULT_DELAY_MS: HeaderName = HeaderName::from_static("x-remora-fault-delay-ms");
/// With `header_triggered`, aborts the request with this HTTP status, or for a gRPC call this
/// gRPC status.
pub const FAULT_ABORT: HeaderName = HeaderName::from_static("x-remora-fault-abort");

/// The longest delay a header may ask for: a header is a test's convenience, not a way to
/// park connections for days.
pub const MAX_HEADER_DELAY: Duration = Duration::from_secs(3600);

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPlan {
    /// Wait this long before going on (to the abort, or to the upstream).
    pub delay: Option<Duration>,
    /// Answer with this instead of calling the upstream.
    pub abort: Option<Abort>,
}

impl FaultPlan {
    pub fn is_none(&self) -> bool {
        self.delay.is_none() && self.abort.is_none()
    }
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// A response with this status.
    Http(StatusCode),
    /// A gRPC call: a trailers-only response (HTTP 200) with this `grpc-status`.
    Grpc(u32),
}

/// The faults for one request:
/// - none once the fault has expired (`now_wall` at or past `expires_at`), or when a header
///   matcher does not match (all must);
/// - with `header_triggered`, a valid `x-remora-fault-delay-ms` (0..=3 600 000) or
///   `x-remora-fault-abort` (HTTP 200..=599; gRPC 0..=16 for a gRPC call) is applied to this
///   request whatever the percentages, in place of the configured delay or abort; an invalid one
///   is ignored;
/// - otherwise the configured delay and abort each apply to their `percent` of requests, drawn
///   independently. A delay is uniform in [min, max]. A gRPC call gets the configured
///   `grpc_status` when there is one, else the HTTP status.
pub fn decide<R: Rng + ?Sized>(
    fault: &Fault,
    now_wall: SystemTime,
    headers: &HeaderMap,
    is_grpc: bool,
    rng: &mut R,
) -> FaultPlan {
    let expired = fault
        .expires_at
        .is_some_and(|at| now_wall >= UNIX_EPOCH + Duration::from_secs(at));
    if expired || !fault.headers.iter().all(|m| header_matches(m, headers)) {
        return FaultPlan::default();
    }
    let (header_delay, header_abort) = match fault.header_triggered {
        true => (header_delay(headers), header_abort(headers, is_grpc)),
        false => (None, None),
    };
    let delay = header_delay.or_else(|| {
        let d = fault.delay.as_ref()?;
        drawn(d.percent, rng).then(|| delay_in(d, rng))
    });
    let abort = header_abort.or_else(|| {
        let a = fault.abort.as_ref()?;
        if !drawn(a.percent, rng) {
            return None;
        }
        match (is_grpc, a.grpc_status) {
            (true, Some(code)) => Some(Abort::Grpc(code)),
            // Validation guarantees a legal status; a bad one is no abort rather than a panic.
            _ => StatusCode::from_u16(a.http_status).ok().map(Abort::Http),
        }
    });
    FaultPlan { delay, abort }
}

/// True for `percent` (0.0..=1.0) of draws.
fn drawn<R: Rng + ?Sized>(percent: f64, rng: &mut R) -> bool {
    // `random::<f64>()` is in [0, 1): 0 never, 1 always.
    rng.random::<f64>() < percent
}

fn delay_in<R: Rng + ?Sized>(d: &FaultDelay, rng: &mut R) -> Duration {
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (min, max) = (nanos(d.min), nanos(d.max));
    if min >= max {
        return d.min;
    }
    Duration::from_nanos(rng.random_range(min..=max))
}

fn header_delay(headers: &HeaderMap) -> Option<Duration> {
    let ms = digits(headers.get(FAULT_DELAY_MS)?.as_bytes())?;
    let delay = Duration::from_millis(ms);
    (delay <= MAX_HEADER_DELAY).then_some(delay)
}

fn header_abort(headers: &HeaderMap, is_grpc: bool) -> Option<Abort> {
    let n = digits(headers.get(FAULT_ABORT)?.as_bytes())?;
    if is_grpc {
        return (n <= 16).then_some(Abort::Grpc(n as u32));
    }
    let status = u16::try_from(n).ok().filter(|s| (200..=599).contains(s))?;
    StatusCode::from_u16(status).ok().map(Abort::Http)
}

/// A small non-negative decimal integer (up to 18 digits), surrounding whitespace allowed.
fn digits(bytes: &[u8]) -> Option<u64> {
    let bytes = bytes.trim_ascii();
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The route table's header rule (`route.rs`): the header must be present, with any value that
/// equals the expected one or matches the regex.
fn header_matches(m: &HeaderMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(&m.name).iter();
    match &m.value {
        HeaderValueMatch::Present => headers.contains_key(&m.name),
        HeaderValueMatch::Exact(want) => values.any(|got| got == want),
        HeaderValueMatch::Regex(re) => values.any(|got| got.to_str().is_ok_and(|s| re.is_match(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::backoff::tests::{ks_critical, ks_uniform};
    use http::HeaderValue;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use regex::Regex;
    use remora_config::model::FaultAbort;

    const MS: Duration = Duration::from_millis(1);
    const DRAWS: usize = 2_000;

    fn fault(delay: Option<FaultDelay>, abort: Option<FaultAbort>) -> Fault {
        Fault {
            delay,
            abort,
            headers: vec![],
            expires_at: None,
            header_triggered: false,
        }
    }

    fn delay(min_ms: u32, max_ms: u32, percent: f64) -> Option<FaultDelay> {
        Some(FaultDelay {
            min: min_ms * MS,
            max: max_ms * MS,
            percent,
        })
    }

    fn abort(http_status: u16, grpc_status: Option<u32>, percent: f64) -> Option<FaultAbort> {
        Some(FaultAbort {
            http_status,
            grpc_status,
            percent,
        })
    }

    fn plans(f: &Fault, headers: &HeaderMap, is_grpc: bool, seed: u64) -> Vec<FaultPlan> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let now = SystemTime::now();
        (0..DRAWS)
            .map(|_| decide(f, now, headers, is_grpc, &mut rng))
            .collect()
    }

    /// The observed share is within 4.5 standard deviations of the binomial: sqrt(p(1−p)/n),
    /// about ±0.046 at p = 0.3 and n = 2000. A correct sampler misses that one time in ~150 000.
    fn assert_share(hits: usize, p: f64) {
        let share = hits as f64 / DRAWS as f64;
        let sigma = (p * (1.0 - p) / DRAWS as f64).sqrt();
        assert!(
            (share - p).abs() <= 4.5 * sigma,
            "{share} vs {p} (σ = {sigma})"
        );
    }

    #[test]
    fn percentages_hold_and_are_drawn_independently() {
        let f = fault(delay(5, 5, 0.3), abort(503, None, 0.1));
        let plans = plans(&f, &HeaderMap::new(), false, 11);
        let delayed = plans.iter().filter(|p| p.delay.is_some()).count();
        let aborted = plans.iter().filter(|p| p.abort.is_some()).count();
        let both = plans
            .iter()
            .filter(|p| p.delay.is_some() && p.abort.is_some())
            .count();
        assert_share(delayed, 0.3);
        assert_share(aborted, 0.1);
        assert_share(both, 0.03);
        assert!(plans.iter().all(|p| p.delay.is_none_or(|d| d == 5 * MS)));
        let http_503 = Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE));
        assert!(
            plans
                .iter()
                .all(|p| p.abort.is_none() || p.abort == http_503)
        );

        let never = fault(delay(5, 5, 0.0), abort(503, None, 0.0));
        assert!(plans_all(&never, |p| p.is_none()));
        let always = fault(delay(5, 5, 1.0), abort(503, None, 1.0));
        assert!(plans_all(&always, |p| p.delay.is_some() && p.abort.is_some()));
    }

    fn plans_all(f: &Fault, check: impl Fn(&FaultPlan) -> bool) -> bool {
        plans(f, &HeaderMap::new(), false, 3).iter().all(check)
    }

    #[test]
    fn delays_are_uniform_over_the_range() {
        let f = fault(delay(100, 300, 1.0), None);
        let plans = plans(&f, &HeaderMap::new(), false, 12);
        let delays: Vec<Duration> = plans.iter().map(|p| p.delay.unwrap()).collect();
        assert!(delays.iter().all(|d| (100 * MS..=300 * MS).contains(d)));
        // Both ends of the range are reached (each 2% band holds ~40 of 2000 draws)...
        assert!(delays.iter().any(|d| *d < 104 * MS));
        assert!(delays.iter().any(|d| *d > 296 * MS));
        // ...and the spread is uniform by Kolmogorov–Smirnov at α = 0.001.
        let mut unit: Vec<f64> = delays
            .iter()
            .map(|d| (d.as_secs_f64() - 0.1) / 0.2)
            .collect();
        let d = ks_uniform(&mut unit);
        assert!(d < ks_critical(DRAWS, 0.001), "D = {d}");
    }

    #[test]
    fn grpc_calls_get_the_grpc_status_when_configured() {
        let with = fault(None, abort(503, Some(14), 1.0));
        let without = fault(None, abort(503, None, 1.0));
        let mut rng = SmallRng::seed_from_u64(1);
        let now = SystemTime::now();
        let h = HeaderMap::new();
        let got = |f: &Fault, grpc, rng: &mut SmallRng| decide(f, now, &h, grpc, rng).abort;
        assert_eq!(got(&with, true, &mut rng), Some(Abort::Grpc(14)));
        let http = Some(Abort::Http(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(got(&with, false, &mut rng), http);
        assert_eq!(got(&without, true, &mut rng), http);
    }

    #[test]
    fn an_expired_fault_does_nothing() {
        let mut f = fault(delay(5, 5, 1.0), abort(500, None, 1.0));
        f.expires_at = Some(1_700_000_000);
        f.header_triggered = true;
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(FAULT_DELAY_MS, HeaderValue::from_static("10"));
        let mut rng = SmallRng::seed_from_u64(1);
        let before = decide(&f, at - MS, &h, false, &mut rng);
        assert!(before.delay.is_some() && before.abort.is_some());
        assert!(decide(&f, at, &h, false, &mut rng).is_none());
        assert!(decide(&f, at + MS, &h, false, &mut rng).is_none());
    }

    #[test]
    fn only_requests_matching_every_header_rule_get_faults() {
        let mut f = fault(None, abort(500, None, 1.0));
        f.headers = vec![
            HeaderMatch {
                name: HeaderName::from_static("x-chaos"),
                value: HeaderValueMatch::Exact(HeaderValue::from_static("on")),
            },
            HeaderMatch {
                name: HeaderName::from_static("x-user"),
                value: HeaderValueMatch::Regex(Regex::new("^test-.*$").unwrap()),
            },
            HeaderMatch {
                name: HeaderName::from_static("x-present"),
                value: HeaderValueMatch::Present,
            },
        ];
        let mut rng = SmallRng::seed_from_u64(1);
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert("x-chaos", HeaderValue::from_static("on"));
        h.insert("x-user", HeaderValue::from_static("test-7"));
        assert!(decide(&f, now, &h, false, &mut rng).is_none());
        h.insert("x-present", HeaderValue::from_static(""));
        assert!(decide(&f, now, &h, false, &mut rng).abort.is_some());
        // Any of several values may match.
        h.insert("x-chaos", HeaderValue::from_static("off"));
        assert!(decide(&f, now, &h, false, &mut rng).is_none());
        h.append("x-chaos", HeaderValue::from_static("on"));
        assert!(decide(&f, now, &h, false, &mut rng).abort.is_some());
        h.insert("x-user", HeaderValue::from_static("prod-7"));
        assert!(decide(&f, now, &h, false, &mut rng).is_none());
    }

    #[test]
    fn header_triggers_are_off_by_default_and_bounded() {
        let mut f = fault(None, None);
        let mut rng = SmallRng::seed_from_u64(1);
        let now = SystemTime::now();
        let with = |pairs: &[(&HeaderName, &'static str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.insert(*name, HeaderValue::from_static(value));
            }
            h
        };
        let h = with(&[(&FAULT_DELAY_MS, "250"), (&FAULT_ABORT, "418")]);
        assert!(decide(&f, now, &h, false, &mut rng).is_none());

        f.header_triggered = true;
        let plan = decide(&f, now, &h, false, &mut rng);
        assert_eq!(plan.delay, Some(250 * MS));
        assert_eq!(plan.abort, Some(Abort::Http(StatusCode::IM_A_TEAPOT)));
        let grpc = decide(&f, now, &with(&[(&FAULT_ABORT, "14")]), true, &mut rng);
        assert_eq!(grpc.abort, Some(Abort::Grpc(14)));

        let ignored = [
            (&FAULT_DELAY_MS, "3600001"),
            (&FAULT_DELAY_MS, "-1"),
            (&FAULT_DELAY_MS, "1e3"),
            (&FAULT_DELAY_MS, "99999999999999999999"),
            (&FAULT_ABORT, "199"),
            (&FAULT_ABORT, "600"),
            (&FAULT_ABORT, "70000"),
            (&FAULT_ABORT, "teapot"),
        ];
        for pair in ignored {
            let plan = decide(&f, now, &with(&[pair]), false, &mut rng);
            assert!(plan.is_none(), "{pair:?}");
        }
        let grpc_17 = decide(&f, now, &with(&[(&FAULT_ABORT, "17")]), true, &mut rng);
        assert!(grpc_17.is_none());
        let hour = decide(
            &f,
            now,
            &with(&[(&FAULT_DELAY_MS, "3600000")]),
            false,
            &mut rng,
        );
        assert_eq!(hour.delay, Some(MAX_HEADER_DELAY));

        // A header replaces the configured draw; without one the configured fault still applies.
        f.delay = delay(5, 5, 1.0);
        let h = with(&[(&FAULT_DELAY_MS, "7")]);
        assert_eq!(decide(&f, now, &h, false, &mut rng).delay, Some(7 * MS));
        let none = HeaderMap::new();
        assert_eq!(decide(&f, now, &none, false, &mut rng).delay, Some(5 * MS));
    }
}
