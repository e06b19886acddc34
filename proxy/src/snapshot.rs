//! Runtime objects built from one validated config: route tables, clusters with their balancers
//! and pools, and the metric handles each needs.
//!
//! A snapshot is immutable once built and is published whole through an `ArcSwap`; a request
//! takes the current one when it starts and keeps it to the end, so a later config never changes
//! a request in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;
use remora_config::model::{Config, Direction, HeaderRewrite, ListenerKind};

use crate::balance::WeightedSplit;
use crate::metrics::{ListenerMetrics, Metrics, StatusCounters};
use crate::route::RouteTable;
use crate::upstream::ClusterRt;

pub struct Snapshot {
    pub config: Arc<Config>,
    /// In the order of `config.listeners`; accept loops refer to them by index.
    pub listeners: Vec<ListenerRt>,
    pub clusters: Vec<Arc<ClusterRt>>,
}

pub struct ListenerRt {
    pub name: String,
    pub direction: Direction,
    pub kind: ListenerRtKind,
    pub metrics: ListenerMetrics,
}

pub enum ListenerRtKind {
    Http(RouteTable<RouteRt>),
    Tcp(Arc<ClusterRt>),
}

pub struct RouteRt {
    pub name: String,
    pub split: WeightedSplit,
    pub backends: Box<[BackendRt]>,
    pub timeout: Duration,
    pub request_headers: HeaderRewrite,
    pub response_headers: HeaderRewrite,
    /// `remora_request_duration_seconds` for this route.
    pub latency: Histogram,
}

pub struct BackendRt {
    pub cluster: Arc<ClusterRt>,
    /// `remora_requests_total` for this route and cluster, one counter per status class.
    pub requests: StatusCounters,
}

impl Snapshot {
    pub fn build(config: Arc<Config>, metrics: &Metrics) -> Snapshot {
        let workers = config.runtime.workers;
        let clusters: Vec<Arc<ClusterRt>> = config
            .clusters
            .iter()
            .map(|c| ClusterRt::new(c, workers, metrics))
            .collect();
        let by_name: HashMap<&str, &Arc<ClusterRt>> =
            clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        let cluster = |name: &str| -> Arc<ClusterRt> {
            // Validation guarantees that every referenced cluster exists.
            Arc::clone(by_name[name])
        };
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let direction = l.direction.as_str();
                let kind = match &l.kind {
                    ListenerKind::Tcp { cluster: c } => ListenerRtKind::Tcp(cluster(c)),
                    ListenerKind::Http { routes } => {
                        ListenerRtKind::Http(RouteTable::new(routes.iter().map(|r| {
                            let backends = r
                                .backends
                                .iter()
                                .map(|b| BackendRt {
                                    cluster: cluster(&b.cluster),
                                    requests: metrics
                                        .status_counters(&l.name, direction, &r.name, &b.cluster),
                                })
                                .collect();
                            let weights: Vec<u32> = r.backends.iter().map(|b| b.weight).collect();
                            let rt = RouteRt {
                                name: r.name.clone(),
                                split: WeightedSplit::new(&weights),
                                backends,
                                timeout: r.timeout,
                                request_headers: r.request_headers.clone(),
                                response_headers: r.response_headers.clone(),
                                latency: metrics.route_latency(&l.name, &r.name),
                            };
                            (r.matches.clone(), Arc::new(rt))
                        })))
                    }
                };
                ListenerRt {
                    name: l.name.clone(),
                    direction: l.direction,
                    kind,
                    metrics: metrics.listener(&l.name, direction),
                }
            })
            .collect();
        Snapshot {
            config,
            listeners,
            clusters,
        }
    }
}
