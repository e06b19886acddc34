//! Endpoint health: whether the balancer may send a request to an endpoint.
//!
//! Two sources decide it, as in Envoy:
//! - active health checks ([`active`], probes in [`probe`]): the proxy asks each endpoint every
//!   interval, and enough consecutive failures or passes flip it unhealthy or healthy;
//! - passive outlier detection ([`outlier`]): the outcomes of real requests; too many consecutive
//!   5xx or gateway failures eject the endpoint for a while.
//!
//! Both write an endpoint's [`EndpointState`], which the balancer reads lock-free on every pick
//! ([`EndpointState::eligible`]) and the admin page shows ([`EndpointState::snapshot`]).
//! [`ClusterHealth`] puts the pieces together for one cluster.

pub mod active;
pub mod outlier;
pub mod probe;
pub mod state;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use remora_config::model;
use tokio::time::Instant;

pub use active::ActiveChecker;
pub use outlier::{Outcome, OutlierDetector, OutlierEvent, ejection_duration};
pub use probe::{CheckFailure, FailureReason};
pub use state::{EjectionReason, EndpointSnapshot, EndpointState, HealthPolicy, InFlight};

use crate::metrics::Metrics;

/// One cluster's endpoint states, outlier detector and health-check config, built from the
/// cluster's config. Endpoint `i` is `cluster.endpoints[i]`.
pub struct ClusterHealth {
    name: Arc<str>,
    endpoints: Arc<[Arc<EndpointState>]>,
    outlier: Option<Arc<OutlierDetector>>,
    health_check: Option<model::HealthCheck>,
    /// HTTP checks speak the cluster's protocol.
    protocol: model::UpstreamProtocol,
    /// Checks go through mTLS, as requests do, when the cluster requires an identity.
    mtls: Option<remora_config::identity::SpiffeId>,
    /// `remora_lb_panic_total` for this cluster, for the balancer to count panic-mode picks.
    lb_panic: Counter,
    /// Set at the first ejection. Until then, and without active checks, every endpoint is
    /// eligible and a pick need not look at each one.
    ever_ejected: std::sync::atomic::AtomicBool,
}

impl ClusterHealth {
    pub fn new(cluster: &model::Cluster, metrics: &Metrics) -> Self {
        Self::carry_over(cluster, metrics, None)
    }

    /// As [`ClusterHealth::new`], keeping the state (health, ejections and their count, load)
    /// of endpoints that `previous`, the same cluster before a reload, already had, as long as
    /// they are checked the same way. A reload that adds an endpoint must not bring back one
    /// that is unhealthy or ejected.
    pub fn carry_over(
        cluster: &model::Cluster,
        metrics: &Metrics,
        previous: Option<&ClusterHealth>,
    ) -> Self {
        let policy = HealthPolicy::from_cluster(cluster);
        let endpoints: Arc<[Arc<EndpointState>]> = cluster
            .endpoints
            .iter()
            .map(|e| {
                let kept = previous.and_then(|p| {
                    p.endpoints
                        .iter()
                        .find(|s| s.address() == e.address && s.policy() == policy)
                });
                if let Some(state) = kept {
                    return state.clone();
                }
                let mut m = metrics.endpoint(&cluster.name, e.address);
                if policy.active_checks {
                    m.check_failures = metrics.health_check_failures(&cluster.name, e.address);
                }
                EndpointState::new(e.address, policy, m)
            })
            .collect();
        if let Some(previous) = previous {
            for gone in previous.endpoints.iter() {
                if !cluster
                    .endpoints
                    .iter()
                    .any(|e| e.address == gone.address())
                {
                    metrics.remove_endpoint(&cluster.name, gone.address());
                }
            }
        }
        ClusterHealth {
            name: cluster.name.as_str().into(),
            outlier: cluster
                .outlier_detection
                .map(|od| Arc::new(OutlierDetector::new(od, endpoints.clone()))),
            endpoints,
            health_check: cluster.health_check.clone(),
            protocol: cluster.protocol,
            mtls: cluster.mtls.as_ref().map(|m| m.identity.clone()),
            lb_panic: metrics.lb_panic(&cluster.name),
            ever_ejected: std::sync::atomic::AtomicBool::new(
                previous.is_some_and(|p| p.ever_ejected.load(std::sync::atomic::Ordering::Relaxed)),
            ),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The states, in the order of the cluster's endpoints.
    pub fn endpoints(&self) -> &[Arc<EndpointState>] {
        &self.endpoints
    }

    pub fn endpoint(&self, index: usize) -> &Arc<EndpointState> {
        &self.endpoints[index]
    }

    /// `None` when the cluster has no outlier detection.
    pub fn outlier(&self) -> Option<&Arc<OutlierDetector>> {
        self.outlier.as_ref()
    }

    pub fn lb_panic(&self) -> &Counter {
        &self.lb_panic
    }

    pub fn eligible(&self, index: usize, now: Instant) -> bool {
        self.endpoints[index].eligible(now)
    }

    /// True when every endpoint is certainly eligible (no active checks, never an ejection),
    /// so the balancer can skip counting them.
    pub fn all_eligible(&self) -> bool {
        self.health_check.is_none() && !self.ever_ejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records what became of a request to endpoint `index` (a no-op without outlier detection),
    /// logging an ejection or a refused one.
    pub fn record(&self, index: usize, outcome: Outcome) -> Option<OutlierEvent> {
        let event = self
            .outlier
            .as_ref()?
            .record(index, outcome, Instant::now())?;
        let cluster = &*self.name;
        if let OutlierEvent::Ejected { .. } = event {
            self.ever_ejected
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match event {
            OutlierEvent::Ejected {
                endpoint,
                reason,
                duration,
                times,
            } => tracing::info!(cluster, %endpoint, reason = reason.as_str(),
                duration_ms = duration.as_millis() as u64, times, "endpoint ejected"),
            OutlierEvent::Refused {
                endpoint,
                reason,
                ejected,
                total,
            } => tracing::info!(cluster, %endpoint, reason = reason.as_str(), ejected, total,
                "endpoint not ejected: too many of the cluster's endpoints already are"),
        }
        Some(event)
    }

    /// The admin page's view of every endpoint.
    pub fn snapshot(&self, now: Instant) -> Vec<EndpointSnapshot> {
        self.endpoints.iter().map(|e| e.snapshot(now)).collect()
    }

    /// Starts the cluster's background work on the current runtime: the active checker (if
    /// configured) and the task returning ejected endpoints (if outlier detection is). They
    /// stop when the returned handle is dropped.
    pub fn spawn(&self) -> HealthTasks {
        self.spawn_with_rng(&mut rand::make_rng::<rand::rngs::SmallRng>())
    }

    /// As [`ClusterHealth::spawn`], with the checker's jitter seeded from `rng`.
    pub fn spawn_with_rng(&self, rng: &mut impl Rng) -> HealthTasks {
        let mut tasks = Vec::new();
        if let Some(hc) = &self.health_check {
            let checker = ActiveChecker::from_config(
                &self.name,
                hc,
                self.protocol,
                self.mtls.as_ref(),
                &self.endpoints,
                rng,
            );
            let task = tokio::spawn(checker.run(std::future::pending()));
            tasks.push(task.abort_handle());
        }
        if let Some(outlier) = &self.outlier {
            let task = tokio::spawn(outlier.clone().run(self.name.clone()));
            tasks.push(task.abort_handle());
        }
        HealthTasks(tasks)
    }
}

/// A cluster's health tasks; dropping it stops them (keep it beside the cluster's runtime).
#[must_use = "the health tasks stop when this is dropped"]
pub struct HealthTasks(Vec<tokio::task::AbortHandle>);

impl Drop for HealthTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use remora_config::model::{
        Cluster, Endpoint, HealthCheck, HealthCheckKind, LbPolicy, LoadBalancer, OutlierDetection,
        UpstreamProtocol,
    };
    use tokio::net::TcpListener;

    use super::*;

    fn cluster(endpoints: Vec<std::net::SocketAddr>) -> Cluster {
        Cluster {
            name: "web".into(),
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(60),
            discovery: Default::default(),
            endpoints: endpoints
                .into_iter()
                .map(|address| Endpoint { address, weight: 1 })
                .collect(),
            load_balancer: LoadBalancer {
                policy: LbPolicy::RoundRobin,
                panic_threshold: 0.5,
            },
            retries: Default::default(),
            retry_budget: Default::default(),
            circuit_breakers: Default::default(),
            mtls: None,
            health_check: Some(HealthCheck {
                kind: HealthCheckKind::Tcp {
                    send: None,
                    expect: None,
                },
                interval: Duration::from_millis(50),
                jitter: 0.1,
                timeout: Duration::from_secs(1),
                unhealthy_threshold: 2,
                healthy_threshold: 1,
                initially_healthy: false,
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx: 2,
                consecutive_gateway_failure: 2,
                base_ejection_time: Duration::from_secs(30),
                max_ejection_time: Duration::from_secs(300),
                max_ejection_percent: 0.5,
                require_health_check_to_return: false,
            }),
        }
    }

    /// Through real sockets and the registry: an endpoint that accepts becomes healthy, one
    /// that refuses stays unhealthy, and the metrics say so.
    #[tokio::test]
    async fn checks_real_endpoints_and_exports_metrics() {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (up_addr, down_addr) = (up.local_addr().unwrap(), down.local_addr().unwrap());
        drop(down);
        let metrics = Metrics::new();
        let health = ClusterHealth::new(&cluster(vec![up_addr, down_addr]), &metrics);
        assert!(!health.eligible(0, Instant::now()));
        let tasks = health.spawn();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !health.eligible(0, Instant::now()) {
            assert!(Instant::now() < deadline, "never became healthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while health
            .endpoint(1)
            .metrics()
            .check_failures
            .get(FailureReason::Connect)
            < 2
        {
            assert!(Instant::now() < deadline, "never failed twice");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!health.eligible(1, Instant::now()));
        drop(tasks);

        health.endpoint(0).record_pick();
        health.lb_panic().inc();
        assert_eq!(health.record(0, Outcome::GatewayFailure), None);
        assert!(matches!(
            health.record(0, Outcome::GatewayFailure),
            Some(OutlierEvent::Ejected { .. })
        ));
        assert!(!health.eligible(0, Instant::now()));
        let snap = health.snapshot(Instant::now());
        assert_eq!(snap[0].state(), "ejected");
        assert_eq!(snap[1].state(), "unhealthy");
        assert_eq!(
            snap[1].to_json()["health"]["last_failure"]["reason"],
            "connect"
        );

        let text = metrics.encode();
        let up = format!("cluster=\"web\",endpoint=\"{up_addr}\"");
        let down = format!("cluster=\"web\",endpoint=\"{down_addr}\"");
        for line in [
            format!("remora_endpoint_healthy{{{up}}} 1"),
            format!("remora_endpoint_healthy{{{down}}} 0"),
            format!("remora_endpoint_ejected{{{up}}} 1"),
            format!("remora_endpoint_ejections_total{{{up}}} 1"),
            format!("remora_endpoint_picks_total{{{up}}} 1"),
            "remora_lb_panic_total{cluster=\"web\"} 1".to_owned(),
        ] {
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        let failures = format!("remora_health_check_failures_total{{{down},reason=\"connect\"}} ");
        assert!(text.contains(&failures), "no {failures} in\n{text}");
    }

    #[tokio::test]
    async fn without_checks_or_detection_every_endpoint_is_eligible() {
        let mut c = cluster(vec!["127.0.0.1:1".parse().unwrap()]);
        c.health_check = None;
        c.outlier_detection = None;
        let metrics = Metrics::new();
        let health = ClusterHealth::new(&c, &metrics);
        assert!(health.eligible(0, Instant::now()));
        for _ in 0..10 {
            assert_eq!(health.record(0, Outcome::GatewayFailure), None);
        }
        assert!(health.eligible(0, Instant::now()));
        let _tasks = health.spawn();
        // No checks configured: no failure series are exported.
        assert!(
            !metrics
                .encode()
                .contains("remora_health_check_failures_total{")
        );
    }
}
