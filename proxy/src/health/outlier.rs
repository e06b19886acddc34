//! Passive outlier detection, with Envoy's semantics: an endpoint that answers too many
//! consecutive 5xx responses, or fails too many consecutive times to answer at all (gateway
//! failures: connect failure, reset, timeout), is ejected from its cluster's balancing for a
//! while, longer each time it happens again.
//!
//! The request path only calls [`OutlierDetector::record`], which is a couple of atomic
//! operations unless a threshold is reached. A small task ([`OutlierDetector::run`]) wakes when an
//! ejection ends to return the endpoint (clear its gauge, log it); eligibility itself never waits
//! for that task: [`super::EndpointState::eligible`] compares the ejection's end with the clock.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remora_config::model::OutlierDetection;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{EjectionReason, EndpointState};

/// What became of one request to an endpoint, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any response that is not a 5xx.
    Success,
    /// A 5xx response from the endpoint.
    Status5xx,
    /// No response: connect failure or timeout, reset, response-header timeout.
    GatewayFailure,
}

impl Outcome {
    /// The outcome of a response with this status.
    pub fn from_status(status: u16) -> Self {
        if (500..600).contains(&status) {
            Outcome::Status5xx
        } else {
            Outcome::Success
        }
    }
}

/// How long the `times`-th ejection lasts: `base` × `times`, capped at `max`.
pub fn ejection_duration(base: Duration, max: Duration, times: u32) -> Duration {
    base.saturating_mul(times).min(max)
}

/// May one more endpoint be ejected, with `ejected` of `total` already out? At most
/// `max_share` of them at once, but always at least one (Envoy's rule, so a small cluster can
/// still shed its one bad endpoint).
pub fn ejection_allowed(ejected: usize, total: usize, max_share: f64) -> bool {
    // The small slack keeps 0.3 × 10 from being 2.9999.
    ejected == 0 || (ejected + 1) as f64 <= max_share * total as f64 + 1e-9
}

/// What a recorded outcome did, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    Ejected {
        endpoint: SocketAddr,
        reason: EjectionReason,
        duration: Duration,
        /// Ejections of this endpoint so far, this one included.
        times: u32,
    },
    /// A threshold was reached but the max-ejection bound kept the endpoint in.
    Refused {
        endpoint: SocketAddr,
        reason: EjectionReason,
        /// Endpoints already ejected, of `total`.
        ejected: usize,
        total: usize,
    },
}

/// Outlier detection for one cluster.
pub struct OutlierDetector {
    config: OutlierDetection,
    endpoints: Arc<[Arc<EndpointState>]>,
    /// Serialises ejection decisions, so two endpoints reaching a threshold together cannot both
    /// squeeze under the max-ejection bound. Only taken when a threshold is reached.
    deciding: Mutex<()>,
    /// Wakes [`OutlierDetector::run`] when an ejection starts.
    ejected: Notify,
}

impl OutlierDetector {
    pub fn new(config: OutlierDetection, endpoints: Arc<[Arc<EndpointState>]>) -> Self {
        OutlierDetector {
            config,
            endpoints,
            deciding: Mutex::new(()),
            ejected: Notify::new(),
        }
    }

    pub fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.endpoints
    }

    /// Records the outcome of a request to endpoint `index` (of the endpoints given to `new`).
    pub fn record(&self, index: usize, outcome: Outcome, now: Instant) -> Option<OutlierEvent> {
        let state = self.endpoints.get(index)?;
        let reason = state.count_outcome(
            outcome,
            self.config.consecutive_5xx,
            self.config.consecutive_gateway_failure,
        )?;
        self.try_eject(state, reason, now)
    }

    fn try_eject(
        &self,
        state: &EndpointState,
        reason: EjectionReason,
        now: Instant,
    ) -> Option<OutlierEvent> {
        let _deciding = self.deciding.lock().unwrap_or_else(|e| e.into_inner());
        if state.holds_ejection() {
            return None;
        }
        let total = self.endpoints.len();
        let ejected = self.endpoints.iter().filter(|e| e.holds_ejection()).count();
        if !ejection_allowed(ejected, total, self.config.max_ejection_percent) {
            return Some(OutlierEvent::Refused {
                endpoint: state.address(),
                reason,
                ejected,
                total,
            });
        }
        let times = state.times_ejected() + 1;
        let duration = ejection_duration(
            self.config.base_ejection_time,
            self.config.max_ejection_time,
            times,
        );
        state.eject(now + duration, reason);
        self.ejected.notify_one();
        Some(OutlierEvent::Ejected {
            endpoint: state.address(),
            reason,
            duration,
            times,
        })
    }

    /// Returns the endpoints whose ejection may end at `now`, and says which.
    pub fn sweep(&self, now: Instant) -> Vec<SocketAddr> {
        self.endpoints
            .iter()
            .filter(|e| e.try_return(now))
            .map(|e| e.address())
            .collect()
    }

    /// When the next ejection ends. Ended ejections waiting for a passing active check are left
    /// out: the checker returns those.
    pub fn next_return(&self, now: Instant) -> Option<Instant> {
        self.endpoints
            .iter()
            .filter_map(|e| e.ejected_until())
            .filter(|&until| until > now)
            .min()
    }

    /// Returns ejected endpoints as their time comes, until dropped (it never ends by itself).
    pub async fn run(self: Arc<Self>, cluster: Arc<str>) {
        loop {
            let woken = self.ejected.notified();
            for endpoint in self.sweep(Instant::now()) {
                tracing::info!(%cluster, %endpoint, "endpoint returned from ejection");
            }
            match self.next_return(Instant::now()) {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = woken => {}
                    }
                }
                None => woken.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::HealthPolicy;
    use crate::metrics::EndpointMetrics;

    const BASE: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(100);

    fn config() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 3,
            base_ejection_time: BASE,
            max_ejection_time: MAX,
            max_ejection_percent: 0.5,
            require_health_check_to_return: false,
        }
    }

    fn cluster(n: usize, config: OutlierDetection, policy: HealthPolicy) -> OutlierDetector {
        let endpoints = (0..n)
            .map(|i| {
                let addr = SocketAddr::from(([10, 0, 0, i as u8 + 1], 80));
                EndpointState::new(addr, policy, EndpointMetrics::default())
            })
            .collect();
        OutlierDetector::new(config, endpoints)
    }

    /// Records `outcome` `n` times on endpoint `i`; the event of the last one.
    fn repeat(d: &OutlierDetector, i: usize, outcome: Outcome, n: u32) -> Option<OutlierEvent> {
        let now = Instant::now();
        let mut last = None;
        for k in 0..n {
            last = d.record(i, outcome, now);
            if k + 1 < n {
                assert_eq!(last, None, "event before the threshold");
            }
        }
        last
    }

    fn is_ejected(e: Option<OutlierEvent>) -> bool {
        matches!(e, Some(OutlierEvent::Ejected { .. }))
    }

    #[test]
    fn durations_grow_and_cap() {
        let d = |times| ejection_duration(BASE, MAX, times);
        assert_eq!(d(1), BASE);
        assert_eq!(d(2), BASE * 2);
        assert_eq!(d(3), BASE * 3);
        assert_eq!(d(4), MAX);
        assert_eq!(d(u32::MAX), MAX);
    }

    #[test]
    fn max_ejection_bound() {
        assert!(ejection_allowed(0, 10, 0.1));
        assert!(!ejection_allowed(1, 10, 0.1));
        assert!(ejection_allowed(2, 10, 0.3));
        assert!(!ejection_allowed(3, 10, 0.3));
        // At least one, even when the share rounds to none.
        assert!(ejection_allowed(0, 3, 0.0));
        assert!(!ejection_allowed(1, 3, 0.0));
        assert!(ejection_allowed(0, 1, 0.5));
        assert!(ejection_allowed(2, 3, 1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_5xx_ejects_and_time_returns() {
        let d = cluster(4, config(), HealthPolicy::default());
        let ep = &d.endpoints()[0];
        let start = Instant::now();
        let event = repeat(&d, 0, Outcome::Status5xx, 5);
        assert_eq!(
            event,
            Some(OutlierEvent::Ejected {
                endpoint: ep.address(),
                reason: EjectionReason::Consecutive5xx,
                duration: BASE,
                times: 1,
            })
        );
        assert!(!ep.eligible(start));
        assert_eq!(ep.metrics().ejected.get(), 1);
        assert_eq!(ep.metrics().ejections.get(), 1);
        // Outcomes while ejected are ignored.
        assert_eq!(repeat(&d, 0, Outcome::Status5xx, 10), None);

        tokio::time::advance(BASE - Duration::from_millis(1)).await;
        assert!(!ep.eligible(Instant::now()));
        assert!(d.sweep(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(ep.eligible(Instant::now()));
        assert_eq!(d.sweep(Instant::now()), vec![ep.address()]);
        assert_eq!(ep.metrics().ejected.get(), 0);
        // Counting starts over after a return.
        assert_eq!(repeat(&d, 0, Outcome::Status5xx, 4), None);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_gateway_failures_eject() {
        let d = cluster(4, config(), HealthPolicy::default());
        let event = repeat(&d, 1, Outcome::GatewayFailure, 3);
        assert!(matches!(
            event,
            Some(OutlierEvent::Ejected {
                reason: EjectionReason::ConsecutiveGatewayFailure,
                ..
            })
        ));
        assert!(!d.endpoints()[1].eligible(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_failures_count_as_5xx_and_5xx_breaks_a_gateway_run() {
        let d = cluster(4, config(), HealthPolicy::default());
        // 2 gateway failures, a plain 5xx (gateway run broken), 2 more: 5 consecutive 5xx.
        assert_eq!(repeat(&d, 0, Outcome::GatewayFailure, 2), None);
        assert_eq!(d.record(0, Outcome::Status5xx, Instant::now()), None);
        let event = repeat(&d, 0, Outcome::GatewayFailure, 2);
        assert!(matches!(
            event,
            Some(OutlierEvent::Ejected {
                reason: EjectionReason::Consecutive5xx,
                ..
            })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_counters() {
        let d = cluster(4, config(), HealthPolicy::default());
        for _ in 0..3 {
            assert_eq!(repeat(&d, 0, Outcome::Status5xx, 4), None);
            assert_eq!(d.record(0, Outcome::Success, Instant::now()), None);
            assert_eq!(repeat(&d, 0, Outcome::GatewayFailure, 2), None);
            assert_eq!(d.record(0, Outcome::Success, Instant::now()), None);
        }
        assert!(d.endpoints()[0].eligible(Instant::now()));
        assert_eq!(Outcome::from_status(404), Outcome::Success);
        assert_eq!(Outcome::from_status(503), Outcome::Status5xx);
    }

    #[tokio::test(start_paused = true)]
    async fn each_ejection_lasts_longer_up_to_the_cap() {
        let d = cluster(2, config(), HealthPolicy::default());
        let ep = &d.endpoints()[0];
        let mut durations = vec![];
        for _ in 0..5 {
            match repeat(&d, 0, Outcome::Status5xx, 5) {
                Some(OutlierEvent::Ejected {
                    duration, times, ..
                }) => {
                    assert_eq!(times as usize, durations.len() + 1);
                    durations.push(duration);
                    tokio::time::advance(duration - Duration::from_millis(1)).await;
                    assert!(!ep.eligible(Instant::now()));
                    tokio::time::advance(Duration::from_millis(1)).await;
                    assert_eq!(d.sweep(Instant::now()).len(), 1);
                }
                other => panic!("not ejected: {other:?}"),
            }
        }
        let secs: Vec<u64> = durations.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [30, 60, 90, 100, 100]);
        assert_eq!(ep.metrics().ejections.get(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_refuses_but_one_is_always_allowed() {
        // 10% of 4 endpoints rounds to none: one may still go, the second may not.
        let d = cluster(
            4,
            OutlierDetection {
                max_ejection_percent: 0.1,
                ..config()
            },
            HealthPolicy::default(),
        );
        assert!(is_ejected(repeat(&d, 0, Outcome::Status5xx, 5)));
        let refused = repeat(&d, 1, Outcome::Status5xx, 5);
        assert_eq!(
            refused,
            Some(OutlierEvent::Refused {
                endpoint: d.endpoints()[1].address(),
                reason: EjectionReason::Consecutive5xx,
                ejected: 1,
                total: 4,
            })
        );
        assert!(d.endpoints()[1].eligible(Instant::now()));
        // The refused endpoint counts afresh; once the first returns, it can go.
        tokio::time::advance(BASE).await;
        d.sweep(Instant::now());
        assert_eq!(repeat(&d, 1, Outcome::Status5xx, 4), None);
        assert!(is_ejected(d.record(1, Outcome::Status5xx, Instant::now())));

        // 50% of 4: two at once, not three.
        let d = cluster(4, config(), HealthPolicy::default());
        assert!(is_ejected(repeat(&d, 0, Outcome::GatewayFailure, 3)));
        assert!(is_ejected(repeat(&d, 1, Outcome::GatewayFailure, 3)));
        assert!(matches!(
            repeat(&d, 2, Outcome::GatewayFailure, 3),
            Some(OutlierEvent::Refused { ejected: 2, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn require_health_check_to_return() {
        let policy = HealthPolicy {
            active_checks: true,
            initially_healthy: true,
            require_check_to_return: true,
        };
        let d = cluster(
            4,
            OutlierDetection {
                require_health_check_to_return: true,
                ..config()
            },
            policy,
        );
        let ep = &d.endpoints()[0];
        assert!(is_ejected(repeat(&d, 0, Outcome::Status5xx, 5)));
        // A check passing during the ejection does not count...
        tokio::time::advance(BASE / 2).await;
        ep.record_check_pass(Instant::now());
        tokio::time::advance(BASE).await;
        assert!(!ep.eligible(Instant::now()));
        assert!(d.sweep(Instant::now()).is_empty());
        // ...nor for the max-ejection bound: it is still out.
        assert!(is_ejected(repeat(&d, 1, Outcome::Status5xx, 5)));
        assert!(matches!(
            repeat(&d, 2, Outcome::Status5xx, 5),
            Some(OutlierEvent::Refused { ejected: 2, .. })
        ));
        // One passing after the ejection ended returns it.
        ep.record_check_pass(Instant::now());
        assert!(ep.eligible(Instant::now()));
        assert!(ep.try_return(Instant::now()));
        assert_eq!(ep.metrics().ejected.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_returns_endpoints_on_time() {
        let d = Arc::new(cluster(4, config(), HealthPolicy::default()));
        let task = tokio::spawn(d.clone().run("c".into()));
        tokio::task::yield_now().await;
        assert!(is_ejected(repeat(&d, 0, Outcome::Status5xx, 5)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(is_ejected(repeat(&d, 1, Outcome::Status5xx, 5)));
        let ejected = |i: usize| d.endpoints()[i].metrics().ejected.get();
        tokio::time::sleep(Duration::from_secs(20) - Duration::from_millis(1)).await;
        assert_eq!((ejected(0), ejected(1)), (1, 1));
        tokio::time::sleep(Duration::from_millis(1)).await;
        tokio::task::yield_now().await;
        assert_eq!((ejected(0), ejected(1)), (0, 1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert_eq!((ejected(0), ejected(1)), (0, 0));
        task.abort();
    }
}
