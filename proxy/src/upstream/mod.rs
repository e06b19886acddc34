//! Upstream clusters at runtime: endpoints, the balancer that picks among them, connection
//! pools, and sending a request to a chosen endpoint.

pub mod connect;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_config::model::{self, UpstreamProtocol};

use crate::balance::RoundRobin;
use crate::error::ProxyError;
use crate::metrics::{ClusterMetrics, Metrics};
use pool::Pool;

/// One cluster, built from config. Shared by every worker; pools inside are per worker.
pub struct ClusterRt {
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub endpoints: Box<[EndpointRt]>,
    balancer: RoundRobin,
    pub metrics: ClusterMetrics,
    /// What this was built from: a reload reuses the cluster (and its pools) when it is equal.
    pub config: model::Cluster,
}

pub struct EndpointRt {
    pub address: SocketAddr,
    pub weight: u32,
    /// One pool per worker thread: a connection's task runs on the worker that opened it, so a
    /// worker only ever reuses its own connections and never wakes another thread.
    pools: Box<[Pool]>,
}

impl ClusterRt {
    pub fn new(cluster: &model::Cluster, workers: usize, metrics: &Metrics) -> Arc<Self> {
        let weights: Vec<u32> = cluster.endpoints.iter().map(|e| e.weight).collect();
        Arc::new(ClusterRt {
            name: cluster.name.clone(),
            protocol: cluster.protocol,
            connect_timeout: cluster.connect_timeout,
            idle_timeout: cluster.idle_timeout,
            endpoints: cluster
                .endpoints
                .iter()
                .map(|e| EndpointRt {
                    address: e.address,
                    weight: e.weight,
                    pools: (0..workers.max(1)).map(|_| Pool::default()).collect(),
                })
                .collect(),
            balancer: RoundRobin::new(&weights),
            metrics: metrics.cluster(&cluster.name),
            config: cluster.clone(),
        })
    }

    /// The endpoint for the next request, by weighted round-robin.
    pub fn pick(&self) -> Result<usize, ProxyError> {
        self.balancer
            .pick()
            .ok_or_else(|| ProxyError::NoEndpoint(self.name.clone()))
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

    pub(crate) fn pool(&self, ep: usize) -> &Pool {
        let pools = &self.endpoints[ep].pools;
        &pools[crate::worker::current().min(pools.len() - 1)]
    }

    /// Idle pooled connections per endpoint, summed over workers (for the admin page).
    pub fn idle_connections(&self, ep: usize) -> usize {
        self.endpoints[ep].pools.iter().map(Pool::idle_count).sum()
    }
}
