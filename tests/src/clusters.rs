//! The admin `/clusters` page read back: per cluster, each endpoint's state (healthy, unhealthy,
//! ejected, drained), the last failed health check, the ejection, requests in flight and picks.
//!
//! Get one with [`crate::ProxyProcess::clusters`]; look an endpoint up by the address it was
//! configured with, which is how the page names it.

use std::net::SocketAddr;

use serde_json::Value;

/// One read of `/clusters`.
#[derive(Debug, Clone)]
pub struct Clusters(pub Value);

impl Clusters {
    /// Parses the page. Panics, showing it, if it is not the JSON the proxy writes.
    pub fn parse(text: &str) -> Clusters {
        let doc: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("/clusters is not JSON ({e}): {text}"));
        assert!(doc["clusters"].is_array(), "no clusters array: {text}");
        Clusters(doc)
    }

    /// The cluster called `name`. Panics if there is none.
    pub fn cluster(&self, name: &str) -> &Value {
        self.0["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name} in {:#}", self.0))
    }

    /// Every endpoint of cluster `name`, in config order.
    pub fn endpoints(&self, cluster: &str) -> Vec<EndpointInfo<'_>> {
        self.cluster(cluster)["endpoints"]
            .as_array()
            .unwrap_or_else(|| panic!("cluster {cluster} has no endpoints array"))
            .iter()
            .map(EndpointInfo)
            .collect()
    }

    /// The endpoint of cluster `cluster` at `addr`. Panics if there is none.
    pub fn endpoint(&self, cluster: &str, addr: SocketAddr) -> EndpointInfo<'_> {
        let want = addr.to_string();
        self.endpoints(cluster)
            .into_iter()
            .find(|e| e.0["address"] == want.as_str())
            .unwrap_or_else(|| panic!("no endpoint {want} in cluster {cluster}: {:#}", self.0))
    }
}

/// One endpoint of a [`Clusters`] page. The accessors panic when a field is missing or of the
/// wrong type: the page's shape is part of what the tests check.
#[derive(Debug, Clone, Copy)]
pub struct EndpointInfo<'a>(pub &'a Value);

impl<'a> EndpointInfo<'a> {
    fn u64(&self, v: &Value, what: &str) -> u64 {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what} is not a count: {:#}", self.0))
    }

    /// `healthy`, `unhealthy`, `ejected` or `drained`.
    pub fn state(&self) -> &'a str {
        self.0["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no state: {:#}", self.0))
    }

    pub fn in_flight(&self) -> u64 {
        self.u64(&self.0["in_flight"], "in_flight")
    }

    pub fn picks(&self) -> u64 {
        self.u64(&self.0["picks"], "picks")
    }

    pub fn weight(&self) -> u64 {
        self.u64(&self.0["weight"], "weight")
    }

    /// `health.last_failure.reason`: why the last failed active check failed, if one has.
    pub fn last_failure_reason(&self) -> Option<&'a str> {
        self.0["health"]["last_failure"]["reason"].as_str()
    }

    /// `health.last_failure.detail`.
    pub fn last_failure_detail(&self) -> Option<&'a str> {
        self.0["health"]["last_failure"]["detail"].as_str()
    }

    pub fn ejected(&self) -> bool {
        self.0["outlier"]["ejected"]
            .as_bool()
            .unwrap_or_else(|| panic!("no outlier.ejected: {:#}", self.0))
    }

    /// Milliseconds left of the ejection; `None` when not ejected.
    pub fn remaining_ms(&self) -> Option<u64> {
        self.0["outlier"]["remaining_ms"].as_u64()
    }

    /// Why the last ejection happened (kept after the endpoint returns).
    pub fn ejection_reason(&self) -> Option<&'a str> {
        self.0["outlier"]["reason"].as_str()
    }

    pub fn times_ejected(&self) -> u64 {
        self.u64(&self.0["outlier"]["times_ejected"], "outlier.times_ejected")
    }

    /// The endpoint's share of the cluster's picks over the last minute; `None` (JSON null)
    /// when the cluster had no picks. Panics if the field is missing.
    pub fn picks_share(&self) -> Option<f64> {
        let v = self
            .0
            .get("picks_share_last_minute")
            .unwrap_or_else(|| panic!("no picks_share_last_minute: {:#}", self.0));
        assert!(v.is_null() || v.is_f64(), "share is {v}");
        v.as_f64()
    }

    /// The peak-EWMA latency estimate; `None` when the policy keeps none.
    pub fn ewma_latency_ms(&self) -> Option<f64> {
        self.0["ewma_latency_ms"].as_f64()
    }
}
