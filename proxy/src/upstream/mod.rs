//! Upstream clusters at runtime: endpoints, the balancer that picks among them, connection
//! pools, and sending a request to a chosen endpoint.

pub mod connect;
pub mod pool;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use rand::Rng;
use remora_config::model::{self, UpstreamProtocol};
use tokio::time::Instant;

use crate::balance::{Balancer, EndpointView, PeakEwma, hash_key, in_panic};
use crate::breaker::{FailureBreaker, Limits, Overflow, Permit};
use crate::error::ProxyError;
use crate::health::{ClusterHealth, HealthTasks, InFlight, Outcome};
use crate::metrics::{ClusterMetrics, ClusterResilienceMetrics, Metrics};
use crate::retry::{Budget, RouteRetry};
use pool::Pool;

/// One cluster, built from config. Shared by every worker; pools inside are per worker.
pub struct ClusterRt {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub endpoints: Box<[EndpointRt]>,
    balancer: Balancer,
    /// Endpoint health (active checks, outlier ejections) and load, read on every pick.
    pub health: ClusterHealth,
    /// The health checker and ejection-return tasks, started on the main runtime by
    /// [`ClusterRt::start_health`]; they stop when the cluster is dropped.
    health_tasks: Mutex<Option<HealthTasks>>,
    pub metrics: ClusterMetrics,
    /// Circuit-breaker limits: connections, pending requests, requests, retries.
    pub limits: Limits,
    /// The consecutive-failure breaker, when configured.
    pub breaker: Option<FailureBreaker>,
    /// Caps the load retries add to this cluster.
    pub budget: Budget,
    /// The retry policy of routes that have none of their own.
    pub retry: RouteRetry,
    pub resilience: ClusterResilienceMetrics,
    /// Picks per endpoint, sampled every ten seconds, for the admin page's share of the last
    /// minute.
    pub pick_history: Mutex<PickHistory>,
    /// What this was built from: a reload reuses the cluster (and its pools) when it is equal.
    pub config: model::Cluster,
}

pub struct EndpointRt {
    pub address: SocketAddr,
    pub weight: u32,
    /// One pool per worker thread: a connection's task runs on the worker that opened it, so a
    /// worker only ever reuses its own connections and never wakes another thread. Shared with
    /// the same endpoint of the cluster before a reload, so its idle connections carry over.
    pools: Arc<[Pool]>,
    /// The peak-EWMA latency estimate, when the policy uses it.
    ewma: Option<Mutex<PeakEwma>>,
}

/// An endpoint chosen for a request: the index, its in-flight guard (the request counts as
/// in flight until the guard drops) and any cookie a hashing policy minted for the response.
pub struct Picked {
    pub index: usize,
    pub in_flight: InFlight,
    pub set_cookie: Vec<HeaderValue>,
}

/// What the request brings to the pick: only read by hashing policies.
pub struct PickInput<'a> {
    pub headers: &'a HeaderMap,
    pub uri: &'a Uri,
    pub client_ip: IpAddr,
}

/// A [`ClusterRt`]'s endpoints as the balancer sees them at one instant.
struct View<'a> {
    cluster: &'a ClusterRt,
    now: Instant,
    /// Panic mode: every endpoint counts as eligible.
    panic: bool,
    /// Not eligible whatever its health: the endpoint a retry or hedge must leave.
    avoid: Option<usize>,
}

impl EndpointView for View<'_> {
    fn len(&self) -> usize {
        self.cluster.endpoints.len()
    }

    fn weight(&self, i: usize) -> u32 {
        self.cluster.endpoints[i].weight
    }

    fn eligible(&self, i: usize) -> bool {
        self.avoid != Some(i) && (self.panic || self.cluster.health.eligible(i, self.now))
    }

    fn in_flight(&self, i: usize) -> u32 {
        self.cluster.health.endpoint(i).in_flight() as u32
    }

    fn latency(&self, i: usize) -> f64 {
        match &self.cluster.endpoints[i].ewma {
            // Decayed to now: an endpoint avoided after one slow response gets no samples, and
            // must still drift back into favour.
            Some(e) => e
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .estimate_at(self.now),
            None => 0.0,
        }
    }
}

impl ClusterRt {
    pub fn new(cluster: &model::Cluster, workers: usize, metrics: &Metrics) -> Arc<Self> {
        Self::rebuild(cluster, workers, metrics, None)
    }

    /// Builds the cluster for `cluster`, carrying over from `previous` (the same cluster
    /// before a reload changed it) each remaining endpoint's health, ejection and load state
    /// and its pooled connections.
    pub fn rebuild(
        cluster: &model::Cluster,
        workers: usize,
        metrics: &Metrics,
        previous: Option<&ClusterRt>,
    ) -> Arc<Self> {
        let weights: Vec<u32> = cluster.endpoints.iter().map(|e| e.weight).collect();
        let keys: Vec<String> = cluster
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        let ewma = match &cluster.load_balancer.policy {
            model::LbPolicy::LeastRequest {
                peak_ewma: Some(p), ..
            } => Some(*p),
            _ => None,
        };
        let now = Instant::now();
        let resilience = metrics.cluster_resilience(&cluster.name);
        let breakers = &cluster.circuit_breakers;
        // Permits out on the cluster before the reload stay counted against the new maxima.
        let limits = match previous {
            Some(p) => {
                p.limits.update(breakers);
                p.limits.clone()
            }
            None => Limits::observed(breakers, &resilience.limits),
        };
        let breaker = breakers
            .consecutive_failures
            .map(|c| FailureBreaker::new(c, rand::make_rng()).with_gauge(resilience.state.clone()));
        if breaker.is_none() {
            resilience.state.set(0);
        }
        Arc::new(ClusterRt {
            limits,
            breaker,
            budget: Budget::try_new(cluster.retry_budget, now).unwrap_or_else(|e| {
                tracing::error!(cluster = %cluster.name, error = %e, "retry budget; using defaults");
                Budget::try_new(model::RetryBudget::default(), now).expect("defaults are valid")
            }),
            retry: route_retry(&cluster.retries, &cluster.name),
            resilience,
            name: cluster.name.clone(),
            protocol: cluster.protocol,
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.idle_timeout,
            endpoints: cluster
                .endpoints
                .iter()
                .map(|e| {
                    let old = previous.and_then(|p| {
                        p.endpoints
                            .iter()
                            .find(|o| o.address == e.address && o.pools.len() == workers.max(1))
                    });
                    EndpointRt {
                        address: e.address,
                        weight: e.weight,
                        pools: match old {
                            Some(o) => o.pools.clone(),
                            None => (0..workers.max(1)).map(|_| Pool::default()).collect(),
                        },
                        ewma: ewma.map(|p| Mutex::new(PeakEwma::from_config(&p, now))),
                    }
                })
                .collect(),
            balancer: Balancer::new(&cluster.load_balancer.policy, &weights, &keys),
            health: ClusterHealth::carry_over(cluster, metrics, previous.map(|p| &p.health)),
            health_tasks: Mutex::new(None),
            metrics: metrics.cluster(&cluster.name),
            pick_history: Mutex::new(PickHistory::default()),
            config: cluster.clone(),
        })
    }

    /// Starts the health checker and the ejection-return task on the current runtime (the
    /// main one), once.
    pub fn start_health(&self) {
        let mut tasks = self.health_tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.is_none() {
            *tasks = Some(self.health.spawn());
        }
    }

    /// The endpoint for a request: by the cluster's policy, among the endpoints that are
    /// healthy and not ejected, or among all of them when too few are (panic mode).
    pub fn pick(&self, input: &PickInput<'_>, rng: &mut impl Rng) -> Result<Picked, ProxyError> {
        self.pick_avoiding(input, None, rng)
    }

    /// The endpoint for a retry or a hedge: picked as usual, but not `avoid` (the one that just
    /// failed, or is still working on the first attempt) when another is available. `avoid`
    /// counts as ineligible for this pick, so each policy moves on its own way: round-robin to
    /// its next endpoint, least-request among the others, and a hashing policy to the next
    /// owner on its ring or table (the key's fallback, as when `avoid` is ejected). No cookie
    /// is minted: the first attempt's stands.
    pub fn pick_other(
        &self,
        input: &PickInput<'_>,
        avoid: usize,
        rng: &mut impl Rng,
    ) -> Result<Picked, ProxyError> {
        let mut picked = match self.pick_avoiding(input, Some(avoid), rng) {
            Ok(p) => p,
            Err(_) => self.pick(input, rng)?,
        };
        picked.set_cookie.clear();
        Ok(picked)
    }

    fn pick_avoiding(
        &self,
        input: &PickInput<'_>,
        avoid: Option<usize>,
        rng: &mut impl Rng,
    ) -> Result<Picked, ProxyError> {
        let now = Instant::now();
        let total = self.endpoints.len();
        let eligible = if self.health.all_eligible() {
            total
        } else {
            (0..total).filter(|&i| self.health.eligible(i, now)).count()
        };
        let panic = in_panic(eligible, total, self.config.load_balancer.panic_threshold);
        if panic && avoid.is_none() {
            self.health.lb_panic().inc();
        }
        let mut set_cookie = Vec::new();
        let hash = if self.balancer.uses_hash() {
            let keys = hash_key::hash_keys(&self.config.load_balancer.policy);
            let h = hash_key::request_hash(keys, input.headers, input.uri, input.client_ip, rng);
            set_cookie = h.set_cookie;
            h.hash
        } else {
            None
        };
        let view = View {
            cluster: self,
            now,
            panic,
            avoid,
        };
        let index = self
            .balancer
            .pick(&view, hash, rng)
            .ok_or_else(|| ProxyError::NoEndpoint(self.name.clone()))?;
        let state = self.health.endpoint(index);
        state.record_pick();
        Ok(Picked {
            index,
            in_flight: state.track(),
            set_cookie,
        })
    }

    /// Endpoint `ep`'s peak-EWMA latency estimate in seconds, when the policy keeps one.
    pub fn latency_estimate(&self, ep: usize) -> Option<f64> {
        let ewma = self.endpoints[ep].ewma.as_ref()?;
        Some(
            ewma.lock()
                .unwrap_or_else(|e| e.into_inner())
                .estimate_at(Instant::now()),
        )
    }

    /// What became of a request to endpoint `ep`: feeds outlier detection, and the latency
    /// estimate when the response head arrived after `rtt`.
    pub fn record(&self, ep: usize, outcome: Outcome, rtt: Option<Duration>) {
        if let (Some(rtt), Some(ewma)) = (rtt, &self.endpoints[ep].ewma) {
            ewma.lock()
                .unwrap_or_else(|e| e.into_inner())
                .observe(rtt, Instant::now());
        }
        self.health.record(ep, outcome);
    }

    /// Closes this worker's pooled connections that have been idle past the idle timeout.
    pub fn reap_idle(&self) {
        let worker = crate::worker::current();
        for ep in self.endpoints.iter() {
            if let Some(pool) = ep.pools.get(worker) {
                pool.reap(self.idle_timeout);
            }
        }
    }

    /// A permit from one of the limits, or the 503 it overflowed with (counted).
    pub fn acquire(&self, which: Overflow) -> Result<Permit, ProxyError> {
        self.limits
            .try_acquire(which)
            .map_err(|o| self.overflowed(o))
    }

    pub fn overflowed(&self, which: Overflow) -> ProxyError {
        self.resilience.overflow(which);
        ProxyError::Overflow {
            cluster: self.name.clone(),
            reason: which.reason(),
        }
    }

    /// Every worker's pools for endpoint `ep`: a request waiting at the connection cap may take
    /// an idle connection another worker left.
    pub(crate) fn pools(&self, ep: usize) -> &[Pool] {
        &self.endpoints[ep].pools
    }

    pub(crate) fn pool(&self, ep: usize) -> &Pool {
        let pools = &self.endpoints[ep].pools;
        &pools[crate::worker::current().min(pools.len() - 1)]
    }

    /// Idle pooled connections per endpoint, summed over workers (for the admin page).
    pub fn idle_connections(&self, ep: usize) -> usize {
        self.endpoints[ep].pools.iter().map(Pool::idle_count).sum()
    }
}

/// A retry policy from config, ready for the request path. Validation has checked its
/// backoff; should it still be refused, the defaults serve rather than a panic.
pub fn route_retry(policy: &model::RetryPolicy, owner: &str) -> RouteRetry {
    RouteRetry::try_new(policy.clone()).unwrap_or_else(|e| {
        tracing::error!(%owner, error = %e, "retry policy; using defaults");
        RouteRetry::try_new(model::RetryPolicy::default()).expect("defaults are valid")
    })
}

/// Pick counts per endpoint at the last few ten-second marks, for "share of picks over the last
/// minute" without touching the request path (it only bumps a counter).
#[derive(Debug, Default)]
pub struct PickHistory {
    /// Oldest first; at most [`PickHistory::SAMPLES`].
    samples: std::collections::VecDeque<Vec<u64>>,
}

impl PickHistory {
    /// A minute of ten-second samples, plus the one a minute ago.
    pub const SAMPLES: usize = 7;

    pub fn sample(&mut self, picks: Vec<u64>) {
        if self.samples.len() == Self::SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(picks);
    }

    /// Each endpoint's share of the picks between the oldest sample and `now` (picks so far);
    /// `None` when there were none.
    pub fn shares(&self, now: &[u64]) -> Vec<Option<f64>> {
        let base = self.samples.front();
        let deltas: Vec<u64> = now
            .iter()
            .enumerate()
            .map(|(i, &n)| n.saturating_sub(base.and_then(|b| b.get(i)).copied().unwrap_or(0)))
            .collect();
        let total: u64 = deltas.iter().sum();
        deltas
            .iter()
            .map(|&d| (total > 0).then(|| d as f64 / total as f64))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_shares_cover_the_last_minute_only() {
        let mut h = PickHistory::default();
        for t in 0..10u64 {
            h.sample(vec![t * 10, t * 30]);
        }
        // The oldest sample kept is from 6 samples ago (t = 3): 30 and 90.
        let shares = h.shares(&[100, 300]);
        assert_eq!(shares, vec![Some(0.25), Some(0.75)]);
        assert_eq!(PickHistory::default().shares(&[0, 0]), vec![None, None]);
    }
}
