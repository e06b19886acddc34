//! `load_balancer:` under a cluster: which endpoint each request goes to.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DurationValue, Field, List, Percent, Toggle};

/// How requests are spread over the cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependencies" = {
    "choice_count": {"properties": {"policy": {"const": "least_request"}}, "required": ["policy"]},
    "peak_ewma": {"properties": {"policy": {"const": "least_request"}}, "required": ["policy"]},
    "minimum_ring_size": {"properties": {"policy": {"const": "ring_hash"}}, "required": ["policy"]},
    "table_size": {"properties": {"policy": {"const": "maglev"}}, "required": ["policy"]},
    "hash_on": {
        "properties": {"policy": {"enum": ["ring_hash", "maglev"]}},
        "required": ["policy"]
    }
}))]
#[schemars(extend("if" = {
    "properties": {"policy": {"enum": ["ring_hash", "maglev"]}},
    "required": ["policy"]
}))]
#[schemars(extend("then" = {"required": ["hash_on"]}))]
pub struct LoadBalancer {
    /// `round_robin` (each endpoint in turn, by weight), `least_request` (the endpoint with
    /// the fewest requests in flight), `ring_hash` or `maglev` (the same key, such as a user's
    /// header or cookie, goes to the same endpoint while the endpoints stay the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Field<LbPolicy>,
    /// least_request: how many endpoints are drawn at random for each request; the least
    /// loaded of them wins. 2 already avoids nearly every overloaded endpoint; more costs more
    /// per request for little gain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice_count: Field<u32>,
    /// least_request: weigh the requests in flight by each endpoint's recent latency (a
    /// peak-sensitive moving average), so slow endpoints get less traffic. `true` uses the
    /// default settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_ewma: Field<Toggle<PeakEwma>>,
    /// ring_hash: points on the hash ring. More points spread keys more evenly over the
    /// endpoints and cost memory and rebuild time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Field<u64>,
    /// maglev: entries in the lookup table; must be prime. Larger tables spread keys more
    /// evenly; keep it well above 100 times the number of endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Field<u64>,
    /// ring_hash and maglev (required there): what to hash, each entry one of `header`,
    /// `cookie`, `source_ip`, `path` or `query_parameter`. The parts a request has are hashed
    /// together in order; a request with none of them goes to a random endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<List<HashKey>>,
    /// Below this share of healthy (and not ejected) endpoints, requests are spread over all
    /// endpoints, healthy or not, rather than piling onto the few that are left. `0%` never
    /// does this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub panic_threshold: Field<Percent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    RingHash,
    Maglev,
}

impl LbPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::RingHash => "ring_hash",
            LbPolicy::Maglev => "maglev",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeakEwma {
    /// How quickly old latency measurements stop counting. Shorter reacts faster to an
    /// endpoint slowing down, and also to noise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Field<DurationValue>,
    /// The latency assumed for an endpoint before it has answered a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_rtt: Field<DurationValue>,
}

/// One thing to hash a request on: exactly one of `header`, `cookie`, `source_ip: true`,
/// `path: true` or `query_parameter`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct HashKey {
    /// The value of this request header (name case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Field<String>,
    /// The value of this cookie; with `ttl`, the proxy sets the cookie on clients that do not
    /// have it yet, so that even a client's first request sticks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Field<HashCookie>,
    /// `true`: the client's IP address (the connection's peer, not a forwarded-for header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Field<bool>,
    /// `true`: the request path, without the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Field<bool>,
    /// The value of this query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_parameter: Field<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("dependencies" = {"path": ["ttl"]}))]
pub struct HashCookie {
    /// The cookie's name.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// Set the cookie, with a random value and this lifetime, on responses to requests that
    /// do not have it. Left out, a request without the cookie gets a random endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Field<DurationValue>,
    /// The `Path` of a cookie the proxy sets (needs `ttl`); left out, the browser's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Field<String>,
}
