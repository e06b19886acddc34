//! The validated config model: what the proxy and control plane build runtime state from.
//!
//! Every value here has passed validation, so code that consumes a [`Config`] never re-checks it:
//! cluster names referenced by routes exist, weights are not all zero, regexes compiled, durations
//! are in range, header names and values are legal HTTP. Defaults are already filled in (they
//! live in [`crate::defaults`]). The YAML surface is [`crate::raw`]; `validate` turns one into the
//! other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use crate::defaults;

/// One proxy's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when the config has no `admin:` section: no admin listener is started.
    pub admin: Option<Admin>,
    pub runtime: Runtime,
    pub access_log: AccessLog,
    pub limits: Limits,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
}

impl Config {
    /// The cluster with this name. Validation guarantees every name a route or listener uses exists.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// The admin listener: health, readiness, metrics and introspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
    /// Serves only `/live`, `/ready` and `/metrics` (see the raw field).
    pub status_address: Option<SocketAddr>,
}

/// How the proxy uses the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Number of worker threads, each a single-threaded runtime with its own accept loop and
    /// upstream pools. Always >= 1.
    pub workers: usize,
    /// On SIGTERM (or `POST /drain`), how long in-flight requests get to finish before the
    /// proxy exits anyway.
    pub drain_timeout: Duration,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            workers: defaults::WORKERS,
            drain_timeout: defaults::DRAIN_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    pub enabled: bool,
    pub target: LogTarget,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: defaults::ACCESS_LOG_ENABLED,
            target: defaults::ACCESS_LOG_TARGET,
        }
    }
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// Limits applied to every downstream connection and request, on every HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total size of the request line plus headers (HTTP/1.1), or of the header list (HTTP/2).
    /// Past it the request is refused with 431.
    pub max_request_header_bytes: usize,
    /// Number of request headers. Past it: 431.
    pub max_request_headers: usize,
    /// Length of the request target (path and query). Past it: 414.
    pub max_uri_bytes: usize,
    /// Request body size; `None` is unlimited. Past it: 413.
    pub max_request_body_bytes: Option<u64>,
    /// Time a client has to send a complete request head (slowloris defence).
    pub header_read_timeout: Duration,
    /// A downstream connection with no request in flight and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Longest wait for the next bytes of a request body once it has started; past it the
    /// request fails (408 if no response was sent yet) and the connection is closed.
    pub request_body_timeout: Duration,
    /// HTTP/2: streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: defaults::MAX_REQUEST_HEADER_BYTES,
            max_request_headers: defaults::MAX_REQUEST_HEADERS,
            max_uri_bytes: defaults::MAX_URI_BYTES,
            max_request_body_bytes: defaults::MAX_REQUEST_BODY_BYTES,
            request_body_timeout: defaults::REQUEST_BODY_TIMEOUT,
            max_concurrent_streams: defaults::MAX_CONCURRENT_STREAMS,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic arriving for the local workload.
    Inbound,
    /// Traffic the local workload sends to other services.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    /// Unique among listeners; used in metrics labels and logs.
    pub name: String,
    /// Port 0 asks the OS for a free port (tests use this).
    pub address: SocketAddr,
    pub direction: Direction,
    pub kind: ListenerKind,
    /// A token bucket over every request (HTTP) or connection (TCP) the listener takes.
    pub rate_limit: Option<RateLimit>,
    pub mtls: MtlsMode,
    pub authorization: Option<Authorization>,
    /// Redirected connections go to their original destination (see the raw field).
    pub transparent: bool,
    /// Connections to these ports are opaque TCP (see the raw field). Sorted, no duplicates.
    pub opaque_ports: Vec<u16>,
    /// Redirected connections for other ports go to that port of the cluster's host (see the
    /// raw field).
    pub follow_original_port: bool,
    /// How a transparent listener's connections to destinations outside the mesh go on.
    pub passthrough: Passthrough,
}

/// How a transparent listener passes on what is not for the mesh (see the raw field).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Passthrough {
    /// As bytes.
    #[default]
    Tcp,
    /// HTTP request by request, to a cluster made from this one (named `passthrough`, every
    /// setting a default, no endpoints) with the original destination as its endpoint;
    /// anything else as bytes.
    Http(Box<Cluster>),
}

/// Who may call what: a request matching a deny rule is refused; otherwise, when there are
/// allow rules, it must match one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub rules: Vec<AuthzRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzRule {
    pub allow: bool,
    /// Empty: any caller. Otherwise one of them must match.
    pub identities: Vec<IdentityPattern>,
    /// Matches callers without a verified identity.
    pub unauthenticated: bool,
    /// Empty: any path. Otherwise one must match (case-insensitively).
    pub paths: Vec<PathPattern>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    /// Empty: any port. Otherwise the connection's (original) destination port is one.
    pub ports: Vec<u16>,
}

impl AuthzRule {
    /// Whether the rule says anything about the caller (else it applies to every caller).
    pub fn has_from(&self) -> bool {
        !self.identities.is_empty() || self.unauthenticated
    }

    /// Whether it says anything about the request (such a rule never matches opaque TCP).
    pub fn has_to(&self) -> bool {
        !self.paths.is_empty() || !self.methods.is_empty()
    }

    /// Whether it applies to a connection for `port` (`None`: not known, which only a rule
    /// without ports matches).
    pub fn covers_port(&self, port: Option<u16>) -> bool {
        self.ports.is_empty() || port.is_some_and(|p| self.ports.contains(&p))
    }
}

/// A SPIFFE ID, or a prefix of one on whole segments (`spiffe://td/ns/shop/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityPattern {
    Exact(String),
    /// Stored without the `*`, ending with `/`.
    Prefix(String),
}

impl IdentityPattern {
    pub fn matches(&self, id: &str) -> bool {
        match self {
            IdentityPattern::Exact(e) => e == id,
            IdentityPattern::Prefix(p) => id.len() > p.len() && id.starts_with(p.as_str()),
        }
    }
}

/// A path, lowercase; or a prefix on whole segments (`/admin/*`, stored as `/admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
    Any,
}

impl PathPattern {
    /// `path` is normalized; compared ignoring ASCII case.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(e) => path.eq_ignore_ascii_case(e),
            PathPattern::Prefix(p) => {
                path.len() >= p.len()
                    && path.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    && (path.len() == p.len()
                        || path.as_bytes()[p.len()] == b'/'
                        || p.ends_with('/'))
            }
        }
    }
}

/// Mutual TLS on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtlsMode {
    /// TLS with a client certificate only; plaintext connections are closed.
    Strict,
    /// TLS (told by its first byte) or plaintext.
    Permissive,
    /// Plaintext only (TLS bytes are just bytes: forwarded as opaque TCP on `auto`).
    #[default]
    Disabled,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Strict => "strict",
            MtlsMode::Permissive => "permissive",
            MtlsMode::Disabled => "disabled",
        }
    }
}

/// Mutual TLS to a cluster: the identity its endpoints must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMtls {
    pub identity: crate::identity::SpiffeId,
}

#[derive(Debug, Clone)]
pub enum ListenerKind {
    /// HTTP/1.1 and h2c prior knowledge on the same port, routed by `routes`.
    Http { routes: Vec<Route> },
    /// Opaque TCP: bytes are forwarded to an endpoint of `cluster`.
    Tcp { cluster: String },
    /// Protocol detection: the first bytes decide. HTTP/1.x and the HTTP/2 preface are served
    /// as on an `Http` listener; anything else (TLS included, until the proxy terminates TLS),
    /// or silence for `detect_timeout` (server-speaks-first protocols such as MySQL or SMTP),
    /// is forwarded as opaque TCP to `cluster`, or closed when there is none.
    Auto {
        routes: Vec<Route>,
        cluster: Option<String>,
        detect_timeout: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Unique within its listener; used in metrics labels and the access log.
    pub name: String,
    pub matches: RouteMatch,
    /// Weighted traffic split. Never empty; at least one weight is positive.
    pub backends: Vec<Backend>,
    /// Time from the start of the request until the upstream's response headers arrive.
    pub timeout: Duration,
    pub request_headers: HeaderRewrite,
    pub response_headers: HeaderRewrite,
    /// The route's retry policy; `None` takes the chosen backend cluster's `retries`.
    pub retries: Option<RetryPolicy>,
    pub fault: Option<Fault>,
    pub rate_limit: Option<RateLimit>,
    pub authorization: Option<Authorization>,
}

/// When and how a failed attempt is tried again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    pub retry_on: Vec<RetryOn>,
    /// For `RetryOn::RetriableStatusCodes`.
    pub retriable_status_codes: Vec<u16>,
    /// A single attempt's limit until response headers; the route `timeout` covers all of them.
    pub per_try_timeout: Option<Duration>,
    /// Exponential backoff with full jitter: attempt n waits uniformly in
    /// [0, min(max_interval, base_interval * 2^n)].
    pub base_interval: Duration,
    pub max_interval: Duration,
    /// A `Retry-After` or `grpc-retry-pushback-ms` from the upstream replaces the backoff, up
    /// to this.
    pub max_retry_after: Duration,
    /// A request body is kept for replay up to this many bytes; a longer one is never retried.
    pub buffer_limit: u64,
    /// Retry non-idempotent methods (POST, PATCH...) on more than connect-failure and
    /// refused-stream (where nothing was sent).
    pub retry_non_idempotent: bool,
    /// Send a second attempt to another endpoint when the first has not answered in this long
    /// (idempotent requests only); the first response wins.
    pub hedge_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: defaults::MAX_ATTEMPTS,
            retry_on: defaults::RETRY_ON.to_vec(),
            retriable_status_codes: Vec::new(),
            per_try_timeout: defaults::PER_TRY_TIMEOUT,
            base_interval: defaults::BACKOFF_BASE_INTERVAL,
            max_interval: defaults::BACKOFF_MAX_INTERVAL,
            max_retry_after: defaults::MAX_RETRY_AFTER,
            buffer_limit: defaults::RETRY_BUFFER_LIMIT,
            retry_non_idempotent: defaults::RETRY_NON_IDEMPOTENT,
            hedge_after: defaults::HEDGE_AFTER,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The connection could not be made: nothing was sent.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// Any 5xx response, and gateway errors.
    FiveXx,
    /// 502, 503, 504 and connect failures, resets, timeouts.
    GatewayError,
    /// The statuses in `retriable_status_codes`.
    RetriableStatusCodes,
    /// gRPC statuses (from trailers-only responses or headers).
    Cancelled,
    DeadlineExceeded,
    ResourceExhausted,
    Unavailable,
}

impl RetryOn {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryOn::ConnectFailure => "connect-failure",
            RetryOn::RefusedStream => "refused-stream",
            RetryOn::Reset => "reset",
            RetryOn::FiveXx => "5xx",
            RetryOn::GatewayError => "gateway-error",
            RetryOn::RetriableStatusCodes => "retriable-status-codes",
            RetryOn::Cancelled => "cancelled",
            RetryOn::DeadlineExceeded => "deadline-exceeded",
            RetryOn::ResourceExhausted => "resource-exhausted",
            RetryOn::Unavailable => "unavailable",
        }
    }
}

/// Retries may add at most `ratio` of the requests plus `min_per_second`, counted over
/// `window` (Linkerd's retry budget).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: defaults::RETRY_BUDGET_RATIO,
            min_per_second: defaults::RETRY_BUDGET_MIN_PER_SECOND,
            window: defaults::RETRY_BUDGET_WINDOW,
        }
    }
}

/// Per-cluster limits past which requests fail fast with 503 `overflow-<which>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// The consecutive-failure breaker; `None` when off.
    pub consecutive_failures: Option<FailureBreaker>,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: defaults::MAX_CONNECTIONS,
            max_pending_requests: defaults::MAX_PENDING_REQUESTS,
            max_requests: defaults::MAX_REQUESTS,
            max_retries: defaults::MAX_RETRIES,
            consecutive_failures: defaults::CONSECUTIVE_FAILURES_ENABLED
                .then(FailureBreaker::default),
        }
    }
}

/// Opens after `threshold` consecutive failed requests to the cluster; after a jittered
/// backoff (from `base_open` doubling up to `max_open`) one trial request is let through
/// (half-open): success closes the breaker, failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureBreaker {
    pub threshold: u32,
    pub base_open: Duration,
    pub max_open: Duration,
}

impl Default for FailureBreaker {
    fn default() -> Self {
        FailureBreaker {
            threshold: defaults::BREAKER_THRESHOLD,
            base_open: defaults::BREAKER_BASE_OPEN,
            max_open: defaults::BREAKER_MAX_OPEN,
        }
    }
}

/// Fault injection on a route, for testing failure on purpose.
#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Only requests matching all of these get faults (empty: all requests).
    pub headers: Vec<HeaderMatch>,
    /// The fault switches itself off after this moment (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
    /// Honour `x-remora-fault-delay-ms` and `x-remora-fault-abort` request headers.
    pub header_triggered: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultDelay {
    /// A fixed delay when `min == max`, else uniform in [min, max].
    pub min: Duration,
    pub max: Duration,
    /// Share of requests (0.0..=1.0).
    pub percent: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultAbort {
    pub http_status: u16,
    /// For gRPC requests, a trailers-only response with this status instead (when set).
    pub grpc_status: Option<u32>,
    pub percent: f64,
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub rate: f64,
    pub burst: u32,
}

/// All present conditions must hold. An empty match (the default) matches every request.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Empty means any host. Otherwise the request's host must match one of them.
    pub hosts: Vec<HostMatch>,
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
}

/// Host patterns are lowercase, without a port; the request's host is compared the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches any host ending with it, with at least
    /// one more character before it.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The path (without the query) equals this.
    Exact(String),
    /// The path starts with this on a segment boundary: `/api` matches `/api`, `/api/` and
    /// `/api/v1`, never `/apiary`. A prefix that ends with `/` is a plain string prefix.
    Prefix(String),
    /// The whole path matches this regex (it is anchored at both ends).
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: HeaderValueMatch,
}

#[derive(Debug, Clone)]
pub enum HeaderValueMatch {
    Exact(HeaderValue),
    /// Anchored at both ends; compared against the value as text.
    Regex(Regex),
    /// The header is present, with any value.
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub cluster: String,
    pub weight: u32,
}

/// Header changes applied in this order: remove, then set (replace), then add (append).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRewrite {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderRewrite {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive; one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (h2c); requests are multiplexed on one connection.
    Http2,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Unique among clusters; routes and TCP listeners refer to it.
    pub name: String,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    /// An idle pooled upstream connection is closed after this long.
    pub idle_timeout: Duration,
    /// Where the endpoints come from.
    pub discovery: Discovery,
    /// May be empty (requests then get 503 `no-endpoint`); when not, at least one weight is
    /// positive. Always empty in a config with [`Discovery::Dns`]: the proxy fills in what DNS
    /// answers in the copy it builds its runtime cluster from.
    pub endpoints: Vec<Endpoint>,
    pub load_balancer: LoadBalancer,
    /// Active health checking; `None` when not configured (every endpoint counts as healthy
    /// unless outlier detection ejects it).
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of failing endpoints; `None` when turned off.
    pub outlier_detection: Option<OutlierDetection>,
    /// Retry policy for routes to this cluster that set none.
    pub retries: RetryPolicy,
    pub retry_budget: RetryBudget,
    pub circuit_breakers: CircuitBreakers,
    /// `None`: plaintext to the endpoints.
    pub mtls: Option<ClusterMtls>,
}

/// How a cluster picks an endpoint for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadBalancer {
    pub policy: LbPolicy,
    /// When fewer than this share of endpoints (0.0..=1.0) are healthy and not ejected, balance
    /// over all of them instead of overloading the few (Envoy's panic mode).
    pub panic_threshold: f64,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            policy: defaults::LB_POLICY,
            panic_threshold: defaults::PANIC_THRESHOLD,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LbPolicy {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Fewest requests in flight (weighted). With `choice_count` below the number of endpoints,
    /// that many are drawn at random and the least loaded of them wins (power of two choices
    /// at 2). With `peak_ewma`, load is in-flight requests times a peak-sensitive moving
    /// average of latency.
    LeastRequest {
        choice_count: u32,
        peak_ewma: Option<PeakEwma>,
    },
    /// Consistent hashing on a ring with at least `minimum_ring_size` points.
    RingHash {
        minimum_ring_size: u64,
        hash_on: Vec<HashKey>,
    },
    /// Consistent hashing with a Maglev lookup table of `table_size` entries (a prime).
    Maglev {
        table_size: u64,
        hash_on: Vec<HashKey>,
    },
}

impl LbPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest { .. } => "least_request",
            LbPolicy::RingHash { .. } => "ring_hash",
            LbPolicy::Maglev { .. } => "maglev",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// How fast the average forgets: the time constant of the exponential decay.
    pub decay: Duration,
    /// The latency assumed for an endpoint with no measurements yet.
    pub default_rtt: Duration,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            decay: defaults::PEAK_EWMA_DECAY,
            default_rtt: defaults::PEAK_EWMA_DEFAULT_RTT,
        }
    }
}

/// One part of a consistent-hashing key. The parts present in a request are hashed together,
/// in order; a request with none of them gets a random endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    /// A cookie; with a `ttl`, the proxy mints one (random value) when the request has none
    /// and sets it on the response, so a client sticks from its first request.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    SourceIp,
    Path,
    QueryParameter(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    /// Each interval is stretched or shrunk by a random share up to this (0.0..=1.0), so
    /// proxies started together do not check in lockstep.
    pub jitter: f64,
    pub timeout: Duration,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// What an endpoint is before its first check.
    pub initially_healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// `GET path` answered with a status in one of the inclusive `statuses` ranges.
    Http {
        path: String,
        host: Option<String>,
        statuses: Vec<(u16, u16)>,
    },
    /// A TCP connect; then, if `send` is set, those bytes are written, and if `expect` is set,
    /// the reply must start with those bytes.
    Tcp {
        send: Option<Vec<u8>>,
        expect: Option<Vec<u8>>,
    },
    /// `grpc.health.v1.Health/Check` for `service` ("" is the server as a whole) must say
    /// SERVING.
    Grpc { service: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject an endpoint.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect failure, reset, timeout) that eject an endpoint.
    pub consecutive_gateway_failure: u32,
    /// An ejection lasts this times the number of times the endpoint has been ejected...
    pub base_ejection_time: Duration,
    /// ...up to this.
    pub max_ejection_time: Duration,
    /// At most this share of a cluster's endpoints (0.0..=1.0) is ejected at once; at least one
    /// endpoint may always be ejected.
    pub max_ejection_percent: f64,
    /// An ejected endpoint returns only after its time is up and an active health check has
    /// passed (needs `health_check`).
    pub require_health_check_to_return: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: defaults::CONSECUTIVE_5XX,
            consecutive_gateway_failure: defaults::CONSECUTIVE_GATEWAY_FAILURE,
            base_ejection_time: defaults::BASE_EJECTION_TIME,
            max_ejection_time: defaults::MAX_EJECTION_TIME,
            max_ejection_percent: defaults::MAX_EJECTION_PERCENT,
            require_health_check_to_return: defaults::REQUIRE_HEALTH_CHECK_TO_RETURN,
        }
    }
}

/// Where a cluster's endpoints come from (`type:`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Discovery {
    /// Listed in the file.
    #[default]
    Static,
    /// Resolved from DNS.
    Dns(DnsDiscovery),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// The name to resolve; not empty.
    pub name: String,
    pub record: DnsRecord,
    /// Floor on the wait before resolving again; at most `max_ttl`.
    pub min_ttl: Duration,
    /// Ceiling on the wait before resolving again.
    pub max_ttl: Duration,
    /// Nameservers to ask instead of the system's (/etc/resolv.conf); empty: the system's.
    pub servers: Vec<SocketAddr>,
}

/// Which records are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsRecord {
    /// A and AAAA: every address on `port` (not 0), weight 1.
    Ip { port: u16 },
    /// SRV: each record's target addresses, port and weight.
    Srv,
}

impl DnsRecord {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsRecord::Ip { .. } => "a",
            DnsRecord::Srv => "srv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
}
