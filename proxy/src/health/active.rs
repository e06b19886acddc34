//! Active health checking: each endpoint of a cluster is probed every interval (± jitter), and
//! enough consecutive failures or passes flip its health.
//!
//! The rules are pure ([`CheckStreak::observe`], [`next_check_delay`]); the checker
//! ([`ActiveChecker::run`]) only sequences probes, clock and state around them. Each endpoint has
//! its own loop (a task), so a slow endpoint never delays another's checks, and its own seeded
//! generator, so a schedule can be replayed in tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use remora_config::model::{HealthCheck, UpstreamProtocol};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::probe::{ConfiguredProbe, Probe, check_within};
use super::state::EndpointState;

/// Consecutive results that flip health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Passes that make an unhealthy endpoint healthy.
    pub healthy: u32,
    /// Failures that make a healthy endpoint unhealthy.
    pub unhealthy: u32,
}

impl Thresholds {
    pub fn from_config(hc: &HealthCheck) -> Self {
        Thresholds {
            healthy: hc.healthy_threshold,
            unhealthy: hc.unhealthy_threshold,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    BecameHealthy,
    BecameUnhealthy,
}

/// An endpoint's health and the run of results that may change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckStreak {
    healthy: bool,
    /// Consecutive results against the current health (passes while unhealthy, failures while
    /// healthy); a result agreeing with it starts the run over.
    against: u32,
}

impl CheckStreak {
    pub fn new(healthy: bool) -> Self {
        CheckStreak {
            healthy,
            against: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Takes one check result; says if health flipped. A threshold of 0 acts as 1.
    pub fn observe(&mut self, passed: bool, t: Thresholds) -> Option<Transition> {
        if passed == self.healthy {
            self.against = 0;
            return None;
        }
        self.against += 1;
        let needed = if passed { t.healthy } else { t.unhealthy };
        if self.against < needed.max(1) {
            return None;
        }
        self.healthy = passed;
        self.against = 0;
        Some(if passed {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }
}

/// `interval` stretched or shrunk by up to `jitter` (a share, 0..=1) of itself, from one draw.
pub fn next_check_delay(interval: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    // 53 random bits: a uniform float in [0, 1).
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    jittered(interval, jitter, unit)
}

/// `interval` × (1 + jitter × (2·unit − 1)), to the millisecond (the timer's resolution, so a
/// check happens exactly when computed): `unit` 0 is the shortest delay, 0.5 the interval.
pub fn jittered(interval: Duration, jitter: f64, unit: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    let factor = (1.0 + jitter * (2.0 * unit - 1.0)).max(0.0);
    Duration::from_millis((interval.as_secs_f64() * factor * 1000.0).round() as u64)
}

struct Target<P> {
    state: Arc<EndpointState>,
    probe: P,
    rng: SmallRng,
}

/// Checks one cluster's endpoints until stopped.
pub struct ActiveChecker<P> {
    cluster: Arc<str>,
    config: Arc<HealthCheck>,
    targets: Vec<Target<P>>,
}

impl ActiveChecker<ConfiguredProbe> {
    /// A checker probing each endpoint as `config.kind` says (HTTP checks in the cluster's
    /// `protocol`). `rng` seeds each endpoint's jitter generator.
    pub fn from_config(
        cluster: &str,
        config: &HealthCheck,
        protocol: UpstreamProtocol,
        mtls: Option<&remora_config::identity::SpiffeId>,
        endpoints: &[Arc<EndpointState>],
        rng: &mut impl Rng,
    ) -> Self {
        let probe = |s: &EndpointState| {
            ConfiguredProbe::new(&config.kind, s.address(), protocol, mtls.cloned())
        };
        let targets = endpoints.iter().map(|s| (s.clone(), probe(s))).collect();
        ActiveChecker::new(cluster, config, targets, rng)
    }
}

impl<P: Probe> ActiveChecker<P> {
    /// A checker with a probe per endpoint (tests pass fakes).
    pub fn new(
        cluster: &str,
        config: &HealthCheck,
        targets: Vec<(Arc<EndpointState>, P)>,
        rng: &mut impl Rng,
    ) -> Self {
        ActiveChecker {
            cluster: cluster.into(),
            config: Arc::new(config.clone()),
            targets: targets
                .into_iter()
                .map(|(state, probe)| Target {
                    state,
                    probe,
                    rng: SmallRng::seed_from_u64(rng.next_u64()),
                })
                .collect(),
        }
    }

    /// Checks every endpoint, first at once and then every interval ± jitter after the previous
    /// check ended, until `stop` resolves. Dropping the future stops the checks too.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let mut loops = JoinSet::new();
        for target in self.targets {
            loops.spawn(check_loop(
                self.cluster.clone(),
                self.config.clone(),
                target,
            ));
        }
        stop.await;
        // Dropping the set aborts the loops (and the probes' kept connections with them).
        drop(loops);
    }
}

async fn check_loop<P: Probe>(cluster: Arc<str>, config: Arc<HealthCheck>, mut t: Target<P>) {
    let thresholds = Thresholds::from_config(&config);
    let endpoint = t.state.address();
    let mut streak = CheckStreak::new(t.state.is_healthy());
    loop {
        let result = check_within(&mut t.probe, config.timeout).await;
        let now = Instant::now();
        let passed = result.is_ok();
        let transition = streak.observe(passed, thresholds);
        match result {
            Ok(()) => t.state.record_check_pass(now),
            Err(failure) => {
                tracing::debug!(%cluster, %endpoint, reason = %failure.reason,
                    detail = %failure.detail, "health check failed");
                if transition == Some(Transition::BecameUnhealthy) {
                    tracing::info!(%cluster, %endpoint, reason = %failure.reason,
                        detail = %failure.detail, failures = thresholds.unhealthy.max(1),
                        "endpoint unhealthy");
                }
                t.state.record_check_failure(failure);
            }
        }
        match transition {
            Some(Transition::BecameHealthy) => {
                t.state.set_healthy(true);
                tracing::info!(%cluster, %endpoint, passes = thresholds.healthy.max(1),
                    "endpoint healthy");
            }
            Some(Transition::BecameUnhealthy) => {
                t.state.set_healthy(false);
            }
            None => {}
        }
        // An ended ejection that waited for a passing check is over now.
        if passed && t.state.try_return(now) {
            tracing::info!(%cluster, %endpoint, "endpoint returned from ejection");
        }
        let delay = next_check_delay(config.interval, config.jitter, &mut t.rng);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use remora_config::model::HealthCheckKind;

    use super::*;
    use crate::health::HealthPolicy;
    use crate::health::probe::{CheckFailure, FailureReason};
    use crate::metrics::EndpointMetrics;

    /// A probe answering from a script (then passing forever), noting when it was asked and
    /// what health the endpoint had at that moment.
    struct FakeProbe {
        script: VecDeque<Result<(), FailureReason>>,
        /// How long each answer takes.
        takes: Duration,
        log: Arc<Mutex<Vec<(Instant, bool)>>>,
        state: Arc<EndpointState>,
    }

    impl Probe for FakeProbe {
        async fn check(&mut self) -> Result<(), CheckFailure> {
            let healthy = self.state.is_healthy();
            self.log.lock().unwrap().push((Instant::now(), healthy));
            tokio::time::sleep(self.takes).await;
            self.script
                .pop_front()
                .unwrap_or(Ok(()))
                .map_err(|r| CheckFailure::new(r, "scripted"))
        }
    }

    fn config() -> HealthCheck {
        HealthCheck {
            kind: HealthCheckKind::Tcp {
                send: None,
                expect: None,
            },
            interval: Duration::from_secs(10),
            jitter: 0.2,
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            initially_healthy: true,
        }
    }

    struct Setup {
        state: Arc<EndpointState>,
        metrics: EndpointMetrics,
        log: Arc<Mutex<Vec<(Instant, bool)>>>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    fn spawn_checker(
        config: &HealthCheck,
        script: Vec<Result<(), FailureReason>>,
        takes: Duration,
        seed: u64,
    ) -> Setup {
        let metrics = EndpointMetrics::default();
        let policy = HealthPolicy {
            active_checks: true,
            initially_healthy: config.initially_healthy,
            require_check_to_return: false,
        };
        let state = EndpointState::new("10.0.0.1:80".parse().unwrap(), policy, metrics.clone());
        let log = Arc::new(Mutex::new(vec![]));
        let probe = FakeProbe {
            script: script.into(),
            takes,
            log: log.clone(),
            state: state.clone(),
        };
        let mut rng = SmallRng::seed_from_u64(seed);
        let checker = ActiveChecker::new("c", config, vec![(state.clone(), probe)], &mut rng);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(checker.run(async move {
            let _ = stopped.await;
        }));
        Setup {
            state,
            metrics,
            log,
            stop,
            task,
        }
    }

    /// The check times the checker must follow: the endpoint's generator is the first one drawn
    /// from the seeded cluster generator.
    fn schedule(
        config: &HealthCheck,
        seed: u64,
        start: Instant,
        n: usize,
        takes: Duration,
    ) -> Vec<Instant> {
        let mut cluster_rng = SmallRng::seed_from_u64(seed);
        let mut rng = SmallRng::seed_from_u64(cluster_rng.next_u64());
        let mut at = start;
        (0..n)
            .map(|_| {
                let this = at;
                at += takes + next_check_delay(config.interval, config.jitter, &mut rng);
                this
            })
            .collect()
    }

    async fn settle() {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn streak_flips_after_exactly_the_threshold() {
        let t = Thresholds {
            healthy: 2,
            unhealthy: 3,
        };
        let mut s = CheckStreak::new(true);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), None);
        // A pass in between starts the run over.
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(false, t), Some(Transition::BecameUnhealthy));
        assert!(!s.healthy());
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(false, t), None);
        assert_eq!(s.observe(true, t), None);
        assert_eq!(s.observe(true, t), Some(Transition::BecameHealthy));
        // Threshold 0 acts as 1.
        let mut s = CheckStreak::new(false);
        let zero = Thresholds {
            healthy: 0,
            unhealthy: 0,
        };
        assert_eq!(s.observe(true, zero), Some(Transition::BecameHealthy));
        assert_eq!(s.observe(false, zero), Some(Transition::BecameUnhealthy));
    }

    #[test]
    fn delay_stays_within_the_jitter_and_is_seeded() {
        let interval = Duration::from_secs(10);
        assert_eq!(jittered(interval, 0.2, 0.0), Duration::from_secs(8));
        assert_eq!(jittered(interval, 0.2, 0.5), interval);
        assert_eq!(jittered(interval, 1.0, 0.0), Duration::ZERO);
        assert_eq!(jittered(interval, 0.0, 0.9), interval);
        let draws = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..1000)
                .map(|_| next_check_delay(interval, 0.2, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draws(1);
        assert_eq!(a, draws(1));
        assert_ne!(a, draws(2));
        assert!(
            a.iter()
                .all(|d| *d >= Duration::from_secs(8) && *d <= Duration::from_secs(12))
        );
        // Spread over the whole range, not stuck at one end.
        assert!(a.iter().any(|d| *d < Duration::from_millis(8500)));
        assert!(a.iter().any(|d| *d > Duration::from_millis(11500)));
    }

    #[tokio::test(start_paused = true)]
    async fn flips_at_the_scheduled_checks() {
        use FailureReason::*;
        let config = config();
        let start = Instant::now();
        // Checks 1-2 pass, 3-5 fail (3 = unhealthy_threshold), 6-7 pass (2 = healthy_threshold).
        let script = vec![
            Ok(()),
            Ok(()),
            Err(Status),
            Err(Timeout),
            Err(Connect),
            Ok(()),
            Ok(()),
        ];
        let s = spawn_checker(&config, script, Duration::ZERO, 42);
        let times = schedule(&config, 42, start, 9, Duration::ZERO);

        // Just before the 5th check (the 3rd failure) the endpoint is still healthy...
        tokio::time::sleep_until(times[4] - Duration::from_millis(1)).await;
        settle().await;
        assert!(s.state.is_healthy());
        assert_eq!(s.log.lock().unwrap().len(), 4);
        // ...and unhealthy right at it.
        tokio::time::sleep_until(times[4]).await;
        settle().await;
        assert!(!s.state.is_healthy());
        assert!(!s.state.eligible(Instant::now()));
        assert_eq!(s.metrics.healthy.get(), 0);
        let last = s.state.last_check_failure().unwrap();
        assert_eq!(last.reason, Connect);

        // One pass is not enough; the 7th check (2nd pass) makes it healthy.
        tokio::time::sleep_until(times[6] - Duration::from_millis(1)).await;
        settle().await;
        assert!(!s.state.is_healthy());
        tokio::time::sleep_until(times[6]).await;
        settle().await;
        assert!(s.state.is_healthy());
        assert_eq!(s.metrics.healthy.get(), 1);

        tokio::time::sleep_until(times[8]).await;
        settle().await;
        let log = s.log.lock().unwrap().clone();
        let at: Vec<Instant> = log.iter().map(|(t, _)| *t).collect();
        assert_eq!(at, times);
        let health: Vec<bool> = log.iter().map(|(_, h)| *h).collect();
        assert_eq!(
            health,
            [true, true, true, true, true, false, false, true, true]
        );
        for reason in [Status, Timeout, Connect] {
            assert_eq!(s.metrics.check_failures.get(reason), 1);
        }
        s.stop.send(()).unwrap();
        s.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn initially_unhealthy_needs_the_healthy_threshold() {
        let config = HealthCheck {
            initially_healthy: false,
            ..config()
        };
        let start = Instant::now();
        let s = spawn_checker(&config, vec![], Duration::ZERO, 7);
        let times = schedule(&config, 7, start, 2, Duration::ZERO);
        settle().await;
        assert!(!s.state.is_healthy());
        tokio::time::sleep_until(times[1]).await;
        settle().await;
        assert!(s.state.is_healthy());
        drop(s.stop);
        s.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_times_out_and_the_next_check_waits_after_it() {
        let config = config();
        let start = Instant::now();
        // Each answer takes 5 s, past the 1 s timeout.
        let s = spawn_checker(&config, vec![], Duration::from_secs(5), 3);
        let times = schedule(&config, 3, start, 4, config.timeout);
        tokio::time::sleep_until(times[3]).await;
        settle().await;
        assert!(!s.state.is_healthy());
        assert_eq!(s.metrics.check_failures.get(FailureReason::Timeout), 3);
        let at: Vec<Instant> = s.log.lock().unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(at, times);
        s.stop.send(()).unwrap();
        s.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_checks() {
        let config = config();
        let s = spawn_checker(&config, vec![], Duration::ZERO, 1);
        settle().await;
        assert_eq!(s.log.lock().unwrap().len(), 1);
        s.stop.send(()).unwrap();
        s.task.await.unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(s.log.lock().unwrap().len(), 1);
        // The loop's task is gone, and with it its reference to the state.
        assert_eq!(Arc::strong_count(&s.state), 1);
    }
}
