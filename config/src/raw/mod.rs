//! The YAML surface: what users write, exactly as written, with positions.
//!
//! These types decide the file format (field names, nesting, which fields exist) and, through
//! schemars, the JSON Schema editors use; their doc comments are the schema's descriptions, so
//! they are written for the people editing config files. Nothing here is checked beyond its
//! syntax: `validate` turns these into [`crate::model`] types and reports what is wrong.
//! Every field is optional here, even required ones, so that a missing field is reported by
//! validation alongside everything else instead of discarding its whole section. Defaults are
//! not written here either: they live in [`crate::defaults`], and the schema gets them from
//! there.

mod authz;
mod balance;
mod discovery;
mod fault;
mod health;
mod item;
mod mesh;
mod retry;
mod values;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use authz::{Authorization, AuthzAction, AuthzFrom, AuthzRule, AuthzTo};
pub use balance::{HashCookie, HashKey, LbPolicy, LoadBalancer, PeakEwma};
pub use discovery::{ClusterType, DnsDiscovery, DnsRecordType};
pub use fault::{Fault, FaultAbort, FaultDelay, RateLimit};
pub use health::{
    GrpcHealthCheck, HealthCheck, HttpHealthCheck, InitialState, OutlierDetection, TcpHealthCheck,
};
pub(crate) use item::ITEM_MARKER;
pub use item::{Item, Pos};
pub use mesh::{MeshFile, Service};
pub use retry::{Backoff, CircuitBreakers, FailureBreaker, RetryBudget, RetryOn, RetryPolicy};
pub use values::{
    ByteSize, DurationValue, HeaderAppends, HeaderMap, HeaderValues, OneOrMany, Percent, Rate,
    SizeLimit, StatusRange, Timestamp, Toggle,
};
pub(crate) use values::{ONE_OR_MANY_MARKER, TOGGLE_MARKER};

/// An optional field: absent, or an [`Item`] (which may itself be invalid).
pub type Field<T> = Option<Item<T>>;

/// A list whose elements are checked one by one, so one bad element does not hide the others.
pub type List<T> = Item<Vec<Item<T>>>;

/// Configuration of one Remora proxy.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Remora proxy configuration")]
pub struct Config {
    /// The admin listener (health, readiness, metrics, config dump). Leave it out to run
    /// without one. Keep it on a loopback address: it is not authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Field<Admin>,
    /// How the proxy uses the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Field<Runtime>,
    /// One line per request: where they go and whether to write them at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Field<AccessLog>,
    /// Limits on every downstream request, on every HTTP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Field<Limits>,
    /// The addresses the proxy accepts connections on, and what it does with them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listeners: Option<List<Listener>>,
    /// Named groups of upstream endpoints that routes and TCP listeners send traffic to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<List<Cluster>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// IP:port for the admin endpoints, e.g. `127.0.0.1:9901`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Field<String>,
    /// IP:port for a second listener serving only `GET /live`, `/ready` and `/metrics`: what
    /// the kubelet's probes and Prometheus need from outside the pod, while the rest of the
    /// admin endpoints (the config, `POST /drain`) stay on `address`, on loopback. Left out:
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_address: Field<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads, each with its own accept loop and upstream connection pools. Raise it
    /// for heavy traffic; a sidecar shares its node with the application it serves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Field<usize>,
    /// On SIGTERM (or `POST /drain` on the admin listener), how long requests in flight get
    /// to finish before the proxy exits anyway. Keep it at or below the pod's
    /// `terminationGracePeriodSeconds`. `0s` exits at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout: Field<DurationValue>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Write a line per request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Field<bool>,
    /// `stdout` (where container runtimes collect logs), `stderr`, or a file path (relative
    /// to the proxy's working directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Field<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Request line plus headers (HTTP/1.1) or header list (HTTP/2); past it: 431.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_header_bytes: Field<ByteSize>,
    /// Number of request headers; past it: 431.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_headers: Field<usize>,
    /// Length of the request target (path and query); past it: 414.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_uri_bytes: Field<ByteSize>,
    /// Request body size, or `unlimited`; past it: 413. Bodies are streamed, never buffered
    /// whole, so a limit is a policy choice, not a protection for the proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_bytes: Field<SizeLimit>,
    /// Time a client has to send a whole request head (slowloris defence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Field<DurationValue>,
    /// A client connection with no request in flight is closed after this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Field<DurationValue>,
    /// Longest silence from a client in the middle of sending a request body; past it the
    /// request fails (408 if no response was sent yet) and the connection is closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_timeout: Field<DurationValue>,
    /// HTTP/2: requests one client connection may have in flight at once. Clients wait for a
    /// free stream before sending more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Field<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("if" = {"properties": {"protocol": {"const": "tcp"}}, "required": ["protocol"]}))]
#[schemars(extend("then" = {"required": ["cluster"]}))]
#[schemars(extend("else" = {"required": ["routes"]}))]
#[schemars(extend("dependencies" = {
    "detect_timeout": {"properties": {"protocol": {"const": "auto"}}, "required": ["protocol"]}
}))]
pub struct Listener {
    /// Unique among listeners; appears in metrics and logs. Left out, it is the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// IP:port to listen on, e.g. `127.0.0.1:15006`. Port 0 picks a free port.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Field<String>,
    /// `http` (requests routed by `routes`), `tcp` (bytes forwarded to `cluster`), or `auto`
    /// (the first bytes decide: HTTP is routed by `routes`, anything else is forwarded to
    /// `cluster`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Field<ListenerProtocol>,
    /// `inbound` (traffic for the local workload) or `outbound` (traffic the workload sends).
    /// Appears in metrics and logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Field<Direction>,
    /// HTTP and auto listeners: the routes, most specific match first (see the route
    /// precedence in examples/routing.yaml). At least one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<List<Route>>,
    /// TCP listeners: the cluster every connection is forwarded to. Auto listeners: where
    /// connections that are not HTTP go; left out, they are closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Field<String>,
    /// Auto listeners: how long to wait for the client's first bytes. A client that stays
    /// silent this long is taken to be waiting for a server-speaks-first protocol (MySQL,
    /// SMTP) and is forwarded to `cluster`, so those clients wait this long on every
    /// connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect_timeout: Field<DurationValue>,
    /// Limit what the listener takes: requests on an http listener, connections on tcp and
    /// auto listeners. Left out: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Field<RateLimit>,
    /// Mutual TLS on this listener, with the workload certificate the control plane issues:
    /// `strict` (TLS with a client certificate only; plaintext is refused), `permissive`
    /// (TLS or plaintext, told apart by the first byte), or `disabled`. Left out: `disabled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Field<MtlsMode>,
    /// Who may call what on this listener, checked before routing. Left out: everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Field<Authorization>,
    /// Connections redirected here by iptables (`remora-proxy init-iptables`) go where they
    /// were headed: to a destination one of the routes' clusters has as an endpoint, through
    /// that route (when no route matches by host); anywhere else, passed through unchanged as
    /// TCP. Left out: `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transparent: Field<bool>,
    /// Ports whose connections are opaque TCP: forwarded without protocol detection or HTTP
    /// routing (databases, server-speaks-first protocols, anything that only looks like
    /// HTTP). The port is the connection's original destination port when iptables
    /// redirected it, else the listener's own. On an `auto` listener they go to `cluster`;
    /// on a `transparent` listener, to the cluster that has the destination as an endpoint
    /// (with its mTLS), or through unchanged. Left out: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque_ports: Option<List<u32>>,
    /// Tcp and auto listeners whose `cluster` is the local workload (a sidecar's inbound
    /// listener): a connection iptables redirected here from another port than the cluster's
    /// endpoint's goes to that port on the endpoint's host, as opaque TCP after mTLS and the
    /// listener's authorization (which, with rules about paths or callers, must admit the
    /// connection as a whole). So every port of a pod works, not only the one in the config.
    /// Left out: `false` (everything goes to the cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow_original_port: Field<bool>,
    /// Transparent listeners: how a connection to a destination outside the mesh goes on to
    /// it. `tcp`: as bytes, untouched. `http`: the first bytes decide (as on an `auto`
    /// listener): HTTP is proxied request by request to the original address, with the
    /// proxy's headers, timeouts, metrics (route and cluster `passthrough`) and access log;
    /// anything else (TLS to an outside service, say) goes as bytes. Left out: `tcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passthrough: Field<Passthrough>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Passthrough {
    Tcp,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    Strict,
    Permissive,
    Disabled,
}

/// Mutual TLS to a cluster's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterMtls {
    /// The SPIFFE ID every endpoint must prove, e.g.
    /// `spiffe://cluster.local/ns/shop/sa/orders`. A peer with any other identity is refused.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Field<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    Http,
    Tcp,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["cluster"]}, {"required": ["backends"]}]))]
pub struct Route {
    /// Unique within the listener; appears in metrics and the access log. Left out, it is
    /// `route-<index>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// Which requests take this route. Every condition given must hold; no conditions match all.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Field<RouteMatch>,
    /// Send every matching request to this cluster. Shorthand for one backend of weight 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Field<String>,
    /// Split matching requests between clusters in proportion to their weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backends: Option<List<Backend>>,
    /// Time from the start of the request until the upstream's response headers; then 504.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Field<DurationValue>,
    /// Changes to the request before it is sent upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_headers: Field<HeaderRewrite>,
    /// Changes to the response before it is returned to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_headers: Field<HeaderRewrite>,
    /// How failed requests on this route are retried. Left out: the `retries` of the
    /// cluster each request goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Field<RetryPolicy>,
    /// Delays and errors injected on purpose, for testing. Left out: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Field<Fault>,
    /// Limit the requests this route takes, on top of any listener limit. Left out: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Field<RateLimit>,
    /// Who may call this route, on top of the listener's rules. Left out: everyone the
    /// listener lets through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Field<Authorization>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host patterns (case-insensitive, no port): `api.local` exactly, `*.api.local` for any
    /// subdomain, `*` for any host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<List<String>>,
    /// The request path (without the query).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Field<PathMatch>,
    /// The request method, e.g. `GET` (written in any case; compared in upper case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Field<String>,
    /// Request headers that must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<List<HeaderMatch>>,
}

/// Exactly one of `exact`, `prefix` or `regex`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct PathMatch {
    /// The path equals this, e.g. `/healthz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Field<String>,
    /// The path starts with this on a segment boundary: `/api` matches `/api` and `/api/v1`
    /// but not `/apiary`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Field<String>,
    /// The whole path matches this regular expression (Rust regex syntax; anchored at both ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Field<String>,
}

/// A header condition: `name`, and exactly one of `exact`, `regex` or `present: true`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["exact"]}, {"required": ["regex"]}, {"required": ["present"]}]))]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// The header's value equals this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Field<String>,
    /// The header's whole value matches this regular expression (anchored at both ends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Field<String>,
    /// `true`: the header is present, with any value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Field<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// The cluster that receives this share of the traffic.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Field<String>,
    /// Relative share of the requests; 0 takes no traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Field<u32>,
}

/// Header changes, applied in order: `remove`, then `set` (replace), then `add` (append).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRewrite {
    /// Header names to delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remove: Option<List<String>>,
    /// Headers to set, replacing any existing values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Field<HeaderValues>,
    /// Headers to append, keeping any existing values: a value, or a list of values to add
    /// several (`set-cookie: [a=1, b=2]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Field<HeaderAppends>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique among clusters; routes and TCP listeners refer to it.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// What the endpoints speak: `http1`, or `http2` (h2c with prior knowledge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Field<UpstreamProtocol>,
    /// Time allowed to connect to an endpoint before the request fails with 502.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Field<DurationValue>,
    /// Pooled connections unused for this long are closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Field<DurationValue>,
    /// Where the endpoints come from: `static` (`endpoints`) or `dns` (`dns`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Field<ClusterType>,
    /// The endpoints, with `type: static`. May be empty: requests then get 503.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<List<Endpoint>>,
    /// The name to resolve for the endpoints, with `type: dns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Field<DnsDiscovery>,
    /// How requests are spread over the endpoints. Left out: `round_robin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Field<LoadBalancer>,
    /// Probe the endpoints and send requests only to those that pass. Left out, every
    /// endpoint counts as healthy unless outlier detection ejects it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Field<HealthCheck>,
    /// Take endpoints that fail real requests out of service for a while. On by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Field<OutlierDetection>,
    /// How failed requests to this cluster are retried, for routes without `retries` of
    /// their own. Left out: connect failures and refused streams are retried once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Field<RetryPolicy>,
    /// The most retries may add to the cluster's load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Field<RetryBudget>,
    /// Limits past which requests to the cluster fail at once instead of queueing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breakers: Field<CircuitBreakers>,
    /// Connect to the endpoints with mutual TLS, presenting the workload certificate and
    /// requiring this identity. Left out: plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Field<ClusterMtls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// IP:port of the endpoint, e.g. `10.0.0.7:8080` (for a name, use `type: dns`).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Field<String>,
    /// Relative share of the requests; 0 takes no traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Field<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outside the config loader (JSON here) the wrappers read as plain values, without
    /// positions, so the raw types stay usable as ordinary serde types.
    #[test]
    fn raw_types_read_from_other_formats() {
        let json = r#"{
            "listeners": [{"address": "127.0.0.1:1", "routes": [{"cluster": "a",
                "response_headers": {"add": {"x": ["1", "2"]}}}]}],
            "clusters": [{"name": "a", "connect_timeout": "1s"},
                {"name": "b", "load_balancer": {"policy": "least_request", "peak_ewma": true}},
                {"name": "c", "load_balancer": {"peak_ewma": {"decay": "5s"}}}]
        }"#;
        let config: Config = serde_json::from_str(json).unwrap();
        let listeners = config.listeners.unwrap();
        let listener = listeners.get().unwrap()[0].get().unwrap();
        assert_eq!(listener.address.as_ref().unwrap().pos, Pos::UNKNOWN);
        assert_eq!(
            listener.address.as_ref().unwrap().get().unwrap(),
            "127.0.0.1:1"
        );
        let clusters = config.clusters.unwrap();
        let cluster = clusters.get().unwrap()[0].get().unwrap();
        let timeout = cluster.connect_timeout.as_ref().unwrap().get().unwrap();
        assert_eq!(timeout.0, std::time::Duration::from_secs(1));
        // On/off-or-settings switches read either way.
        let peak_ewma = |i: usize| {
            let cluster = clusters.get().unwrap()[i].get().unwrap();
            let lb = cluster.load_balancer.as_ref().unwrap().get().unwrap();
            lb.peak_ewma.as_ref().unwrap().get().unwrap().clone()
        };
        assert_eq!(peak_ewma(1), Toggle::Flag(true));
        let Toggle::Settings(settings) = peak_ewma(2) else {
            panic!("settings expected")
        };
        let decay = settings.decay.as_ref().unwrap().get().unwrap();
        assert_eq!(decay.0, std::time::Duration::from_secs(5));
    }
}
