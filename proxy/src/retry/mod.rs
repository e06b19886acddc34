//! Retries: whether a failed attempt is tried again ([`policy`]), after how long ([`backoff`]),
//! and how many retries a cluster can afford ([`budget`]).
//!
//! The pieces are pure or self-contained; the request path combines them per failed attempt:
//! 1. [`RouteRetry::decide`]: retriable? attempts left? did the upstream say not to? is there time
//!    to finish before the route deadline? -> a delay, or why not;
//! 2. [`budget::Budget::try_withdraw`] on the cluster's budget (each original request deposited
//!    once with [`budget::Budget::deposit`]);
//! 3. a permit from the cluster's `retries` limit ([`crate::breaker::Limits`]);
//! 4. sleep the delay, then send the next attempt with [`policy::attempt_deadline`].
//!
//! When 2 or 3 refuse, the last attempt's result goes back to the client as it is (counted as
//! budget exhausted / retry overflow); so does it when `decide` says stop.

pub mod backoff;
pub mod budget;
pub mod policy;

use std::time::Duration;

use http::Method;
use rand::Rng;
use remora_config::model::RetryPolicy;
use tokio::time::Instant;

pub use backoff::{Backoff, InvalidBackoff, Pushback};
pub use budget::Budget;
pub use policy::Outcome;

/// A route's retry policy, ready for the request path. Built once when the config is applied.
#[derive(Debug, Clone)]
pub struct RouteRetry {
    pub policy: RetryPolicy,
    backoff: Backoff,
    /// From [`policy::min_useful`]: a retry with less time left than this is not started.
    min_useful: Duration,
}

/// One failed attempt, as `decide` needs to see it.
#[derive(Debug, Clone, Copy)]
pub struct Failed<'a> {
    pub outcome: Outcome,
    /// What the response said about retrying ([`backoff::server_delay`]); `None` without a
    /// response or without the headers.
    pub pushback: Option<Pushback>,
    pub method: &'a Method,
    /// The body can be sent again (buffered within `buffer_limit`, or not yet touched).
    pub body_replayable: bool,
    /// Attempts made so far, the failed one included: 1 after the first.
    pub attempts: u32,
    /// When the failure was seen.
    pub now: Instant,
    /// The earlier of the route timeout and the gRPC deadline.
    pub route_deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after this delay (the backoff, or the upstream's pushback).
    Retry {
        after: Duration,
    },
    Stop(Stop),
}

/// Why a failed attempt is not retried: for logs and the `retry` metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The policy does not retry this outcome for this request.
    NotRetriable,
    /// `max_attempts` reached.
    AttemptsExhausted,
    /// The upstream asked not to be retried (`grpc-retry-pushback-ms` negative or malformed).
    PushedBack,
    /// The retry would start too close to (or past) the route deadline.
    Deadline,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::NotRetriable => "not-retriable",
            Stop::AttemptsExhausted => "attempts-exhausted",
            Stop::PushedBack => "pushed-back",
            Stop::Deadline => "deadline",
        }
    }
}

impl RouteRetry {
    pub fn try_new(policy: RetryPolicy) -> Result<Self, InvalidBackoff> {
        Ok(RouteRetry {
            backoff: Backoff::try_new(policy.base_interval, policy.max_interval)?,
            min_useful: policy::min_useful(policy.per_try_timeout),
            policy,
        })
    }

    /// Whether and when to retry after `failed`. Pure but for the jitter drawn from `rng`; the
    /// budget and the retries limit are the caller's next checks (see the module doc).
    pub fn decide<R: Rng + ?Sized>(&self, failed: &Failed<'_>, rng: &mut R) -> Decision {
        let retriable = policy::should_retry(
            failed.outcome,
            &self.policy,
            failed.method,
            failed.body_replayable,
        );
        if !retriable {
            return Decision::Stop(Stop::NotRetriable);
        }
        if failed.attempts >= self.policy.max_attempts {
            return Decision::Stop(Stop::AttemptsExhausted);
        }
        let after = match failed.pushback {
            Some(Pushback::DontRetry) => return Decision::Stop(Stop::PushedBack),
            Some(Pushback::Wait(d)) => d,
            None => self.backoff.delay(failed.attempts.saturating_sub(1), rng),
        };
        let start = failed.now.checked_add(after);
        match start {
            Some(start)
                if policy::worth_starting(start, failed.route_deadline, self.min_useful) =>
            {
                Decision::Retry { after }
            }
            _ => Decision::Stop(Stop::Deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use remora_config::model::RetryOn;

    const MS: Duration = Duration::from_millis(1);

    fn route_retry() -> RouteRetry {
        RouteRetry::try_new(RetryPolicy {
            max_attempts: 3,
            retry_on: vec![RetryOn::GatewayError],
            retriable_status_codes: vec![],
            per_try_timeout: Some(200 * MS),
            base_interval: 25 * MS,
            max_interval: 250 * MS,
            max_retry_after: Duration::from_secs(1),
            buffer_limit: 64 * 1024,
            retry_non_idempotent: false,
            hedge_after: None,
        })
        .unwrap()
    }

    #[test]
    fn decide_walks_the_checks_in_order() {
        let retry = route_retry();
        let mut rng = SmallRng::seed_from_u64(7);
        let now = Instant::now();
        let failed = Failed {
            outcome: Outcome::Status(StatusCode::SERVICE_UNAVAILABLE),
            pushback: None,
            method: &Method::GET,
            body_replayable: true,
            attempts: 1,
            now,
            route_deadline: now + 1000 * MS,
        };
        let after = |d: Decision| match d {
            Decision::Retry { after } => after,
            Decision::Stop(why) => panic!("stopped: {}", why.as_str()),
        };
        // First retry: backoff attempt 0, under the base interval.
        assert!(after(retry.decide(&failed, &mut rng)) <= 25 * MS);
        // Second retry: under twice the base.
        let second = Failed {
            attempts: 2,
            ..failed
        };
        assert!(after(retry.decide(&second, &mut rng)) <= 50 * MS);

        let stop = |f: Failed<'_>, rng: &mut SmallRng| match retry.decide(&f, rng) {
            Decision::Stop(why) => why,
            Decision::Retry { after } => panic!("retried after {after:?}"),
        };
        let ok = Outcome::Status(StatusCode::OK);
        let done = Failed {
            outcome: ok,
            ..failed
        };
        assert_eq!(stop(done, &mut rng), Stop::NotRetriable);
        let post = Failed {
            method: &Method::POST,
            ..failed
        };
        assert_eq!(stop(post, &mut rng), Stop::NotRetriable);
        let third = Failed {
            attempts: 3,
            ..failed
        };
        assert_eq!(stop(third, &mut rng), Stop::AttemptsExhausted);
        let refused = Failed {
            pushback: Some(Pushback::DontRetry),
            ..failed
        };
        assert_eq!(stop(refused, &mut rng), Stop::PushedBack);

        // The upstream's wait replaces the backoff...
        let wait = Failed {
            pushback: Some(Pushback::Wait(400 * MS)),
            ..failed
        };
        assert_eq!(
            retry.decide(&wait, &mut rng),
            Decision::Retry { after: 400 * MS }
        );
        // ...but a retry that would start with under half the per-try timeout left is not made.
        let late = Failed {
            pushback: Some(Pushback::Wait(901 * MS)),
            ..failed
        };
        assert_eq!(stop(late, &mut rng), Stop::Deadline);
        let past = Failed {
            route_deadline: now,
            ..failed
        };
        assert_eq!(stop(past, &mut rng), Stop::Deadline);
    }

    #[test]
    fn invalid_backoff_is_refused_when_built() {
        let mut policy = route_retry().policy;
        policy.base_interval = Duration::from_secs(2);
        assert!(RouteRetry::try_new(policy).is_err());
    }
}
