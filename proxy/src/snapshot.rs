//! Runtime objects built from one validated config: route tables, clusters with their balancers
//! and pools, and the metric handles each needs.
//!
//! A snapshot is immutable once built. Each listener's part ([`ListenerRt`]) is published
//! through its [`ListenerHandle`]; a request takes the listener's current runtime when it starts
//! and keeps it (and through it the routes and clusters) to the end, so a reload never changes
//! a request in flight.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use remora_config::model::{
    Cluster, Config, Direction, Discovery, Fault, HeaderRewrite, Limits, ListenerKind, RateLimit,
    Route,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::balance::WeightedSplit;
use crate::discovery::Resolved;
use crate::error::ProxyError;
use crate::metrics::{ListenerMetrics, Metrics, StatusCounters};
use crate::ratelimit::RateLimiter;
use crate::retry::RouteRetry;
use crate::route::RouteTable;
use crate::upstream::{ClusterRt, route_retry};

pub struct Snapshot {
    pub config: Arc<Config>,
    /// In the order of `config.listeners`.
    pub listeners: Vec<Arc<ListenerRt>>,
    pub clusters: Vec<Arc<ClusterRt>>,
}

/// One listener as configured now. Connections read it through their [`ListenerHandle`].
pub struct ListenerRt {
    pub name: String,
    pub direction: Direction,
    pub kind: ListenerRtKind,
    pub metrics: ListenerMetrics,
    /// The config's limits, copied here so a request needs nothing but its listener.
    pub limits: Limits,
    /// hyper's connection builder, configured from `limits`.
    pub builder: Arc<crate::http::Builder>,
    /// The listener's own rate limit: per request on HTTP, per connection on opaque TCP.
    pub rate_limit: Option<RateLimitRt>,
    /// Mutual TLS on accepted connections (see [`crate::tls::inbound`]).
    pub mtls: remora_config::model::MtlsMode,
    /// The listener's own authorization rules, checked before routing.
    pub authz: Option<crate::authz::AuthzRt>,
    /// Request paths are normalized (and forwarded normalized) before anything matches them:
    /// whenever the listener or one of its routes has authorization rules.
    pub normalize_paths: bool,
    /// Redirected connections go to their original destination (see [`ListenerRt::route_to`]).
    pub transparent: bool,
    /// Transparent listeners: for each endpoint of the routes' clusters, the first route (in
    /// config order) that sends to it.
    pub by_destination: HashMap<std::net::SocketAddr, Arc<RouteRt>>,
    /// Transparent listeners: for each host of an endpoint of the routes' mTLS clusters (a
    /// meshed pod), that cluster. A captured call to another port of such a host still goes
    /// over mTLS, as bytes (see [`crate::tcp::To::Address`]).
    pub mesh_hosts: HashMap<std::net::IpAddr, Arc<ClusterRt>>,
    /// Connections to these ports (the original destination's, when redirected) are opaque
    /// TCP. Sorted.
    pub opaque_ports: Vec<u16>,
    /// Redirected connections for another port than the cluster endpoint's go to that port
    /// of its host (see [`ListenerRt::other_port`]).
    pub follow_original_port: bool,
    /// Transparent listeners with `passthrough: http`: HTTP to destinations outside the mesh
    /// is proxied to them through routes made on demand.
    pub passthrough: Option<PassthroughRt>,
}

/// How many original destinations a listener keeps a passthrough route (and its pooled
/// connections) for; past it, all are dropped and made again as needed.
const PASSTHROUGH_DESTINATIONS: usize = 1024;

/// HTTP passed through to destinations outside the mesh: one route per original destination,
/// to a cluster with that one endpoint, all named `passthrough` in metrics.
pub struct PassthroughRt {
    /// Every setting of those clusters but the endpoint.
    template: Cluster,
    workers: usize,
    requests: StatusCounters,
    latency: Histogram,
    routes: std::sync::Mutex<HashMap<std::net::SocketAddr, Arc<RouteRt>>>,
}

impl PassthroughRt {
    /// The route to `dst`, made the first time.
    pub fn route(&self, dst: std::net::SocketAddr, metrics: &Metrics) -> Arc<RouteRt> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(route) = routes.get(&dst) {
            return route.clone();
        }
        if routes.len() >= PASSTHROUGH_DESTINATIONS {
            for old in routes.keys() {
                metrics.remove_endpoint(&self.template.name, *old);
            }
            routes.clear();
        }
        let mut cluster = self.template.clone();
        cluster.endpoints = vec![remora_config::model::Endpoint {
            address: dst,
            weight: 1,
        }];
        let route = Arc::new(RouteRt {
            name: self.template.name.clone(),
            split: WeightedSplit::new(&[1]),
            backends: Box::new([BackendRt {
                cluster: ClusterRt::new(&cluster, self.workers, metrics),
                requests: self.requests.clone(),
            }]),
            timeout: remora_config::defaults::ROUTE_TIMEOUT,
            request_headers: HeaderRewrite::default(),
            response_headers: HeaderRewrite::default(),
            latency: self.latency.clone(),
            retry: None,
            fault: None,
            rate_limit: None,
            authz: None,
        });
        routes.insert(dst, route.clone());
        route
    }

    /// Closes the idle pooled connections of every destination (see [`ClusterRt::reap_idle`]).
    pub fn reap_idle(&self) {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        for route in routes.values() {
            for backend in route.backends.iter() {
                backend.cluster.reap_idle();
            }
        }
    }
}

impl ListenerRt {
    /// For a connection redirected here that was headed for `port`: where it goes instead of
    /// the listener's cluster, when the listener follows original ports and `port` is not the
    /// cluster's (first) endpoint's. The endpoint's host, at `port`.
    pub fn other_port(&self, port: u16) -> Option<std::net::SocketAddr> {
        if !self.follow_original_port {
            return None;
        }
        let local = self.opaque_cluster()?.endpoints.first()?.address;
        (local.port() != port).then(|| std::net::SocketAddr::new(local.ip(), port))
    }

    /// Whether a connection to `port` is forwarded as opaque TCP.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.opaque_ports.binary_search(&port).is_ok()
    }

    /// Where an opaque connection that was not headed for a mesh destination goes: the
    /// listener's cluster (a tcp listener's, or an auto listener's fallback).
    pub fn opaque_cluster(&self) -> Option<&Arc<ClusterRt>> {
        match &self.kind {
            ListenerRtKind::Tcp(c)
            | ListenerRtKind::Auto {
                fallback: Some(c), ..
            } => Some(c),
            _ => None,
        }
    }

    /// The cluster with `dst` among its endpoints (through the route for `dst`), and the
    /// endpoint's index: where an opaque connection captured on its way to `dst` goes.
    pub fn endpoint_of(&self, dst: std::net::SocketAddr) -> Option<(Arc<ClusterRt>, usize)> {
        let route = self.by_destination.get(&dst)?;
        route.backends.iter().find_map(|b| {
            let i = b.cluster.endpoints.iter().position(|e| e.address == dst)?;
            Some((b.cluster.clone(), i))
        })
    }

    /// The route for a request that no route matched by its host, sent to `dst` before
    /// iptables redirected it here.
    pub fn route_to(&self, dst: std::net::SocketAddr) -> Option<&Arc<RouteRt>> {
        self.by_destination.get(&dst)
    }
}

/// A token bucket and the counter of what it refused.
pub struct RateLimitRt {
    bucket: RateLimiter,
    refused: Counter,
}

impl RateLimitRt {
    fn new(config: &RateLimit, refused: Counter, owner: &str) -> Option<Self> {
        match RateLimiter::try_new(*config, Instant::now()) {
            Ok(bucket) => Some(RateLimitRt { bucket, refused }),
            // Validation refuses these; should one get through, no limit beats a panic.
            Err(e) => {
                tracing::error!(%owner, error = %e, "rate limit ignored");
                None
            }
        }
    }

    /// A token, or 429 with how long until there is one (counted).
    pub fn check(&self, now: Instant) -> Result<(), ProxyError> {
        self.bucket.try_take(now).map_err(|wait| {
            self.refused.inc();
            ProxyError::RateLimited(wait)
        })
    }
}

/// A route's fault injection and its counters.
pub struct FaultRt {
    pub config: Fault,
    pub delays: Counter,
    pub aborts: Counter,
}

pub enum ListenerRtKind {
    Http(RouteTable<RouteRt>),
    Tcp(Arc<ClusterRt>),
    /// Protocol detection: HTTP goes to `routes`, anything else to `fallback` (or is closed).
    Auto {
        routes: RouteTable<RouteRt>,
        fallback: Option<Arc<ClusterRt>>,
        detect_timeout: Duration,
    },
}

impl ListenerRtKind {
    /// The route table, for listeners that serve HTTP.
    pub fn routes(&self) -> Option<&RouteTable<RouteRt>> {
        match self {
            ListenerRtKind::Http(t) | ListenerRtKind::Auto { routes: t, .. } => Some(t),
            ListenerRtKind::Tcp(_) => None,
        }
    }
}

/// A listener's identity across reloads: the socket and its accept loops stay, the runtime
/// behind it is swapped.
pub struct ListenerHandle {
    pub name: String,
    current: ArcSwap<ListenerRt>,
    /// Set to true when the listener is removed (or its address changes): its accept loops end.
    stop: watch::Sender<bool>,
    /// When a reload turns an HTTP listener into a TCP one, the last HTTP runtime, so requests
    /// still arriving on connections accepted as HTTP are served rather than failed...
    last_http: ArcSwapOption<ListenerRt>,
    /// ...while those connections are asked to close after their current request.
    close_http: watch::Sender<bool>,
}

impl ListenerHandle {
    pub fn new(rt: Arc<ListenerRt>) -> Arc<Self> {
        Arc::new(ListenerHandle {
            name: rt.name.clone(),
            current: ArcSwap::new(rt),
            stop: watch::channel(false).0,
            last_http: ArcSwapOption::empty(),
            close_http: watch::channel(false).0,
        })
    }

    pub fn load(&self) -> Arc<ListenerRt> {
        self.current.load_full()
    }

    /// The runtime an HTTP connection on this listener uses: the current one, or the last
    /// HTTP one if a reload has since made the listener opaque TCP.
    pub fn load_http(&self) -> Arc<ListenerRt> {
        let rt = self.load();
        if rt.kind.routes().is_none()
            && let Some(last) = self.last_http.load_full()
        {
            return last;
        }
        rt
    }

    /// Swaps in a new runtime. If it stops serving HTTP, HTTP connections are told to close.
    pub fn store(&self, rt: Arc<ListenerRt>) {
        let old = self.current.swap(rt.clone());
        if rt.kind.routes().is_some() {
            self.last_http.store(None);
            self.close_http.send_replace(false);
        } else if old.kind.routes().is_some() {
            self.last_http.store(Some(old));
            self.close_http.send_replace(true);
        }
    }

    /// Becomes true when HTTP connections on this listener should close after their request.
    pub fn http_closing(&self) -> watch::Receiver<bool> {
        self.close_http.subscribe()
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
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
    /// The route's own retry policy; `None` uses the cluster's.
    pub retry: Option<RouteRetry>,
    pub fault: Option<FaultRt>,
    pub rate_limit: Option<RateLimitRt>,
    pub authz: Option<crate::authz::AuthzRt>,
}

pub struct BackendRt {
    pub cluster: Arc<ClusterRt>,
    /// `remora_requests_total` for this route and cluster, one counter per status class.
    pub requests: StatusCounters,
}

impl Snapshot {
    /// Builds the runtime for `config`. Clusters whose config did not change since `previous`
    /// are reused as they are, pooled connections and round-robin position included, so a
    /// reload that touches routes does not reconnect to every upstream; a changed cluster keeps
    /// its remaining endpoints' health, ejections and pooled connections.
    ///
    /// A dns cluster is built with its last answer in `resolved` (none yet: no endpoints), so
    /// a new answer is applied by building again from the same config.
    pub fn build(
        config: Arc<Config>,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
        resolved: &Resolved,
    ) -> Snapshot {
        let workers = config.runtime.workers;
        let reusable: HashMap<&str, &Arc<ClusterRt>> = previous
            .map(|p| p.clusters.iter().map(|c| (c.name.as_str(), c)).collect())
            .unwrap_or_default();
        let clusters: Vec<Arc<ClusterRt>> = config
            .clusters
            .iter()
            .map(|c| {
                let c = with_endpoints(c, resolved);
                match reusable.get(c.name.as_str()) {
                    Some(old) if old.config == *c => Arc::clone(old),
                    // Changed: rebuilt, keeping what its remaining endpoints already know.
                    Some(old) => ClusterRt::rebuild(&c, workers, metrics, Some(old)),
                    None => ClusterRt::new(&c, workers, metrics),
                }
            })
            .collect();
        let by_name: HashMap<&str, &Arc<ClusterRt>> =
            clusters.iter().map(|c| (c.name.as_str(), c)).collect();
        // A cluster the config dropped takes its endpoints' series off /metrics.
        for old in previous.iter().flat_map(|p| p.clusters.iter()) {
            if !by_name.contains_key(old.name.as_str()) {
                for e in old.endpoints.iter() {
                    metrics.remove_endpoint(&old.name, e.address);
                }
            }
        }
        // Validation guarantees that every referenced cluster exists.
        let cluster = |name: &str| -> Arc<ClusterRt> { Arc::clone(by_name[name]) };
        let builder = Arc::new(crate::http::builder(&config.limits));
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let direction = l.direction.as_str();
                let table =
                    |routes: &[Route]| route_table(routes, &l.name, direction, metrics, &cluster);
                let kind = match &l.kind {
                    ListenerKind::Tcp { cluster: c } => ListenerRtKind::Tcp(cluster(c)),
                    ListenerKind::Http { routes } => ListenerRtKind::Http(table(routes)),
                    ListenerKind::Auto {
                        routes,
                        cluster: fallback,
                        detect_timeout,
                    } => ListenerRtKind::Auto {
                        routes: table(routes),
                        fallback: fallback.as_deref().map(&cluster),
                        detect_timeout: *detect_timeout,
                    },
                };
                let mut by_destination = HashMap::new();
                let mut mesh_hosts = HashMap::new();
                if l.transparent
                    && let ListenerRtKind::Http(t) | ListenerRtKind::Auto { routes: t, .. } = &kind
                {
                    for route in t.in_config_order() {
                        for backend in route.backends.iter() {
                            let mtls = backend.cluster.config.mtls.is_some();
                            for e in backend.cluster.endpoints.iter() {
                                by_destination
                                    .entry(e.address)
                                    .or_insert_with(|| route.clone());
                                if mtls {
                                    mesh_hosts
                                        .entry(e.address.ip())
                                        .or_insert_with(|| backend.cluster.clone());
                                }
                            }
                        }
                    }
                }
                Arc::new(ListenerRt {
                    name: l.name.clone(),
                    direction: l.direction,
                    transparent: l.transparent,
                    by_destination,
                    mesh_hosts,
                    opaque_ports: l.opaque_ports.clone(),
                    follow_original_port: l.follow_original_port,
                    passthrough: match &l.passthrough {
                        remora_config::model::Passthrough::Tcp => None,
                        remora_config::model::Passthrough::Http(template) => {
                            let name = &template.name;
                            Some(PassthroughRt {
                                template: (**template).clone(),
                                workers,
                                requests: metrics.status_counters(&l.name, direction, name, name),
                                latency: metrics.route_latency(&l.name, name),
                                routes: Default::default(),
                            })
                        }
                    },
                    kind,
                    metrics: metrics.listener(&l.name, direction),
                    limits: config.limits.clone(),
                    builder: builder.clone(),
                    rate_limit: l.rate_limit.as_ref().and_then(|r| {
                        RateLimitRt::new(r, metrics.rate_limited(&l.name, ""), &l.name)
                    }),
                    mtls: l.mtls,
                    authz: l.authorization.as_ref().map(|a| crate::authz::AuthzRt {
                        rules: a.clone(),
                        denied: metrics.authz_denied(&l.name, ""),
                    }),
                    normalize_paths: l.authorization.is_some()
                        || match &l.kind {
                            ListenerKind::Http { routes } | ListenerKind::Auto { routes, .. } => {
                                routes.iter().any(|r| r.authorization.is_some())
                            }
                            ListenerKind::Tcp { .. } => false,
                        },
                })
            })
            .collect();
        Snapshot {
            config,
            listeners,
            clusters,
        }
    }
}

/// The cluster as its runtime is built: a dns cluster with the endpoints DNS last gave.
fn with_endpoints<'c>(cluster: &'c Cluster, resolved: &Resolved) -> Cow<'c, Cluster> {
    match &cluster.discovery {
        Discovery::Static => Cow::Borrowed(cluster),
        Discovery::Dns(dns) => {
            let mut c = cluster.clone();
            c.endpoints = resolved
                .endpoints(&cluster.name, dns)
                .unwrap_or_default()
                .to_vec();
            Cow::Owned(c)
        }
    }
}

fn route_table(
    routes: &[Route],
    listener: &str,
    direction: &'static str,
    metrics: &Metrics,
    cluster: &dyn Fn(&str) -> Arc<ClusterRt>,
) -> RouteTable<RouteRt> {
    RouteTable::new(routes.iter().map(|r| {
        let backends = r
            .backends
            .iter()
            .map(|b| BackendRt {
                cluster: cluster(&b.cluster),
                requests: metrics.status_counters(listener, direction, &r.name, &b.cluster),
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
            latency: metrics.route_latency(listener, &r.name),
            retry: r.retries.as_ref().map(|p| route_retry(p, &r.name)),
            fault: r.fault.as_ref().map(|f| {
                let (delays, aborts) = metrics.faults(listener, &r.name);
                FaultRt {
                    config: f.clone(),
                    delays,
                    aborts,
                }
            }),
            rate_limit: r.rate_limit.as_ref().and_then(|l| {
                RateLimitRt::new(l, metrics.rate_limited(listener, &r.name), &r.name)
            }),
            authz: r.authorization.as_ref().map(|a| crate::authz::AuthzRt {
                rules: a.clone(),
                denied: metrics.authz_denied(listener, &r.name),
            }),
        };
        (r.matches.clone(), Arc::new(rt))
    }))
}
