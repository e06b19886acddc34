//! Circuit breaking for a cluster: concurrency limits that fail fast instead of queueing
//! ([`Limit`], [`Limits`]), and the consecutive-failure breaker that stops sending to a cluster
//! that keeps failing and probes it with one trial request at a time ([`FailureBreaker`]).
//!
//! Both are per cluster and shared by every worker, so both are thread-safe; on the request path
//! they cost an atomic operation or two while things are healthy.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rand::rngs::SmallRng;
use rand::{Rng, RngExt};
use remora_config::model::{self, CircuitBreakers};
use tokio::sync::{Notify, futures::Notified};
use tokio::time::Instant;

use crate::retry::backoff::backoff_cap;

/// A cap on something a cluster has in flight. Taking a [`Permit`] fails instead of waiting
/// when the cap is reached: the caller answers 503 `overflow-<which>` at once, which is the point
/// (a slow upstream must not pile up requests in the proxy).
#[derive(Debug)]
pub struct Limit {
    /// Atomic so a config reload can change it under permits already held.
    max: AtomicU32,
    current: AtomicU32,
    /// Mirrors of `current` and `max` on /metrics, when the limit belongs to a cluster.
    gauges: Option<(Gauge, Gauge)>,
    /// Woken when a permit is given back, for limits that have waiters (connections: a request
    /// at the cap waits, as a pending request, for a connection to free up).
    freed: Option<Notify>,
    /// How many wait in [`Limit::freed`]: waking costs a lock, so it is skipped when nobody does.
    waiting: AtomicU32,
}

/// One unit of a [`Limit`], given back when dropped.
#[derive(Debug)]
#[must_use = "the permit is released as soon as it is dropped"]
pub struct Permit {
    limit: Arc<Limit>,
}

impl Limit {
    pub fn new(max: u32) -> Arc<Self> {
        Limit::build(max, None, false)
    }

    /// A limit shown on /metrics as `used` and `max`; with `wakes`, one that can be waited
    /// for ([`Limit::freed`]).
    pub fn observed(max: u32, used: Gauge, max_gauge: Gauge, wakes: bool) -> Arc<Self> {
        max_gauge.set(i64::from(max));
        Limit::build(max, Some((used, max_gauge)), wakes)
    }

    fn build(max: u32, gauges: Option<(Gauge, Gauge)>, wakes: bool) -> Arc<Self> {
        Arc::new(Limit {
            max: AtomicU32::new(max),
            current: AtomicU32::new(0),
            gauges,
            freed: wakes.then(Notify::new),
            waiting: AtomicU32::new(0),
        })
    }

    /// Resolves when a permit is given back (or [`Limit::wake`] is called); never for a limit
    /// built without `wakes`. Enable the future before checking again, so that a wake between
    /// the check and the await is not lost.
    pub fn freed(&self) -> Option<Notified<'_>> {
        self.freed.as_ref().map(Notify::notified)
    }

    /// Counts the caller as waiting until the guard drops, so that [`Limit::wake`] wakes it.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter(self)
    }

    /// Wakes whoever waits in [`Limit::freed`]: called when a permit comes back, and when
    /// something they wait for (an idle connection) became available without one coming back.
    pub fn wake(&self) {
        if let Some(n) = &self.freed
            && self.waiting.load(Ordering::SeqCst) > 0
        {
            n.notify_waiters();
        }
    }

    /// A permit, or `None` when `max` are already out.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let max = self.max.load(Ordering::Relaxed);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        if let Some((used, _)) = &self.gauges {
            used.inc();
        }
        Some(Permit {
            limit: self.clone(),
        })
    }

    /// Permits out now, for the gauge.
    pub fn current(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    pub fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// A new cap, for a config reload. Permits already out stay out; while over the new cap,
    /// no more are given.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
        if let Some((_, max_gauge)) = &self.gauges {
            max_gauge.set(i64::from(max));
        }
        // A higher cap may admit someone waiting.
        self.wake();
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limit.current.fetch_sub(1, Ordering::AcqRel);
        if let Some((used, _)) = &self.limit.gauges {
            used.dec();
        }
        self.limit.wake();
    }
}

/// One waiter on a [`Limit`], counted until dropped.
pub struct Waiter<'a>(&'a Limit);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which limit refused: the reason is `overflow-<which>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Connections,
    PendingRequests,
    Requests,
    Retries,
}

impl Overflow {
    /// In the order of the gauges [`Limits::observed`] takes.
    pub const ALL: [Overflow; 4] = [
        Overflow::Connections,
        Overflow::PendingRequests,
        Overflow::Requests,
        Overflow::Retries,
    ];

    /// The `resource` label of the circuit-breaker metrics.
    pub fn resource(self) -> &'static str {
        match self {
            Overflow::Connections => "connections",
            Overflow::PendingRequests => "pending_requests",
            Overflow::Requests => "requests",
            Overflow::Retries => "retries",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Overflow::Connections => "overflow-connections",
            Overflow::PendingRequests => "overflow-pending-requests",
            Overflow::Requests => "overflow-requests",
            Overflow::Retries => "overflow-retries",
        }
    }
}

/// A cluster's four limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Upstream connections open (held by the pool for a connection's life).
    pub connections: Arc<Limit>,
    /// Requests waiting for a connection or stream (held from pool checkout until it is granted).
    pub pending_requests: Arc<Limit>,
    /// Requests in flight to the cluster, retries included (held for each attempt).
    pub requests: Arc<Limit>,
    /// Retries in flight (held for each attempt after the first).
    pub retries: Arc<Limit>,
}

impl Limits {
    pub fn new(config: &CircuitBreakers) -> Self {
        Limits {
            connections: Limit::new(config.max_connections),
            pending_requests: Limit::new(config.max_pending_requests),
            requests: Limit::new(config.max_requests),
            retries: Limit::new(config.max_retries),
        }
    }

    /// The limits of a cluster, mirrored on /metrics by `gauges` (used, max) in the order of
    /// [`Overflow::ALL`]. Connections can be waited for.
    pub fn observed(config: &CircuitBreakers, gauges: &[(Gauge, Gauge); 4]) -> Self {
        let limit = |max, i: usize, wakes| {
            Limit::observed(max, gauges[i].0.clone(), gauges[i].1.clone(), wakes)
        };
        Limits {
            connections: limit(config.max_connections, 0, true),
            pending_requests: limit(config.max_pending_requests, 1, false),
            requests: limit(config.max_requests, 2, false),
            retries: limit(config.max_retries, 3, false),
        }
    }

    /// Takes from `which`, or says which overflowed.
    pub fn try_acquire(&self, which: Overflow) -> Result<Permit, Overflow> {
        let limit = match which {
            Overflow::Connections => &self.connections,
            Overflow::PendingRequests => &self.pending_requests,
            Overflow::Requests => &self.requests,
            Overflow::Retries => &self.retries,
        };
        limit.try_acquire().ok_or(which)
    }

    /// Applies reloaded maxima, keeping the permits out.
    pub fn update(&self, config: &CircuitBreakers) {
        self.connections.set_max(config.max_connections);
        self.pending_requests.set_max(config.max_pending_requests);
        self.requests.set_max(config.max_requests);
        self.retries.set_max(config.max_retries);
    }
}

/// Whether a request may go to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: this request is the one trial; its result decides the breaker.
    Trial,
    /// Open (or half-open with the trial out): fail fast with 503 `circuit-open`.
    Rejected,
}

/// The breaker's state, for the gauge and the admin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

/// The consecutive-failure breaker:
///
/// ```text
/// Closed --threshold consecutive failures--> Open(until)
/// Open --until passes, next admit--> HalfOpen (that request is the trial; others rejected)
/// HalfOpen --trial succeeds--> Closed (backoff reset)
/// HalfOpen --trial fails--> Open(longer)
/// ```
///
/// The n-th consecutive opening lasts a draw from [cap / 2, cap], cap = `base_open` × 2^(n−1)
/// capped at `max_open` ("equal jitter"). Not full jitter: an opening of near zero would send
/// the trial at once, which defeats the breaker; half the cap still spreads the trials of
/// proxies that opened together. An opening never exceeds `max_open`; until the cap is reached,
/// each one's range starts where the previous one's ended, so openings do not get shorter.
///
/// While half-open, results from requests admitted before the breaker opened may still arrive;
/// any result decides (a success is still a sign of life). A trial whose result never arrives
/// (its request was cancelled) is presumed lost after `max_open`, and another is admitted.
#[derive(Debug)]
pub struct FailureBreaker {
    config: model::FailureBreaker,
    /// The fast path: while closed, `admit` reads only this.
    closed: AtomicBool,
    /// Consecutive failures while closed.
    failures: AtomicU32,
    inner: Mutex<Inner>,
    /// `remora_circuit_breaker_state`: 0 closed, 1 open, 2 half-open.
    gauge: Option<Gauge>,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// When the trial was let through, while half-open.
    trial_since: Option<Instant>,
    /// Consecutive openings without a successful trial: the backoff exponent.
    openings: u32,
    /// Draws the jitter; seeded by whoever builds the breaker.
    rng: SmallRng,
}

impl FailureBreaker {
    pub fn new(config: model::FailureBreaker, rng: SmallRng) -> Self {
        FailureBreaker {
            config,
            closed: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                state: State::Closed,
                trial_since: None,
                openings: 0,
                rng,
            }),
            gauge: None,
        }
    }

    /// Shows the state on `gauge` (0 closed, 1 open, 2 half-open).
    pub fn with_gauge(mut self, gauge: Gauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    fn show(&self, state: State) {
        if let Some(g) = &self.gauge {
            g.set(match state {
                State::Closed => 0,
                State::Open { .. } => 1,
                State::HalfOpen => 2,
            });
        }
    }

    pub fn admit(&self, now: Instant) -> Admission {
        if self.closed.load(Ordering::Acquire) {
            return Admission::Allowed;
        }
        let mut inner = self.inner();
        match inner.state {
            State::Closed => Admission::Allowed,
            State::Open { until } if now < until => Admission::Rejected,
            State::Open { .. } => {
                inner.state = State::HalfOpen;
                inner.trial_since = Some(now);
                self.show(State::HalfOpen);
                Admission::Trial
            }
            State::HalfOpen => {
                let lost = inner
                    .trial_since
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.config.max_open);
                if lost {
                    inner.trial_since = Some(now);
                    Admission::Trial
                } else {
                    Admission::Rejected
                }
            }
        }
    }

    /// The result of a request that was admitted: `success` is the caller's rule (typically no
    /// 5xx and no gateway failure).
    pub fn record(&self, success: bool, now: Instant) {
        if self.closed.load(Ordering::Acquire) {
            if success {
                self.failures.store(0, Ordering::Relaxed);
                return;
            }
            let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if failures < self.config.threshold {
                return;
            }
        }
        let mut inner = self.inner();
        match (inner.state, success) {
            (State::Closed, true) => {}
            (State::Closed, false) => {
                // Re-checked under the lock: another thread may have opened it meanwhile.
                if self.failures.load(Ordering::Acquire) >= self.config.threshold {
                    self.open(&mut inner, now);
                }
            }
            // Results of requests admitted before it opened say nothing new.
            (State::Open { .. }, _) => {}
            (State::HalfOpen, true) => {
                inner.state = State::Closed;
                inner.trial_since = None;
                inner.openings = 0;
                self.failures.store(0, Ordering::Release);
                self.closed.store(true, Ordering::Release);
                self.show(State::Closed);
            }
            (State::HalfOpen, false) => self.open(&mut inner, now),
        }
    }

    /// Whether a retry (or hedge) may follow a failed attempt: only while closed. Retries are
    /// extra load on a cluster that just failed; once the breaker opens they stop, and while
    /// half-open only the trial may go.
    pub fn allows_retry(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn state(&self) -> State {
        self.inner().state
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.openings = inner.openings.saturating_add(1);
        let duration = open_duration(&self.config, inner.openings, &mut inner.rng);
        inner.state = State::Open {
            until: now + duration,
        };
        inner.trial_since = None;
        self.closed.store(false, Ordering::Release);
        self.show(inner.state);
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every transition is a few assignments; a panic elsewhere cannot leave it half-made.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How long the `openings`-th consecutive opening (from 1) lasts: uniform in [cap / 2, cap],
/// cap = `base_open` × 2^(openings − 1), at most `max_open`.
pub fn open_duration<R: Rng + ?Sized>(
    config: &model::FailureBreaker,
    openings: u32,
    rng: &mut R,
) -> Duration {
    let cap = backoff_cap(
        config.base_open,
        config.max_open,
        openings.saturating_sub(1),
    );
    let cap_nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(cap_nanos / 2..=cap_nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tokio::time::advance;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn limits_give_permits_up_to_max_and_take_them_back_on_drop() {
        let limit = Limit::new(2);
        let a = limit.try_acquire().unwrap();
        let b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        assert_eq!((limit.current(), limit.max()), (2, 2));
        drop(a);
        assert_eq!(limit.current(), 1);
        let c = limit.try_acquire().unwrap();
        // A reload below the permits out: none given until enough are back.
        limit.set_max(1);
        assert!(limit.try_acquire().is_none());
        drop(b);
        assert!(limit.try_acquire().is_none());
        drop(c);
        let d = limit.try_acquire();
        assert!(d.is_some());
        assert_eq!(limit.current(), 1);
        drop(d);
        assert_eq!(limit.current(), 0);
        assert!(Limit::new(0).try_acquire().is_none());
    }

    #[test]
    fn each_cluster_limit_overflows_with_its_own_reason() {
        let limits = Limits::new(&CircuitBreakers {
            max_connections: 1,
            max_pending_requests: 1,
            max_requests: 1,
            max_retries: 1,
            consecutive_failures: None,
        });
        let which = [
            Overflow::Connections,
            Overflow::PendingRequests,
            Overflow::Requests,
            Overflow::Retries,
        ];
        let held: Vec<_> = which
            .iter()
            .map(|&w| limits.try_acquire(w).unwrap())
            .collect();
        for w in which {
            assert_eq!(limits.try_acquire(w).unwrap_err(), w);
            assert!(w.reason().starts_with("overflow-"));
        }
        drop(held);
        assert!(limits.try_acquire(Overflow::Retries).is_ok());
    }

    #[test]
    fn permits_are_exact_under_contention() {
        let limit = Limit::new(3);
        let peak = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if let Some(p) = limit.try_acquire() {
                            peak.fetch_max(limit.current(), Ordering::Relaxed);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(limit.current(), 0);
    }

    fn config() -> model::FailureBreaker {
        model::FailureBreaker {
            threshold: 3,
            base_open: 10 * SEC,
            max_open: 60 * SEC,
        }
    }

    fn open_until(breaker: &FailureBreaker) -> Instant {
        match breaker.state() {
            State::Open { until } => until,
            other => panic!("not open: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures() {
        let breaker = FailureBreaker::new(config(), SmallRng::seed_from_u64(1));
        let now = Instant::now();
        breaker.record(false, now);
        breaker.record(false, now);
        // A success in between resets the count.
        breaker.record(true, now);
        breaker.record(false, now);
        breaker.record(false, now);
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.admit(now), Admission::Allowed);
        breaker.record(false, now);
        let until = open_until(&breaker);
        let open_for = until - now;
        assert!((5 * SEC..=10 * SEC).contains(&open_for), "{open_for:?}");
        assert_eq!(breaker.admit(now), Admission::Rejected);
        // Late results of requests admitted earlier change nothing while open.
        breaker.record(true, now);
        breaker.record(false, now);
        assert_eq!(open_until(&breaker), until);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_trial_and_its_success_closes() {
        let breaker = FailureBreaker::new(config(), SmallRng::seed_from_u64(2));
        for _ in 0..3 {
            breaker.record(false, Instant::now());
        }
        let until = open_until(&breaker);
        advance(until - Instant::now() - Duration::from_millis(1)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);
        advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
        assert_eq!(breaker.state(), State::HalfOpen);
        for _ in 0..5 {
            assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);
        }
        breaker.record(true, Instant::now());
        assert_eq!(breaker.state(), State::Closed);
        assert_eq!(breaker.admit(Instant::now()), Admission::Allowed);
        // The backoff was reset: the next opening is a first one again (<= base_open).
        for _ in 0..3 {
            breaker.record(false, Instant::now());
        }
        assert!(open_until(&breaker) - Instant::now() <= 10 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trials_reopen_for_longer_up_to_max() {
        let breaker = FailureBreaker::new(config(), SmallRng::seed_from_u64(3));
        for _ in 0..3 {
            breaker.record(false, Instant::now());
        }
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            let open_for = open_until(&breaker) - now;
            lengths.push(open_for);
            advance(open_for).await;
            assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
            breaker.record(false, Instant::now());
        }
        // Caps 10, 20, 40, 60, 60, 60 s; each drawn from [cap / 2, cap].
        let caps = [10, 20, 40, 60, 60, 60].map(|s| s * SEC);
        for (len, cap) in lengths.iter().zip(caps) {
            assert!(
                *len >= cap / 2 && *len <= cap,
                "{len:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        // Below the cap, every opening is at least as long as the one before.
        assert!(lengths[..3].windows(2).all(|w| w[1] >= w[0]), "{lengths:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_trial_is_replaced_after_max_open() {
        let breaker = FailureBreaker::new(config(), SmallRng::seed_from_u64(4));
        for _ in 0..3 {
            breaker.record(false, Instant::now());
        }
        advance(open_until(&breaker) - Instant::now()).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
        advance(59 * SEC).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);
        advance(SEC).await;
        assert_eq!(breaker.admit(Instant::now()), Admission::Trial);
        assert_eq!(breaker.admit(Instant::now()), Admission::Rejected);
    }

    #[test]
    fn open_durations_are_seeded_and_within_half_to_full_cap() {
        let c = config();
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (1..=8)
                .map(|n| open_duration(&c, n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        let mut rng = SmallRng::seed_from_u64(5);
        let firsts: Vec<_> = (0..1000).map(|_| open_duration(&c, 1, &mut rng)).collect();
        assert!(firsts.iter().all(|d| (5 * SEC..=10 * SEC).contains(d)));
        assert!(firsts.iter().any(|d| *d < 5500 * Duration::from_millis(1)));
        assert!(firsts.iter().any(|d| *d > 9500 * Duration::from_millis(1)));
        assert!(open_duration(&c, u32::MAX, &mut rng) <= 60 * SEC);
    }
}
