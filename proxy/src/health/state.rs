//! One endpoint's shared state: what the balancer reads on every pick, and what outlier
//! detection, active health checks and the admin page write and read beside it.
//!
//! Everything the request path touches is an atomic: [`EndpointState::eligible`] is a few loads,
//! [`EndpointState::start_request`] one add. Instants are stored as nanoseconds since the state was
//! created (0 meaning "none"), so they fit an `AtomicU64`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_config::model;
use tokio::time::Instant;

use super::probe::CheckFailure;
use crate::metrics::EndpointMetrics;

/// Why outlier detection ejected an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectionReason {
    Consecutive5xx = 1,
    ConsecutiveGatewayFailure = 2,
}

impl EjectionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EjectionReason::Consecutive5xx => "consecutive-5xx",
            EjectionReason::ConsecutiveGatewayFailure => "consecutive-gateway-failure",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(EjectionReason::Consecutive5xx),
            2 => Some(EjectionReason::ConsecutiveGatewayFailure),
            _ => None,
        }
    }
}

/// How an endpoint's cluster is checked, fixed when the state is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthPolicy {
    /// Active checks are configured; without them the endpoint is always healthy.
    pub active_checks: bool,
    /// Health before the first check (only meaningful with `active_checks`).
    pub initially_healthy: bool,
    /// An ejected endpoint also needs a passing active check after its ejection time to return.
    pub require_check_to_return: bool,
}

impl HealthPolicy {
    pub fn from_cluster(cluster: &model::Cluster) -> Self {
        let hc = cluster.health_check.as_ref();
        HealthPolicy {
            active_checks: hc.is_some(),
            initially_healthy: hc.is_none_or(|h| h.initially_healthy),
            // Without active checks nothing could ever pass one; validation refuses that
            // combination, and ignoring the flag keeps an endpoint from being ejected forever.
            require_check_to_return: hc.is_some()
                && cluster
                    .outlier_detection
                    .is_some_and(|o| o.require_health_check_to_return),
        }
    }
}

pub struct EndpointState {
    address: SocketAddr,
    policy: HealthPolicy,
    /// The zero of the stored instants.
    epoch: Instant,
    in_flight: AtomicUsize,
    /// By active checks; always true without them.
    healthy: AtomicBool,
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failures: AtomicU32,
    /// When the current ejection ends (encoded, see [`EndpointState::encode`]); 0 when not
    /// ejected. Stays set past the end until the endpoint is returned ([`Self::try_return`]), so
    /// the max-ejection bound counts endpoints still waiting for a passing check.
    ejected_until: AtomicU64,
    /// Ejections so far: the multiplier of the next ejection's duration.
    times_ejected: AtomicU32,
    /// The last ejection's [`EjectionReason`], 0 before the first.
    ejection_reason: AtomicU8,
    /// When an active check last passed (encoded); 0 if none has.
    last_check_pass: AtomicU64,
    /// Off the request path: written by the checker, read by the admin page.
    last_check_failure: Mutex<Option<CheckFailure>>,
    metrics: EndpointMetrics,
}

impl EndpointState {
    pub fn new(address: SocketAddr, policy: HealthPolicy, metrics: EndpointMetrics) -> Arc<Self> {
        let healthy = !policy.active_checks || policy.initially_healthy;
        metrics.healthy.set(i64::from(healthy));
        metrics.ejected.set(0);
        Arc::new(EndpointState {
            address,
            policy,
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(healthy),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            times_ejected: AtomicU32::new(0),
            ejection_reason: AtomicU8::new(0),
            last_check_pass: AtomicU64::new(0),
            last_check_failure: Mutex::new(None),
            metrics,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn policy(&self) -> HealthPolicy {
        self.policy
    }

    pub fn metrics(&self) -> &EndpointMetrics {
        &self.metrics
    }

    /// May the balancer send new requests here? Healthy by active checks (or none configured),
    /// and not ejected: the ejection time is up and, when the cluster requires it, an active
    /// check has passed since then.
    pub fn eligible(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Ejected at `now`, counting an ended ejection still waiting for a passing check.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        until != 0 && !self.may_return(until, now)
    }

    // --- requests in flight and picks ---

    pub fn start_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.start_request();
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The balancer chose this endpoint (`remora_endpoint_picks_total`).
    pub fn record_pick(&self) {
        self.metrics.picks.inc();
    }

    pub fn picks(&self) -> u64 {
        self.metrics.picks.get()
    }

    // --- active checks (written by the checker) ---

    /// Sets health as decided by the thresholds; returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        self.metrics.healthy.set(i64::from(healthy));
        was != healthy
    }

    pub fn record_check_pass(&self, now: Instant) {
        self.last_check_pass
            .store(self.encode(now), Ordering::Release);
    }

    pub fn record_check_failure(&self, failure: CheckFailure) {
        self.metrics.check_failures.inc(failure.reason);
        *lock(&self.last_check_failure) = Some(failure);
    }

    pub fn last_check_failure(&self) -> Option<CheckFailure> {
        lock(&self.last_check_failure).clone()
    }

    // --- outlier detection (written by the detector) ---

    /// Counts one response or failure. Returns the reason when a threshold (0 = off) was just
    /// reached; the counter that reached it starts over. Ignored while ejected: the endpoint
    /// starts afresh when it returns.
    pub(crate) fn count_outcome(
        &self,
        outcome: super::Outcome,
        max_5xx: u32,
        max_gateway: u32,
    ) -> Option<EjectionReason> {
        use super::Outcome;
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            return None;
        }
        match outcome {
            Outcome::Success => {
                // Success is the common case: read before writing, to keep the line shared.
                reset(&self.consecutive_5xx);
                reset(&self.consecutive_gateway_failures);
                None
            }
            Outcome::Status5xx => {
                // A 5xx that is not a gateway failure breaks a run of gateway failures.
                reset(&self.consecutive_gateway_failures);
                reached(&self.consecutive_5xx, max_5xx).then_some(EjectionReason::Consecutive5xx)
            }
            // A gateway failure counts as a 5xx too, as in Envoy.
            Outcome::GatewayFailure => {
                let gateway = reached(&self.consecutive_gateway_failures, max_gateway);
                let any = reached(&self.consecutive_5xx, max_5xx);
                if gateway {
                    Some(EjectionReason::ConsecutiveGatewayFailure)
                } else {
                    any.then_some(EjectionReason::Consecutive5xx)
                }
            }
        }
    }

    /// Ejections so far.
    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Marks the endpoint ejected until `until`. The detector serialises calls and checks the
    /// endpoint was not ejected.
    pub(crate) fn eject(&self, until: Instant, reason: EjectionReason) {
        self.times_ejected.fetch_add(1, Ordering::Relaxed);
        self.ejection_reason.store(reason as u8, Ordering::Relaxed);
        self.ejected_until
            .store(self.encode(until), Ordering::Release);
        self.metrics.ejections.inc();
        self.metrics.ejected.set(1);
    }

    /// Whether an ejection (ended or not) is recorded: what the max-ejection bound counts.
    pub(crate) fn holds_ejection(&self) -> bool {
        self.ejected_until.load(Ordering::Acquire) != 0
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.decode(self.ejected_until.load(Ordering::Acquire))
    }

    /// Ends the ejection if it may end at `now`: returns true if this call returned the endpoint.
    /// Safe to call from anywhere (the detector's timer, the checker after a pass).
    pub fn try_return(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        if until == 0 || !self.may_return(until, now) {
            return false;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway_failures
            .store(0, Ordering::Relaxed);
        self.metrics.ejected.set(0);
        true
    }

    /// An ejection ending at `until` (encoded) is over at `now`.
    fn may_return(&self, until: u64, now: Instant) -> bool {
        self.encode(now) >= until
            && (!self.policy.require_check_to_return
                || self.last_check_pass.load(Ordering::Acquire) >= until)
    }

    // --- the admin page ---

    pub fn snapshot(&self, now: Instant) -> EndpointSnapshot {
        let until = self.ejected_until();
        let ejected = self.is_ejected(now);
        EndpointSnapshot {
            address: self.address,
            active_checks: self.policy.active_checks,
            healthy: self.is_healthy(),
            last_check_failure: self.last_check_failure(),
            ejected,
            ejection_remaining: until
                .filter(|_| ejected)
                .map(|u| u.saturating_duration_since(now)),
            awaiting_check: ejected && until.is_some_and(|u| u <= now),
            ejection_reason: EjectionReason::from_u8(self.ejection_reason.load(Ordering::Relaxed)),
            times_ejected: self.times_ejected(),
            in_flight: self.in_flight(),
            picks: self.picks(),
        }
    }

    /// Nanoseconds since the epoch, plus one so that 0 stays free for "none".
    fn encode(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn decode(&self, v: u64) -> Option<Instant> {
        (v != 0).then(|| self.epoch + Duration::from_nanos(v - 1))
    }
}

impl std::fmt::Debug for EndpointState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointState")
            .field("address", &self.address)
            .field("healthy", &self.is_healthy())
            .field("ejected_until", &self.ejected_until())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Adds one and says whether `max` (0 = never) was reached; if so, starts the count over.
fn reached(counter: &AtomicU32, max: u32) -> bool {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    // Of concurrent callers past the threshold, only the one that resets the count reports it.
    max != 0 && n >= max && counter.swap(0, Ordering::Relaxed) >= max
}

fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Relaxed);
    }
}

/// Only ever held for a clone or a store, so a panic cannot leave it half-updated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request in flight to an endpoint, counted until dropped.
pub struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish_request();
    }
}

/// One endpoint as the admin page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSnapshot {
    pub address: SocketAddr,
    pub active_checks: bool,
    pub healthy: bool,
    pub last_check_failure: Option<CheckFailure>,
    pub ejected: bool,
    /// Time left of the ejection; zero while an ended ejection waits for a passing check.
    pub ejection_remaining: Option<Duration>,
    /// The ejection time is up but no active check has passed since.
    pub awaiting_check: bool,
    /// The last ejection's reason (kept after the endpoint returns).
    pub ejection_reason: Option<EjectionReason>,
    pub times_ejected: u32,
    pub in_flight: usize,
    pub picks: u64,
}

impl EndpointSnapshot {
    /// One word for the endpoint: `ejected`, `unhealthy` or `healthy`.
    pub fn state(&self) -> &'static str {
        if self.ejected {
            "ejected"
        } else if !self.healthy {
            "unhealthy"
        } else {
            "healthy"
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.address.to_string(),
            "state": self.state(),
            "health": {
                "active_checks": self.active_checks,
                "healthy": self.healthy,
                "last_failure": self.last_check_failure.as_ref().map(|f| serde_json::json!({
                    "reason": f.reason.as_str(),
                    "detail": f.detail,
                })),
            },
            "outlier": {
                "ejected": self.ejected,
                "remaining_ms": self.ejection_remaining.map(|d| d.as_millis() as u64),
                "awaiting_health_check": self.awaiting_check,
                "reason": self.ejection_reason.map(EjectionReason::as_str),
                "times_ejected": self.times_ejected,
            },
            "in_flight": self.in_flight,
            "picks": self.picks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Outcome;
    use crate::health::probe::FailureReason;

    fn addr() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn initial_health_follows_the_policy() {
        let m = EndpointMetrics::default();
        let unchecked = EndpointState::new(addr(), HealthPolicy::default(), m.clone());
        assert!(unchecked.eligible(Instant::now()));
        assert_eq!(m.healthy.get(), 1);

        let m = EndpointMetrics::default();
        let policy = HealthPolicy {
            active_checks: true,
            initially_healthy: false,
            require_check_to_return: false,
        };
        let checked = EndpointState::new(addr(), policy, m.clone());
        assert!(!checked.eligible(Instant::now()));
        assert_eq!(m.healthy.get(), 0);
        assert!(checked.set_healthy(true));
        assert!(!checked.set_healthy(true));
        assert!(checked.eligible(Instant::now()));
        assert_eq!(m.healthy.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_guard_and_picks() {
        let s = EndpointState::new(addr(), HealthPolicy::default(), EndpointMetrics::default());
        let a = s.track();
        let b = s.track();
        s.start_request();
        assert_eq!(s.in_flight(), 3);
        drop(a);
        s.finish_request();
        assert_eq!(s.in_flight(), 1);
        drop(b);
        assert_eq!(s.in_flight(), 0);
        s.record_pick();
        s.record_pick();
        assert_eq!(s.picks(), 2);
        assert_eq!(s.metrics().picks.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_reach_thresholds_once_and_start_over() {
        let s = EndpointState::new(addr(), HealthPolicy::default(), EndpointMetrics::default());
        assert_eq!(s.count_outcome(Outcome::Status5xx, 2, 0), None);
        assert_eq!(
            s.count_outcome(Outcome::Status5xx, 2, 0),
            Some(EjectionReason::Consecutive5xx)
        );
        assert_eq!(s.count_outcome(Outcome::Status5xx, 2, 0), None);
        // Gateway failure threshold 0 is off, but they still count as 5xx.
        assert_eq!(
            s.count_outcome(Outcome::GatewayFailure, 2, 0),
            Some(EjectionReason::Consecutive5xx)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_shows_failure_and_ejection() {
        let policy = HealthPolicy {
            active_checks: true,
            initially_healthy: true,
            require_check_to_return: true,
        };
        let m = EndpointMetrics::default();
        let s = EndpointState::new(addr(), policy, m.clone());
        s.record_check_failure(CheckFailure::new(FailureReason::Timeout, "no answer"));
        assert_eq!(m.check_failures.get(FailureReason::Timeout), 1);
        let now = Instant::now();
        s.eject(
            now + Duration::from_secs(30),
            EjectionReason::Consecutive5xx,
        );
        let snap = s.snapshot(now + Duration::from_secs(10));
        assert_eq!(snap.state(), "ejected");
        assert_eq!(snap.ejection_remaining, Some(Duration::from_secs(20)));
        let json = snap.to_json();
        assert_eq!(json["outlier"]["remaining_ms"], 20_000);
        assert_eq!(json["outlier"]["reason"], "consecutive-5xx");
        assert_eq!(json["health"]["last_failure"]["reason"], "timeout");

        let later = s.snapshot(now + Duration::from_secs(40));
        assert!(later.ejected && later.awaiting_check);
        assert_eq!(later.ejection_remaining, Some(Duration::ZERO));
    }
}
