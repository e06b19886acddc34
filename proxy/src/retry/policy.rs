//! Whether a failed attempt may be tried again, and how much time an attempt gets.
//!
//! Classification is a pure function of what happened to the attempt ([`Outcome`]), the route's
//! [`RetryPolicy`], the request's method and whether its body can be sent again.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use remora_config::model::{RetryOn, RetryPolicy};
use tokio::time::Instant;

use crate::grpc::GRPC_STATUS;

/// Tells the upstream how long the caller will wait for it, in whole milliseconds, so it can
/// give up on work nobody will read. (gRPC calls get `grpc-timeout`, from
/// [`crate::grpc::format_timeout`], instead or as well.)
pub const DEADLINE_MS: HeaderName = HeaderName::from_static("x-remora-deadline-ms");

/// No retry starts with less time than this left before the route deadline: below a
/// millisecond, the timer's resolution, it could only time out.
pub const MIN_USEFUL_FLOOR: Duration = Duration::from_millis(1);

/// What happened to one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No connection to the endpoint could be made (refused, unreachable, connect timeout,
    /// TLS/h2 handshake failure): nothing was sent.
    ConnectFailure,
    /// The upstream did not process the request: an HTTP/2 `REFUSED_STREAM` reset, a GOAWAY
    /// past the stream's id, or a request the connection handed back unsent (hyper's
    /// `TrySendError` with the request in it).
    RefusedStream,
    /// The connection was reset or closed after the request was (maybe partly) sent and before a
    /// complete response head arrived.
    Reset,
    /// The per-try timeout passed before the response head arrived.
    Timeout,
    /// A response head with this status (and no `grpc-status`, or not a gRPC call).
    Status(StatusCode),
    /// A gRPC call answered with a `grpc-status` in its response headers (trailers-only).
    Grpc(u32),
}

impl Outcome {
    /// The outcome of a response head: a gRPC call's `grpc-status` if the head carries one
    /// (trailers-only response), else the HTTP status. A malformed `grpc-status` counts as
    /// absent.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, is_grpc: bool) -> Outcome {
        let grpc = is_grpc
            .then(|| headers.get(GRPC_STATUS)?.to_str().ok()?.trim().parse().ok())
            .flatten();
        match grpc {
            Some(code) => Outcome::Grpc(code),
            None => Outcome::Status(status),
        }
    }

    /// Nothing of the request reached the upstream application, so even a non-idempotent
    /// request may be sent again.
    pub fn unprocessed(self) -> bool {
        matches!(self, Outcome::ConnectFailure | Outcome::RefusedStream)
    }

    /// Whether the condition `on` (with `codes` for `retriable-status-codes`) covers this outcome.
    ///
    /// `reset`, `gateway-error` and `5xx` cover a refused stream too: it is a reset in which the
    /// upstream promises it did nothing, the safest failure to retry.
    pub fn matches(self, on: RetryOn, codes: &[u16]) -> bool {
        use Outcome as O;
        use RetryOn as R;
        match (self, on) {
            (O::ConnectFailure, R::ConnectFailure | R::GatewayError | R::FiveXx) => true,
            (O::RefusedStream, R::RefusedStream | R::Reset | R::GatewayError | R::FiveXx) => true,
            (O::Reset, R::Reset | R::GatewayError | R::FiveXx) => true,
            (O::Timeout, R::GatewayError | R::FiveXx) => true,
            (O::Status(s), R::FiveXx) => s.is_server_error(),
            (O::Status(s), R::GatewayError) => matches!(s.as_u16(), 502..=504),
            (O::Status(s), R::RetriableStatusCodes) => codes.contains(&s.as_u16()),
            (O::Grpc(code), R::Cancelled) => code == 1,
            (O::Grpc(code), R::DeadlineExceeded) => code == 4,
            (O::Grpc(code), R::ResourceExhausted) => code == 8,
            (O::Grpc(code), R::Unavailable) => code == 14,
            _ => false,
        }
    }
}

/// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and DELETE. Everything else (POST, PATCH,
/// CONNECT, extension methods) may have done something the first time.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether an attempt that ended in `outcome` may be tried again under `policy`. The rules:
/// - a body that cannot be sent again never is (the caller says `body_replayable` when it
///   buffered the body within `buffer_limit`, or still holds it untouched because the attempt
///   failed before sending any of it);
/// - some condition in `retry_on` must cover the outcome ([`Outcome::matches`]);
/// - a non-idempotent request is retried only when the upstream cannot have processed it
///   (connect failure, refused stream), unless `retry_non_idempotent`. A gRPC status condition
///   is its own opt-in: every gRPC call is a POST, so `unavailable` in `retry_on` could mean
///   nothing else, and gRPC's own retry policy (gRFC A6) retries the listed codes whatever the
///   method.
///
/// Attempt counts, deadlines and budgets are checked elsewhere ([`super::RouteRetry::decide`]).
pub fn should_retry(
    outcome: Outcome,
    policy: &RetryPolicy,
    method: &Method,
    body_replayable: bool,
) -> bool {
    if !body_replayable {
        return false;
    }
    let grpc_status = matches!(outcome, Outcome::Grpc(_));
    if !is_idempotent(method)
        && !policy.retry_non_idempotent
        && !outcome.unprocessed()
        && !grpc_status
    {
        return false;
    }
    policy
        .retry_on
        .iter()
        .any(|&on| outcome.matches(on, &policy.retriable_status_codes))
}

/// When an attempt starting at `now` must have its response head: the per-try timeout from now,
/// but never past the route's deadline (the earlier of the route timeout and a gRPC deadline).
/// `None` when the route deadline has already passed.
pub fn attempt_deadline(
    now: Instant,
    route_deadline: Instant,
    per_try_timeout: Option<Duration>,
) -> Option<Instant> {
    if now >= route_deadline {
        return None;
    }
    let per_try = per_try_timeout.and_then(|t| now.checked_add(t));
    Some(per_try.map_or(route_deadline, |t| t.min(route_deadline)))
}

/// The least time before the route deadline worth starting a retry with: half the per-try
/// timeout when one is set, and never below [`MIN_USEFUL_FLOOR`].
///
/// Why half and not all of it: the per-try timeout bounds a slow attempt, it is not what a
/// typical one takes, and a route timeout of exactly `max_attempts × per_try_timeout` (a common
/// way to write a policy) would otherwise lose its last attempt to the backoff delays. Why not
/// less: a retry cut off by the route deadline only adds load to an upstream that is already
/// failing, and returns the same 504 later.
pub fn min_useful(per_try_timeout: Option<Duration>) -> Duration {
    per_try_timeout.map_or(MIN_USEFUL_FLOOR, |t| (t / 2).max(MIN_USEFUL_FLOOR))
}

/// Whether a retry starting at `start` (now plus any backoff delay) has at least `min_useful`
/// left before the route deadline. The first attempt always starts; this is for retries (and
/// hedges).
pub fn worth_starting(start: Instant, route_deadline: Instant, min_useful: Duration) -> bool {
    let left = route_deadline.saturating_duration_since(start);
    !left.is_zero() && left >= min_useful
}

/// The `x-remora-deadline-ms` value for `remaining`: whole milliseconds, rounded down so the
/// upstream never believes it has more time than it does.
pub fn deadline_ms_header(remaining: Duration) -> HeaderValue {
    HeaderValue::from(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy(retry_on: &[RetryOn]) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            retry_on: retry_on.to_vec(),
            retriable_status_codes: vec![409, 429],
            per_try_timeout: None,
            base_interval: 25 * MS,
            max_interval: 250 * MS,
            max_retry_after: Duration::from_secs(10),
            buffer_limit: 64 * 1024,
            retry_non_idempotent: false,
            hedge_after: None,
        }
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status(StatusCode::from_u16(code).unwrap())
    }

    /// Every condition against every kind of outcome, for an idempotent request with a
    /// replayable body.
    #[test]
    fn each_condition_covers_exactly_its_outcomes() {
        use Outcome::*;
        use RetryOn as R;
        let outcomes = [
            ("connect", ConnectFailure),
            ("refused", RefusedStream),
            ("reset", Reset),
            ("timeout", Timeout),
            ("200", status(200)),
            ("404", status(404)),
            ("409", status(409)),
            ("429", status(429)),
            ("500", status(500)),
            ("501", status(501)),
            ("502", status(502)),
            ("503", status(503)),
            ("504", status(504)),
            ("599", status(599)),
            ("grpc-0", Grpc(0)),
            ("grpc-1", Grpc(1)),
            ("grpc-2", Grpc(2)),
            ("grpc-4", Grpc(4)),
            ("grpc-8", Grpc(8)),
            ("grpc-13", Grpc(13)),
            ("grpc-14", Grpc(14)),
        ];
        #[rustfmt::skip]
        let table: &[(RetryOn, &[&str])] = &[
            (R::ConnectFailure, &["connect"]),
            (R::RefusedStream, &["refused"]),
            (R::Reset, &["refused", "reset"]),
            (R::GatewayError, &["connect", "refused", "reset", "timeout", "502", "503", "504"]),
            (R::FiveXx, &["connect", "refused", "reset", "timeout",
                "500", "501", "502", "503", "504", "599"]),
            (R::RetriableStatusCodes, &["409", "429"]),
            (R::Cancelled, &["grpc-1"]),
            (R::DeadlineExceeded, &["grpc-4"]),
            (R::ResourceExhausted, &["grpc-8"]),
            (R::Unavailable, &["grpc-14"]),
        ];
        for (on, retried) in table {
            let p = policy(&[*on]);
            for (name, outcome) in outcomes {
                let got = should_retry(outcome, &p, &Method::GET, true);
                assert_eq!(got, retried.contains(&name), "{} on {name}", on.as_str());
            }
        }
        // No condition, no retry.
        assert!(!should_retry(Reset, &policy(&[]), &Method::GET, true));
    }

    #[test]
    fn non_idempotent_methods_retry_only_what_was_never_processed() {
        let all = [RetryOn::FiveXx, RetryOn::Reset, RetryOn::RefusedStream];
        let mut p = policy(&all);
        let patch = Method::PATCH;
        let custom = Method::from_bytes(b"PURGE").unwrap();
        for method in [&Method::POST, &patch, &Method::CONNECT, &custom] {
            assert!(!is_idempotent(method));
            assert!(should_retry(Outcome::ConnectFailure, &p, method, true));
            assert!(should_retry(Outcome::RefusedStream, &p, method, true));
            for processed in [Outcome::Reset, Outcome::Timeout, status(503)] {
                assert!(
                    !should_retry(processed, &p, method, true),
                    "{method} {processed:?}"
                );
            }
        }
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_idempotent(&method));
            assert!(should_retry(Outcome::Reset, &p, &method, true), "{method}");
        }
        p.retry_non_idempotent = true;
        for outcome in [Outcome::Reset, Outcome::Timeout, status(503)] {
            assert!(
                should_retry(outcome, &p, &Method::POST, true),
                "{outcome:?}"
            );
        }
        // The opt-in does not widen `retry_on`.
        assert!(!should_retry(status(429), &p, &Method::POST, true));
    }

    /// gRPC calls are all POSTs: a gRPC status condition is the opt-in, and only for the codes
    /// it names. A 503 on the same POST is still not retried.
    #[test]
    fn grpc_status_conditions_retry_grpc_calls() {
        let p = policy(&[RetryOn::Unavailable, RetryOn::ResourceExhausted]);
        assert!(should_retry(Outcome::Grpc(14), &p, &Method::POST, true));
        assert!(should_retry(Outcome::Grpc(8), &p, &Method::POST, true));
        assert!(!should_retry(Outcome::Grpc(13), &p, &Method::POST, true));
        assert!(!should_retry(Outcome::Grpc(14), &p, &Method::POST, false));
        let p = policy(&[RetryOn::Unavailable, RetryOn::FiveXx]);
        assert!(!should_retry(status(503), &p, &Method::POST, true));
        assert!(!should_retry(Outcome::Reset, &p, &Method::POST, true));
    }

    #[test]
    fn bodies_that_cannot_be_replayed_are_never_retried() {
        let mut p = policy(&[
            RetryOn::FiveXx,
            RetryOn::RetriableStatusCodes,
            RetryOn::Unavailable,
        ]);
        p.retry_non_idempotent = true;
        for outcome in [
            Outcome::ConnectFailure,
            Outcome::RefusedStream,
            Outcome::Reset,
            Outcome::Timeout,
            status(503),
            status(429),
            Outcome::Grpc(14),
        ] {
            for method in [Method::GET, Method::POST] {
                assert!(should_retry(outcome, &p, &method, true));
                assert!(!should_retry(outcome, &p, &method, false), "{outcome:?}");
            }
        }
    }

    #[test]
    fn grpc_status_is_read_from_trailers_only_heads_of_grpc_calls() {
        let mut h = HeaderMap::new();
        let ok = StatusCode::OK;
        assert_eq!(Outcome::from_response(ok, &h, true), Outcome::Status(ok));
        h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(Outcome::from_response(ok, &h, true), Outcome::Grpc(14));
        // Not a gRPC call: the header means nothing.
        assert_eq!(Outcome::from_response(ok, &h, false), Outcome::Status(ok));
        h.insert(GRPC_STATUS, HeaderValue::from_static("unavailable"));
        assert_eq!(Outcome::from_response(ok, &h, true), Outcome::Status(ok));
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        h.clear();
        let outcome = Outcome::from_response(unavailable, &h, true);
        assert_eq!(outcome, Outcome::Status(unavailable));
    }

    #[test]
    fn attempt_deadline_is_the_per_try_timeout_within_the_route_deadline() {
        let now = Instant::now();
        let route = now + 1000 * MS;
        assert_eq!(attempt_deadline(now, route, None), Some(route));
        assert_eq!(
            attempt_deadline(now, route, Some(300 * MS)),
            Some(now + 300 * MS)
        );
        assert_eq!(attempt_deadline(now, route, Some(5000 * MS)), Some(route));
        assert_eq!(
            attempt_deadline(now, route, Some(Duration::MAX)),
            Some(route)
        );
        assert_eq!(attempt_deadline(route, route, Some(300 * MS)), None);
        assert_eq!(attempt_deadline(route + MS, route, None), None);
    }

    #[test]
    fn retries_start_only_with_enough_time_left() {
        assert_eq!(min_useful(None), MS);
        assert_eq!(min_useful(Some(300 * MS)), 150 * MS);
        assert_eq!(min_useful(Some(Duration::from_micros(10))), MS);

        let now = Instant::now();
        let route = now + 1000 * MS;
        let per_try = min_useful(Some(300 * MS));
        assert!(worth_starting(now, route, per_try));
        assert!(worth_starting(route - 150 * MS, route, per_try));
        assert!(!worth_starting(route - 149 * MS, route, per_try));
        assert!(worth_starting(route - MS, route, min_useful(None)));
        assert!(!worth_starting(
            route - Duration::from_micros(999),
            route,
            MS
        ));
        assert!(!worth_starting(route, route, Duration::ZERO));
        assert!(!worth_starting(route + MS, route, Duration::ZERO));
    }

    #[test]
    fn deadline_header_is_whole_milliseconds_rounded_down() {
        assert_eq!(deadline_ms_header(Duration::from_micros(1999)), "1");
        assert_eq!(deadline_ms_header(Duration::from_micros(999)), "0");
        assert_eq!(deadline_ms_header(Duration::from_secs(15)), "15000");
        assert_eq!(
            deadline_ms_header(Duration::MAX),
            u64::MAX.to_string().as_str()
        );
    }
}
