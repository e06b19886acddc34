//! Prometheus metrics: the families, and the label sets resolved ahead of time.
//!
//! Every family is registered once per process. The request path never builds a label set or
//! looks one up: when a config is applied, [`crate::snapshot`] resolves the handles each route,
//! cluster and listener needs ([`ListenerMetrics`], [`ClusterMetrics`], [`StatusCounters`]) and
//! keeps them next to the runtime objects. A handle is an `Arc` around an atomic, so recording is
//! one atomic add.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub direction: &'static str,
    pub route: String,
    pub cluster: String,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub cluster: String,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectLabels {
    pub listener: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub listener: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub cluster: String,
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub listener: String,
    pub route: String,
    pub kind: &'static str,
}

/// Latency buckets in seconds, from 0.5 ms (a loopback hop) to 30 s (past any sane timeout).
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
    30.0,
];

#[derive(Clone)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

/// All metric families of one proxy process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram, LatencyHistogram>,
    upstream_duration: Family<ClusterLabels, Histogram, LatencyHistogram>,
    proxy_errors: Family<ErrorLabels, Counter>,
    downstream_open: Family<ListenerLabels, Gauge>,
    downstream_total: Family<ListenerLabels, Counter>,
    downstream_rx: Family<ListenerLabels, Counter>,
    downstream_tx: Family<ListenerLabels, Counter>,
    upstream_open: Family<ClusterLabels, Gauge>,
    upstream_total: Family<ClusterLabels, Counter>,
    upstream_connect_errors: Family<ClusterLabels, Counter>,
    upstream_rx: Family<ClusterLabels, Counter>,
    upstream_tx: Family<ClusterLabels, Counter>,
    tcp_duration: Family<ListenerLabels, Histogram, LatencyHistogram>,
    detections: Family<DetectLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    last_reload_success: Gauge,
    health: HealthFamilies,
    resilience: ResilienceFamilies,
    dns_resolutions: Family<DnsLabels, Counter>,
    dns_endpoints: Family<ClusterLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("remora");
        crate::tls::global().metrics.register(&mut registry);
        let requests = Family::default();
        registry.register(
            "requests",
            "HTTP requests by listener, route, cluster and status class (1xx-5xx)",
            requests.clone(),
        );
        let request_duration = Family::new_with_constructor(LatencyHistogram);
        registry.register(
            "request_duration_seconds",
            "Time from receiving the request head to sending the last byte of the response",
            request_duration.clone(),
        );
        let upstream_duration = Family::new_with_constructor(LatencyHistogram);
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request upstream to receiving the response headers",
            upstream_duration.clone(),
        );
        let proxy_errors = Family::default();
        registry.register(
            "proxy_errors",
            "Responses the proxy generated itself, by reason (the x-remora-error value)",
            proxy_errors.clone(),
        );
        let downstream_open = Family::default();
        registry.register(
            "downstream_connections_open",
            "Open downstream connections",
            downstream_open.clone(),
        );
        let downstream_total = Family::default();
        registry.register(
            "downstream_connections",
            "Accepted downstream connections",
            downstream_total.clone(),
        );
        let downstream_rx = Family::default();
        registry.register(
            "downstream_received_bytes",
            "Bytes read from downstream connections",
            downstream_rx.clone(),
        );
        let downstream_tx = Family::default();
        registry.register(
            "downstream_sent_bytes",
            "Bytes written to downstream connections",
            downstream_tx.clone(),
        );
        let upstream_open = Family::default();
        registry.register(
            "upstream_connections_open",
            "Open upstream connections",
            upstream_open.clone(),
        );
        let upstream_total = Family::default();
        registry.register(
            "upstream_connections",
            "Upstream connections established",
            upstream_total.clone(),
        );
        let upstream_connect_errors = Family::default();
        registry.register(
            "upstream_connect_errors",
            "Failed upstream connection attempts (refused, unreachable, timed out)",
            upstream_connect_errors.clone(),
        );
        let upstream_rx = Family::default();
        registry.register(
            "upstream_received_bytes",
            "Bytes read from upstream connections",
            upstream_rx.clone(),
        );
        let upstream_tx = Family::default();
        registry.register(
            "upstream_sent_bytes",
            "Bytes written to upstream connections",
            upstream_tx.clone(),
        );
        let tcp_duration = Family::new_with_constructor(LatencyHistogram);
        registry.register(
            "tcp_connection_duration_seconds",
            "How long opaque TCP connections lasted, accept to close",
            tcp_duration.clone(),
        );
        let detections = Family::default();
        registry.register(
            "protocol_detections",
            "Connections on protocol: auto listeners by what detection decided \
             (http1, http2, tls, opaque, timeout, closed)",
            detections.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "config_reloads",
            "Config changes seen, by result (applied or rejected)",
            reloads.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_success",
            "1 if the last config change was applied (or none was seen yet), 0 if it was rejected",
            last_reload_success.clone(),
        );
        last_reload_success.set(1);
        let health = HealthFamilies::register(&mut registry);
        let resilience = ResilienceFamilies::register(&mut registry);
        let dns_resolutions = Family::default();
        registry.register(
            "dns_resolutions",
            "DNS resolutions of dns clusters, by result (success, failure); on a failure the \
             cluster keeps its last good answer",
            dns_resolutions.clone(),
        );
        let dns_endpoints = Family::default();
        registry.register(
            "dns_endpoints",
            "Endpoints in a dns cluster's last good answer",
            dns_endpoints.clone(),
        );
        Arc::new(Metrics {
            resilience,
            registry,
            tcp_duration,
            detections,
            reloads,
            last_reload_success,
            requests,
            request_duration,
            upstream_duration,
            proxy_errors,
            downstream_open,
            downstream_total,
            downstream_rx,
            downstream_tx,
            upstream_open,
            upstream_total,
            upstream_connect_errors,
            upstream_rx,
            upstream_tx,
            health,
            dns_resolutions,
            dns_endpoints,
        })
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn listener(&self, listener: &str, direction: &'static str) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: listener.to_owned(),
            direction,
        };
        ListenerMetrics {
            open: self.downstream_open.get_or_create_owned(&labels),
            total: self.downstream_total.get_or_create_owned(&labels),
            bytes: ByteCounters {
                rx: self.downstream_rx.get_or_create_owned(&labels),
                tx: self.downstream_tx.get_or_create_owned(&labels),
            },
            unrouted: self.status_counters(listener, direction, "", ""),
        }
    }

    pub fn cluster(&self, cluster: &str) -> ClusterMetrics {
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        ClusterMetrics {
            open: self.upstream_open.get_or_create_owned(&labels),
            total: self.upstream_total.get_or_create_owned(&labels),
            connect_errors: self.upstream_connect_errors.get_or_create_owned(&labels),
            latency: self.upstream_duration.get_or_create_owned(&labels),
            bytes: ByteCounters {
                rx: self.upstream_rx.get_or_create_owned(&labels),
                tx: self.upstream_tx.get_or_create_owned(&labels),
            },
        }
    }

    /// A dns cluster's resolution series.
    pub fn dns(&self, cluster: &str) -> crate::discovery::DnsMetrics {
        let result = |result| DnsLabels {
            cluster: cluster.to_owned(),
            result,
        };
        crate::discovery::DnsMetrics {
            successes: self.dns_resolutions.get_or_create_owned(&result("success")),
            failures: self.dns_resolutions.get_or_create_owned(&result("failure")),
            endpoints: self.dns_endpoints.get_or_create_owned(&ClusterLabels {
                cluster: cluster.to_owned(),
            }),
        }
    }

    /// Drops the series of a dns cluster that is gone.
    pub fn remove_dns(&self, cluster: &str) {
        for result in ["success", "failure"] {
            self.dns_resolutions.remove(&DnsLabels {
                cluster: cluster.to_owned(),
                result,
            });
        }
        self.dns_endpoints.remove(&ClusterLabels {
            cluster: cluster.to_owned(),
        });
    }

    /// A cluster's retry, circuit-breaker and failure-breaker series.
    pub fn cluster_resilience(&self, cluster: &str) -> ClusterResilienceMetrics {
        let r = &self.resilience;
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        let by_resource = |resource| BreakerLabels {
            cluster: cluster.to_owned(),
            resource,
        };
        let resources = crate::breaker::Overflow::ALL.map(|o| o.resource());
        ClusterResilienceMetrics {
            retries: r.retries.get_or_create_owned(&labels),
            budget_exhausted: r.budget_exhausted.get_or_create_owned(&labels),
            hedges: r.hedges.get_or_create_owned(&labels),
            limits: resources.map(|res| {
                (
                    r.breaker_used.get_or_create_owned(&by_resource(res)),
                    r.breaker_max.get_or_create_owned(&by_resource(res)),
                )
            }),
            overflows: resources.map(|res| r.overflows.get_or_create_owned(&by_resource(res))),
            state: r.breaker_state.get_or_create_owned(&labels),
        }
    }

    /// `remora_faults_injected_total` for a route: (delay, abort).
    pub fn faults(&self, listener: &str, route: &str) -> (Counter, Counter) {
        let counter = |kind| {
            self.resilience.faults.get_or_create_owned(&FaultLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
                kind,
            })
        };
        (counter("delay"), counter("abort"))
    }

    /// `remora_rate_limited_total` for a route, or for a listener's own limit (route "").
    pub fn rate_limited(&self, listener: &str, route: &str) -> Counter {
        self.resilience
            .rate_limited
            .get_or_create_owned(&RouteLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
            })
    }

    /// `remora_authz_denied_total` for a route, or for a listener's own rules (route "").
    pub fn authz_denied(&self, listener: &str, route: &str) -> Counter {
        self.resilience
            .authz_denied
            .get_or_create_owned(&RouteLabels {
                listener: listener.to_owned(),
                route: route.to_owned(),
            })
    }

    pub fn status_counters(
        &self,
        listener: &str,
        direction: &'static str,
        route: &str,
        cluster: &str,
    ) -> StatusCounters {
        let counter = |status_class| {
            self.requests.get_or_create_owned(&RequestLabels {
                listener: listener.to_owned(),
                direction,
                route: route.to_owned(),
                cluster: cluster.to_owned(),
                status_class,
            })
        };
        StatusCounters([
            counter("1xx"),
            counter("2xx"),
            counter("3xx"),
            counter("4xx"),
            counter("5xx"),
        ])
    }

    pub fn route_latency(&self, listener: &str, route: &str) -> Histogram {
        self.request_duration.get_or_create_owned(&RouteLabels {
            listener: listener.to_owned(),
            route: route.to_owned(),
        })
    }

    pub fn tcp_duration(&self, listener: &str, direction: &'static str) -> Histogram {
        self.tcp_duration.get_or_create_owned(&ListenerLabels {
            listener: listener.to_owned(),
            direction,
        })
    }

    pub fn detection(&self, listener: &str, result: &'static str) {
        self.detections
            .get_or_create(&DetectLabels {
                listener: listener.to_owned(),
                result,
            })
            .inc();
    }

    pub fn config_reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.last_reload_success.set(i64::from(applied));
    }

    /// Counted once per generated response; the label set is small and fixed, so it is looked up
    /// here rather than pre-resolved.
    pub fn proxy_error(&self, listener: &str, reason: &'static str) {
        self.proxy_errors
            .get_or_create(&ErrorLabels {
                listener: listener.to_owned(),
                reason,
            })
            .inc();
    }
}

/// Request counters for one (listener, route, cluster), one per status class.
#[derive(Clone, Debug)]
pub struct StatusCounters([Counter; 5]);

impl StatusCounters {
    pub fn record(&self, status: http::StatusCode) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.0[class].inc();
    }
}

#[derive(Clone, Debug)]
pub struct ByteCounters {
    pub rx: Counter,
    pub tx: Counter,
}

#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    pub open: Gauge,
    pub total: Counter,
    pub bytes: ByteCounters,
    /// Requests answered before a route was chosen (no route, limits): empty route and cluster.
    pub unrouted: StatusCounters,
}

#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    pub open: Gauge,
    pub total: Counter,
    pub connect_errors: Counter,
    pub latency: Histogram,
    pub bytes: ByteCounters,
}

/// Keeps an "open" gauge up while alive: one per connection.
pub struct OpenGuard(Gauge);

impl OpenGuard {
    pub fn new(gauge: &Gauge, total: &Counter) -> Self {
        gauge.inc();
        total.inc();
        OpenGuard(gauge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: String,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckFailureLabels {
    pub cluster: String,
    pub endpoint: String,
    /// One of [`crate::health::FailureReason`]'s fixed tokens.
    pub reason: &'static str,
}

/// The per-endpoint health, ejection and balancing families (see [`crate::health`]).
struct HealthFamilies {
    healthy: Family<EndpointLabels, Gauge>,
    ejected: Family<EndpointLabels, Gauge>,
    ejections: Family<EndpointLabels, Counter>,
    check_failures: Family<CheckFailureLabels, Counter>,
    picks: Family<EndpointLabels, Counter>,
    lb_panic: Family<ClusterLabels, Counter>,
}

impl HealthFamilies {
    fn register(registry: &mut Registry) -> Self {
        let families = HealthFamilies {
            healthy: Family::default(),
            ejected: Family::default(),
            ejections: Family::default(),
            check_failures: Family::default(),
            picks: Family::default(),
            lb_panic: Family::default(),
        };
        registry.register(
            "endpoint_healthy",
            "1 if the endpoint passes active health checks (or has none configured), 0 if not",
            families.healthy.clone(),
        );
        registry.register(
            "endpoint_ejected",
            "1 while outlier detection has the endpoint ejected, 0 otherwise",
            families.ejected.clone(),
        );
        registry.register(
            "endpoint_ejections",
            "Times outlier detection ejected the endpoint",
            families.ejections.clone(),
        );
        registry.register(
            "health_check_failures",
            "Failed active health checks, by reason \
             (timeout, connect, status, mismatch, closed, grpc-status, protocol)",
            families.check_failures.clone(),
        );
        registry.register(
            "endpoint_picks",
            "Times the load balancer chose the endpoint for a request or connection",
            families.picks.clone(),
        );
        registry.register(
            "lb_panic",
            "Picks made in panic mode: too few endpoints were healthy, so all of them were used",
            families.lb_panic.clone(),
        );
        families
    }
}

impl Metrics {
    /// The handles one endpoint of `cluster` records into; resolved once when the cluster is
    /// built. Health-check failure counters are left detached (see
    /// [`Metrics::health_check_failures`]), so clusters without checks export no such series.
    pub fn endpoint(&self, cluster: &str, endpoint: std::net::SocketAddr) -> EndpointMetrics {
        let labels = EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_string(),
        };
        let h = &self.health;
        EndpointMetrics {
            healthy: h.healthy.get_or_create_owned(&labels),
            ejected: h.ejected.get_or_create_owned(&labels),
            ejections: h.ejections.get_or_create_owned(&labels),
            picks: h.picks.get_or_create_owned(&labels),
            check_failures: CheckFailureCounters::default(),
        }
    }

    /// `remora_health_check_failures_total` for one endpoint, one counter per reason.
    pub fn health_check_failures(
        &self,
        cluster: &str,
        endpoint: std::net::SocketAddr,
    ) -> CheckFailureCounters {
        let endpoint = endpoint.to_string();
        CheckFailureCounters(crate::health::FailureReason::ALL.map(|reason| {
            self.health
                .check_failures
                .get_or_create_owned(&CheckFailureLabels {
                    cluster: cluster.to_owned(),
                    endpoint: endpoint.clone(),
                    reason: reason.as_str(),
                })
        }))
    }

    /// Drops the per-endpoint series of an endpoint that left its cluster, so that endpoints
    /// coming and going over reloads do not grow the exposition forever.
    pub fn remove_endpoint(&self, cluster: &str, endpoint: std::net::SocketAddr) {
        let labels = EndpointLabels {
            cluster: cluster.to_owned(),
            endpoint: endpoint.to_string(),
        };
        let h = &self.health;
        h.healthy.remove(&labels);
        h.ejected.remove(&labels);
        h.ejections.remove(&labels);
        h.picks.remove(&labels);
        for reason in crate::health::FailureReason::ALL {
            h.check_failures.remove(&CheckFailureLabels {
                cluster: labels.cluster.clone(),
                endpoint: labels.endpoint.clone(),
                reason: reason.as_str(),
            });
        }
    }

    /// `remora_lb_panic_total` for `cluster`.
    pub fn lb_panic(&self, cluster: &str) -> Counter {
        self.health.lb_panic.get_or_create_owned(&ClusterLabels {
            cluster: cluster.to_owned(),
        })
    }
}

/// One endpoint's health and balancing series. `Default` gives detached handles (counting, but
/// exported nowhere), for tests and for endpoints built without a registry.
#[derive(Clone, Debug, Default)]
pub struct EndpointMetrics {
    /// `remora_endpoint_healthy`.
    pub healthy: Gauge,
    /// `remora_endpoint_ejected`.
    pub ejected: Gauge,
    /// `remora_endpoint_ejections_total`.
    pub ejections: Counter,
    /// `remora_endpoint_picks_total`.
    pub picks: Counter,
    /// `remora_health_check_failures_total{reason}`.
    pub check_failures: CheckFailureCounters,
}

/// Health-check failure counters of one endpoint, indexed by [`crate::health::FailureReason`].
#[derive(Clone, Debug, Default)]
pub struct CheckFailureCounters([Counter; crate::health::FailureReason::ALL.len()]);

impl CheckFailureCounters {
    pub fn inc(&self, reason: crate::health::FailureReason) {
        self.0[reason as usize].inc();
    }

    pub fn get(&self, reason: crate::health::FailureReason) -> u64 {
        self.0[reason as usize].get()
    }
}

/// Retries, circuit breakers, faults and rate limits.
struct ResilienceFamilies {
    retries: Family<ClusterLabels, Counter>,
    budget_exhausted: Family<ClusterLabels, Counter>,
    hedges: Family<ClusterLabels, Counter>,
    breaker_used: Family<BreakerLabels, Gauge>,
    breaker_max: Family<BreakerLabels, Gauge>,
    overflows: Family<BreakerLabels, Counter>,
    breaker_state: Family<ClusterLabels, Gauge>,
    faults: Family<FaultLabels, Counter>,
    rate_limited: Family<RouteLabels, Counter>,
    authz_denied: Family<RouteLabels, Counter>,
}

impl ResilienceFamilies {
    fn register(registry: &mut Registry) -> Self {
        let f = ResilienceFamilies {
            retries: Family::default(),
            budget_exhausted: Family::default(),
            hedges: Family::default(),
            breaker_used: Family::default(),
            breaker_max: Family::default(),
            overflows: Family::default(),
            breaker_state: Family::default(),
            faults: Family::default(),
            rate_limited: Family::default(),
            authz_denied: Family::default(),
        };
        registry.register(
            "upstream_retries",
            "Retry attempts sent to a cluster (not counting first attempts)",
            f.retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries not sent because the cluster's retry budget was spent",
            f.budget_exhausted.clone(),
        );
        registry.register(
            "upstream_hedges",
            "Hedged attempts sent to a cluster because the first had not answered in time",
            f.hedges.clone(),
        );
        registry.register(
            "circuit_breaker_used",
            "In use now against each circuit-breaker limit (connections, pending_requests, \
             requests, retries)",
            f.breaker_used.clone(),
        );
        registry.register(
            "circuit_breaker_max",
            "Each circuit-breaker limit as configured",
            f.breaker_max.clone(),
        );
        registry.register(
            "circuit_breaker_overflows",
            "Requests failed fast with 503 because a circuit-breaker limit was reached",
            f.overflows.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "The consecutive-failure breaker: 0 closed, 1 open, 2 half-open",
            f.breaker_state.clone(),
        );
        registry.register(
            "faults_injected",
            "Faults injected by route config or fault headers, by kind (delay, abort)",
            f.faults.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a local rate limit (route \"\" for a listener's own)",
            f.rate_limited.clone(),
        );
        registry.register(
            "authz_denied",
            "Requests refused with 403 and TCP connections closed by an authorization policy \
             (route \"\" for a listener's own rules)",
            f.authz_denied.clone(),
        );
        f
    }
}

/// A cluster's resilience series, resolved when the cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterResilienceMetrics {
    pub retries: Counter,
    pub budget_exhausted: Counter,
    pub hedges: Counter,
    /// (used, max) per limit, in the order of [`crate::breaker::Overflow::ALL`].
    pub limits: [(Gauge, Gauge); 4],
    pub overflows: [Counter; 4],
    pub state: Gauge,
}

impl ClusterResilienceMetrics {
    pub fn overflow(&self, which: crate::breaker::Overflow) {
        let i = crate::breaker::Overflow::ALL
            .iter()
            .position(|&o| o == which)
            .unwrap_or(0);
        self.overflows[i].inc();
    }
}
