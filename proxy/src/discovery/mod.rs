//! Endpoints from DNS: one task per `type: dns` cluster resolves its name, again at the TTL,
//! and sends every new answer to the main loop ([`crate::server`]), which rebuilds that
//! cluster's runtime with the answer and swaps it in like a config reload: new requests use the
//! new endpoints, requests in flight finish on the cluster they started with, and endpoints
//! that stay keep their health, ejections and pooled connections.
//!
//! A failed resolution changes nothing: the last good answer stays in use, the failure is
//! counted, and the task tries again sooner, backing off ([`schedule`]).

pub mod dns;
pub mod schedule;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use remora_config::model::{Config, Discovery, DnsDiscovery, Endpoint};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// `/ready` waits this long at most for every dns cluster's first answer, as Envoy waits for
/// its clusters to warm: long enough for a cluster DNS that is merely slow, short enough that a
/// DNS outage at start does not keep a pod out of its Service for long. Past it, the proxy is
/// ready and such a cluster answers 503 `no-endpoint` until DNS does.
pub const WARMUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A new answer for a cluster, sent to the main loop.
#[derive(Debug)]
pub struct Discovered {
    pub cluster: String,
    /// What was resolved: an answer for a cluster whose `dns:` has since changed is stale.
    pub dns: DnsDiscovery,
    pub endpoints: Vec<Endpoint>,
}

/// The last good answer of each dns cluster, by name, with the `dns:` it answers: a reload
/// keeps a cluster's endpoints while its `dns:` is unchanged.
#[derive(Debug, Default)]
pub struct Resolved(HashMap<String, (DnsDiscovery, Vec<Endpoint>)>);

impl Resolved {
    /// The endpoints to build `cluster` with, for a dns cluster that has had an answer.
    pub fn endpoints(&self, cluster: &str, dns: &DnsDiscovery) -> Option<&[Endpoint]> {
        match self.0.get(cluster) {
            Some((d, endpoints)) if d == dns => Some(endpoints),
            _ => None,
        }
    }

    /// Records `found`; false if it is stale or changes nothing.
    pub fn update(&mut self, config: &Config, found: Discovered) -> bool {
        let current = config.cluster(&found.cluster).map(|c| &c.discovery);
        if current != Some(&Discovery::Dns(found.dns.clone())) {
            return false;
        }
        if self.endpoints(&found.cluster, &found.dns) == Some(&found.endpoints[..]) {
            return false;
        }
        self.0.insert(found.cluster, (found.dns, found.endpoints));
        true
    }

    /// Forgets answers for clusters that are gone or resolve something else now.
    pub fn retain(&mut self, config: &Config) {
        self.0.retain(|name, (dns, _)| {
            config
                .cluster(name)
                .is_some_and(|c| c.discovery == Discovery::Dns(dns.clone()))
        });
    }
}

/// What a dns cluster's resolution looks like now, for `/clusters`.
#[derive(Debug, Clone, Default)]
pub struct DnsState {
    pub endpoints: usize,
    pub last_success: Option<Instant>,
    pub last_error: Option<String>,
    pub failures_in_a_row: u32,
    pub next_resolution: Option<Instant>,
}

/// Every dns cluster's [`DnsState`], by name.
pub type Status = Arc<Mutex<HashMap<String, DnsState>>>;

/// The running resolution tasks, one per dns cluster.
pub struct Tasks {
    running: HashMap<String, (DnsDiscovery, JoinHandle<()>)>,
    found: mpsc::UnboundedSender<Discovered>,
    metrics: Arc<Metrics>,
    status: Status,
}

impl Tasks {
    pub fn new(
        found: mpsc::UnboundedSender<Discovered>,
        metrics: Arc<Metrics>,
        status: Status,
    ) -> Self {
        Tasks {
            running: HashMap::new(),
            found,
            metrics,
            status,
        }
    }

    /// Runs a task for each dns cluster of `config` (on the current runtime): keeps those whose
    /// `dns:` is unchanged, stops the others, starts the new ones.
    pub fn reconcile(&mut self, config: &Config) {
        let wanted: HashMap<&str, &DnsDiscovery> = config
            .clusters
            .iter()
            .filter_map(|c| match &c.discovery {
                Discovery::Dns(dns) => Some((c.name.as_str(), dns)),
                Discovery::Static => None,
            })
            .collect();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        self.running.retain(|name, (dns, task)| {
            let keep = wanted.get(name.as_str()) == Some(&&*dns);
            if !keep {
                task.abort();
                status.remove(name);
                if !wanted.contains_key(name.as_str()) {
                    self.metrics.remove_dns(name);
                }
            }
            keep
        });
        for (name, dns) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            status.insert(name.to_owned(), DnsState::default());
            let task = tokio::spawn(run(
                name.to_owned(),
                dns.clone(),
                self.found.clone(),
                self.metrics.dns(name),
                self.status.clone(),
            ));
            self.running.insert(name.to_owned(), (dns.clone(), task));
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// A dns cluster's series: resolutions by result, and the endpoints in use.
#[derive(Clone, Debug, Default)]
pub struct DnsMetrics {
    pub successes: Counter,
    pub failures: Counter,
    pub endpoints: Gauge,
}

/// Resolves `dns` for `cluster` until aborted: at the answer's TTL after a success, sooner and
/// backing off after a failure.
async fn run(
    cluster: String,
    dns: DnsDiscovery,
    found: mpsc::UnboundedSender<Discovered>,
    metrics: DnsMetrics,
    status: Status,
) {
    let resolver = dns::resolver(&dns);
    let mut rng: rand::rngs::SmallRng = rand::make_rng();
    let mut failures = 0u32;
    let mut last: Option<Vec<Endpoint>> = None;
    loop {
        let result = match &resolver {
            Ok(resolver) => dns::resolve(resolver, &dns).await,
            Err(e) => Err(dns::DnsError::Setup(e.to_string())),
        };
        let now = Instant::now();
        let wait = match result {
            Ok(answer) => {
                failures = 0;
                metrics.successes.inc();
                metrics.endpoints.set(answer.endpoints.len() as i64);
                if last.as_ref() != Some(&answer.endpoints) {
                    tracing::info!(%cluster, name = %dns.name, endpoints = ?answer.endpoints.iter().map(|e| e.address).collect::<Vec<_>>(), "dns answer");
                    last = Some(answer.endpoints.clone());
                    let _ = found.send(Discovered {
                        cluster: cluster.clone(),
                        dns: dns.clone(),
                        endpoints: answer.endpoints.clone(),
                    });
                }
                let wait = schedule::refresh_in(answer.ttl, dns.min_ttl, dns.max_ttl);
                update(&status, &cluster, |s| {
                    s.endpoints = answer.endpoints.len();
                    s.last_success = Some(now);
                    s.failures_in_a_row = 0;
                    s.next_resolution = Some(now + wait);
                });
                wait
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics.failures.inc();
                let kept = last.as_ref().map_or(0, Vec::len);
                tracing::warn!(%cluster, name = %dns.name, error = %e, failures, kept, "dns resolution failed; keeping the last good answer");
                let wait = schedule::retry_in(failures, dns.min_ttl, dns.max_ttl, &mut rng);
                update(&status, &cluster, |s| {
                    s.last_error = Some(e.to_string());
                    s.failures_in_a_row = failures;
                    s.next_resolution = Some(now + wait);
                });
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn update(status: &Status, cluster: &str, f: impl FnOnce(&mut DnsState)) {
    let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = status.get_mut(cluster) {
        f(state);
    }
}
