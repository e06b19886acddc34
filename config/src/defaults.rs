//! Every default in the config, in one place, each with the reason it is that value.
//!
//! `validate` fills these in; `remora-proxy --print-config` and the admin `/config` page show them
//! explicitly, so what a user sees is what runs.

use std::time::Duration;

use crate::model::{Direction, LbPolicy, LogTarget, RetryOn, UpstreamProtocol};
use crate::raw::{ClusterType, DnsRecordType, ListenerProtocol};

/// One worker thread. A sidecar shares its node with the application it serves; one core already
/// proxies tens of thousands of requests per second (see the benchmark in the README), and a
/// single-threaded runtime per core is the fastest shape for that core. Raise it for heavy traffic.
pub const WORKERS: usize = 1;

/// 30 s to drain, as Kubernetes' default `terminationGracePeriodSeconds`: the kubelet kills the
/// pod after that anyway, so in-flight requests get as long as the pod is given and no longer.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Access logging is on: the first thing a user running the proxy locally wants is to see traffic.
pub const ACCESS_LOG_ENABLED: bool = true;

/// Access log lines go to standard output, where container runtimes collect them.
pub const ACCESS_LOG_TARGET: LogTarget = LogTarget::Stdout;

/// 60 KiB of request line and headers, as Envoy's `max_request_headers_kb`. Large enough for
/// big cookies and JWTs, small enough that a client cannot make us buffer megabytes of head.
pub const MAX_REQUEST_HEADER_BYTES: usize = 60 * 1024;

/// 100 headers, as Envoy's `max_headers_count`. Real requests carry a few dozen at most.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// 8 KiB request target: RFC 9112 section 3 recommends accepting at least 8000 octets, and
/// nginx's default line buffer is the same 8 KiB.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// No body limit: bodies are streamed, never buffered whole, so size alone costs the proxy
/// nothing. Set one as a policy for applications that cannot take large uploads.
pub const MAX_REQUEST_BODY_BYTES: Option<u64> = None;

/// 10 s to send a request head. Any real client sends it in milliseconds; a slowloris client
/// holding connections open with a byte at a time is cut off.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// 1 h, as Envoy. Clients keep idle pooled connections for 90 s (Go, hyper) to 5 min (OkHttp); a
/// server that closes first races with the client reusing the connection and fails requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// 60 s between body bytes. A legitimate upload moves bytes every few milliseconds; a client
/// silent for a minute mid-body is gone or hostile, and holds a connection and an upstream
/// request open while it waits.
pub const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// 100 streams per HTTP/2 connection: the minimum RFC 9113 section 6.5.2 recommends, and the
/// common value in Envoy and Go. It bounds what one connection costs in memory, and how much one
/// misbehaving client can have in flight at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Listeners serve HTTP unless told otherwise: it is what almost every service speaks.
pub const LISTENER_PROTOCOL: ListenerProtocol = ListenerProtocol::Http;

/// A standalone proxy usually sits in front of a local service, which is the inbound direction.
pub const LISTENER_DIRECTION: Direction = Direction::Inbound;

/// 1 s for an `auto` listener's client to speak. Linkerd waits 10 s, and users of
/// server-speaks-first protocols (MySQL, SMTP) wait those 10 s on every connection; a client
/// that speaks first sends within milliseconds, so 1 s is ample.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// 15 s until response headers, as Envoy's route timeout: long enough for slow requests, short
/// enough that a hung upstream does not hold the caller forever.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A backend or endpoint without a weight takes an equal share.
pub const WEIGHT: u32 = 1;

/// Upstreams speak HTTP/1.1 unless the cluster says http2: every server does.
pub const UPSTREAM_PROTOCOL: UpstreamProtocol = UpstreamProtocol::Http1;

/// Endpoints are listed in the file unless the cluster says `type: dns`: that is what every
/// config written before DNS discovery meant.
pub const CLUSTER_TYPE: ClusterType = ClusterType::Static;

/// `record: a`: A and AAAA records, which is what a Kubernetes headless Service answers for its
/// name; SRV needs a named port and a longer name.
pub const DNS_RECORD: DnsRecordType = DnsRecordType::A;

/// Resolve again at most every 5 s whatever the TTL, Envoy's `dns_min_refresh_rate`: CoreDNS
/// answers for Kubernetes Services with a 5 s TTL, and a TTL of 0 must not become a query per
/// request.
pub const DNS_MIN_TTL: Duration = Duration::from_secs(5);

/// Resolve again at least every 60 s whatever the TTL: pods come and go in seconds, and an
/// answer kept for an hour-long TTL would keep sending to gone ones (outlier detection would
/// catch them, one failed request at a time).
pub const DNS_MAX_TTL: Duration = Duration::from_secs(60);

/// A nameserver written without a port is asked on 53, the DNS port. (No `servers` at all means
/// those of /etc/resolv.conf, as every other program on the machine; in Kubernetes, the cluster
/// DNS with the pod's search domains.)
pub const DNS_SERVER_PORT: u16 = 53;

/// 1 s to connect, as Linkerd. Inside a cluster a healthy endpoint accepts in well under a
/// millisecond; waiting Envoy's 5 s for a dead one only delays the 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pooled upstream connections idle for 60 s are closed. Below the keep-alive timeout of most
/// servers (nginx 75 s), so we close first and never reuse a connection the server is closing.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Round-robin unless told otherwise: smooth weighted round-robin spreads requests evenly,
/// keeps no per-request state, and is the easiest policy to predict when reading metrics.
pub const LB_POLICY: LbPolicy = LbPolicy::RoundRobin;

/// least_request compares 2 endpoints drawn at random, as Envoy: the power of two choices
/// avoids nearly every overloaded endpoint a full scan would, at a fraction of the cost.
pub const CHOICE_COUNT: u32 = 2;

/// Peak-EWMA forgets latency with a 10 s time constant, as Linkerd: long enough to smooth
/// out single slow requests, short enough to notice an endpoint slowing down within seconds.
pub const PEAK_EWMA_DECAY: Duration = Duration::from_secs(10);

/// An endpoint without measurements is assumed to answer in 30 ms, as in Linkerd: a typical
/// in-cluster latency, so a new endpoint is tried without being flooded.
pub const PEAK_EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);

/// 1024 points on a hash ring, as Envoy: keys spread within a few percent over tens of
/// endpoints, and the ring rebuilds in microseconds when endpoints change.
pub const MINIMUM_RING_SIZE: u64 = 1024;

/// 65537 Maglev table entries, Envoy's default: a prime (the algorithm needs one) well above
/// 100 entries per endpoint for clusters of hundreds of endpoints.
pub const MAGLEV_TABLE_SIZE: u64 = 65_537;

/// Below 50% healthy endpoints, balance over all of them, as Envoy: when half a cluster looks
/// down, the health signal is more likely wrong than half the endpoints dead, and the healthy
/// half would be overloaded anyway.
pub const PANIC_THRESHOLD: f64 = 0.5;

/// Check every 5 s. Envoy requires every cluster to choose; 5 s notices a dead endpoint within
/// seconds (outlier detection, fed by real requests, is usually faster still) at a negligible
/// load on the endpoint.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Intervals vary by up to 10%, so proxies started together (a rollout) spread their checks
/// instead of probing every endpoint at the same moment.
pub const HEALTH_CHECK_JITTER: f64 = 0.1;

/// 1 s for a check to answer, as Kubernetes probes' default timeout: a health endpoint does
/// no real work, so one that takes longer is in trouble. Envoy requires a value.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// 3 failed checks in a row mark an endpoint unhealthy, as Kubernetes probes' default failure
/// threshold: one lost packet or slow garbage collection does not take an endpoint out.
pub const UNHEALTHY_THRESHOLD: u32 = 3;

/// 2 passed checks in a row bring an endpoint back: one success after failures may be a fluke,
/// and an endpoint that flaps should not get traffic on every up-swing.
pub const HEALTHY_THRESHOLD: u32 = 2;

/// Endpoints count as healthy until their first check. A proxy that restarts under traffic
/// (a config rollout, a crash) should not refuse every endpoint until the first round of
/// checks; Envoy starts hosts unhealthy and relies on its panic threshold to route anyway.
pub const INITIALLY_HEALTHY: bool = true;

/// Any 2xx means healthy. Envoy accepts only 200, which fails health endpoints that answer
/// 204 No Content.
pub const EXPECTED_STATUSES: &[(u16, u16)] = &[(200, 299)];

/// Outlier detection is on: it costs nothing until endpoints fail, and then it keeps a dead or
/// broken endpoint from failing a share of every client's requests.
pub const OUTLIER_DETECTION_ENABLED: bool = true;

/// 5 consecutive 5xx responses eject an endpoint, as Envoy: a run that long is rarely bad luck.
pub const CONSECUTIVE_5XX: u32 = 5;

/// 5 consecutive gateway failures (connect failure, reset, timeout) eject an endpoint, Envoy's
/// threshold. Envoy counts these without ejecting unless told to; we eject, because a failure
/// to connect is the clearest sign an endpoint is gone.
pub const CONSECUTIVE_GATEWAY_FAILURE: u32 = 5;

/// A first ejection lasts 30 s, as Envoy: long enough for a restarting endpoint to come back,
/// short enough that a falsely ejected one is not missed for long.
pub const BASE_EJECTION_TIME: Duration = Duration::from_secs(30);

/// Repeated ejections grow to at most 300 s, as Envoy: an endpoint that keeps failing is
/// still retried every five minutes.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// At most 10% of a cluster's endpoints are ejected at once, as Envoy: when more fail
/// together, the cause is usually shared (a dependency, the network) and ejecting them would
/// only pile the load onto the rest.
pub const MAX_EJECTION_PERCENT: f64 = 0.1;

/// An ejected endpoint returns when its time is up, as in Envoy and Linkerd; requiring a
/// passing health check as well needs a health check, which not every cluster has.
pub const REQUIRE_HEALTH_CHECK_TO_RETURN: bool = false;

/// 2 attempts: one retry. With the default `retry_on`, a retry only follows a failure where
/// the upstream saw nothing, so one more attempt (most likely on another endpoint) is cheap
/// and safe; more would mostly retry an upstream that is down.
pub const MAX_ATTEMPTS: u32 = 2;

/// Retry only connect failures and refused streams: they fail before the upstream saw anything,
/// so a retry is always safe and invisible. Retrying more (5xx, resets, timeouts) is an explicit
/// choice per route, as in Envoy and Linkerd, where retries are opt-in: only the route's owner
/// knows whether its requests may run twice.
pub const RETRY_ON: &[RetryOn] = &[RetryOn::ConnectFailure, RetryOn::RefusedStream];

/// No per-attempt timeout: the route's timeout bounds all attempts together, and a per-try
/// limit only helps where the route's owner knows how fast a good answer comes.
pub const PER_TRY_TIMEOUT: Option<Duration> = None;

/// The first retry waits up to 25 ms, Envoy's base interval: long enough to skip past a
/// momentary blip, short enough that a retried request is barely slower.
pub const BACKOFF_BASE_INTERVAL: Duration = Duration::from_millis(25);

/// No retry waits more than 250 ms, Envoy's default of 10 times the base interval.
pub const BACKOFF_MAX_INTERVAL: Duration = Duration::from_millis(250);

/// A `Retry-After` of up to 10 s is honoured: the server's pacing is respected, without letting
/// it park requests for minutes while their callers wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Request bodies up to 64 KiB are kept for a retry: most API bodies fit, and uploads larger
/// than that stream through unbuffered (and are not retried) rather than held in memory.
pub const RETRY_BUFFER_LIMIT: u64 = 64 * 1024;

/// Non-idempotent requests (POST, PATCH...) are retried only where nothing reached the upstream:
/// anywhere else the upstream may have acted on them, and a retry would act twice.
pub const RETRY_NON_IDEMPOTENT: bool = false;

/// No hedging: a hedged request doubles the load for its slowest share, which only the route's
/// owner can judge worthwhile.
pub const HEDGE_AFTER: Option<Duration> = None;

/// Retries may add 20% to a cluster's requests, Linkerd's retry budget: enough to mask a few
/// failing endpoints, while an upstream that fails everything gets 1.2 times its load, not
/// `max_attempts` times.
pub const RETRY_BUDGET_RATIO: f64 = 0.2;

/// Plus 10 retries per second whatever the traffic, as Linkerd, so a cluster with few requests
/// can still retry.
pub const RETRY_BUDGET_MIN_PER_SECOND: u32 = 10;

/// Requests and retries are counted over the last 10 s, as Linkerd: long enough to smooth out
/// bursts, short enough that the budget follows a change in traffic.
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// 1024 connections to a cluster, as Envoy: far above what a healthy upstream needs from one
/// sidecar, so the breaker only trips when something is badly wrong.
pub const MAX_CONNECTIONS: u32 = 1024;

/// 1024 requests waiting for a connection, as Envoy.
pub const MAX_PENDING_REQUESTS: u32 = 1024;

/// 1024 requests in flight to a cluster, as Envoy.
pub const MAX_REQUESTS: u32 = 1024;

/// 64 retries in flight to a cluster. Envoy's 3 starves retries under load, as Istio found
/// (Istio effectively removed the cap); the retry budget is the real bound on how many retries
/// are made, and 64 at once is a backstop for when upstream latency stretches.
pub const MAX_RETRIES: u32 = 64;

/// The consecutive-failure breaker is off: outlier detection already takes failing endpoints
/// out, and opening a whole cluster is a choice for clusters whose callers can do without it.
pub const CONSECUTIVE_FAILURES_ENABLED: bool = false;

/// Once on, 7 failures in a row open the breaker, Linkerd's consecutive-failure default: a run
/// that long is rarely bad luck.
pub const BREAKER_THRESHOLD: u32 = 7;

/// The breaker first stays open 1 s, Linkerd's minimum penalty: a restarting upstream gets a
/// moment, and a falsely opened breaker costs little.
pub const BREAKER_BASE_OPEN: Duration = Duration::from_secs(1);

/// An open breaker lets a trial request through at least every minute, Linkerd's maximum
/// penalty, so a recovered upstream is noticed within a minute.
pub const BREAKER_MAX_OPEN: Duration = Duration::from_secs(60);

/// Header-triggered faults are off: any client can send a header, so letting requests ask for
/// their own delay or error is for routes whose owner has said so.
pub const FAULT_HEADER_TRIGGERED: bool = false;

/// A rate limit's burst, when not given: one second's worth of the rate, rounded up, so a client
/// that keeps to the rate but sends each second's requests together is never refused; at least
/// 1, so a rate below one per second still lets a request through.
pub fn rate_limit_burst(rate_per_second: f64) -> u32 {
    // Rates are at most 1e9/s (`ranges::RATE`), which fits a u32; the cast saturates anyway.
    (rate_per_second.ceil() as u32).max(1)
}

/// Accepted ranges, bounds included; outside them validation fails.
pub mod ranges {
    use std::time::Duration;

    /// From 100 ms (a test's record change seen at once) to a day.
    pub const DNS_TTL: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(24 * 3600));
    pub const CONNECT_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(60));
    pub const ROUTE_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(24 * 3600));
    pub const HEADER_READ_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    pub const IDLE_TIMEOUT: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(7 * 24 * 3600));
    pub const REQUEST_BODY_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    /// 0 exits at once, without draining.
    pub const DRAIN_TIMEOUT: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));
    pub const DETECT_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(10), Duration::from_secs(60));
    pub const UPSTREAM_IDLE_TIMEOUT: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(24 * 3600));
    /// hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
    pub const MAX_REQUEST_HEADER_BYTES: (usize, usize) = (8 * 1024, 1024 * 1024);
    pub const MAX_REQUEST_HEADERS: (usize, usize) = (1, 10_000);
    pub const MAX_URI_BYTES: (usize, usize) = (64, 1024 * 1024);
    pub const WORKERS: (usize, usize) = (1, 256);
    pub const MAX_CONCURRENT_STREAMS: (u32, u32) = (1, 10_000);
    /// least_request compares at least 2 endpoints, or it would be random choice.
    pub const CHOICE_COUNT: (u32, u32) = (2, 100);
    pub const PEAK_EWMA_DECAY: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(600));
    pub const PEAK_EWMA_DEFAULT_RTT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(10));
    /// Envoy's largest ring: 8M points.
    pub const MINIMUM_RING_SIZE: (u64, u64) = (1, 8_388_608);
    /// Both bounds are prime; 5000011 is Envoy's largest Maglev table.
    pub const MAGLEV_TABLE_SIZE: (u64, u64) = (101, 5_000_011);
    /// Shares written as percentages: 0% to 100%.
    pub const PERCENT: (f64, f64) = (0.0, 1.0);
    pub const HEALTH_CHECK_INTERVAL: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    pub const HEALTH_CHECK_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(10), Duration::from_secs(60));
    pub const HEALTH_THRESHOLD: (u32, u32) = (1, 100);
    /// The status codes HTTP defines.
    pub const HTTP_STATUS: (u16, u16) = (100, 599);
    pub const EJECTION_TIME: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(3600));
    pub const CONSECUTIVE_FAILURES: (u32, u32) = (1, 1000);
    /// Browsers cap a cookie's lifetime at 400 days (RFC 6265bis); 0 would expire it at once.
    pub const COOKIE_TTL: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(400 * 24 * 3600));
    /// 1 is no retries; past 10, retrying is hiding an outage rather than riding out a blip.
    pub const MAX_ATTEMPTS: (u32, u32) = (1, 10);
    pub const PER_TRY_TIMEOUT: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(3600));
    pub const BACKOFF_BASE_INTERVAL: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(10));
    pub const BACKOFF_MAX_INTERVAL: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(300));
    /// 0 ignores `Retry-After`.
    pub const MAX_RETRY_AFTER: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(600));
    /// 0 retries only requests without a body.
    pub const RETRY_BUFFER_LIMIT: (usize, usize) = (0, 16 * 1024 * 1024);
    pub const HEDGE_AFTER: (Duration, Duration) =
        (Duration::from_millis(1), Duration::from_secs(60));
    pub const RETRY_BUDGET_MIN_PER_SECOND: (u32, u32) = (0, 100_000);
    pub const RETRY_BUDGET_WINDOW: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(600));
    pub const CIRCUIT_BREAKER: (u32, u32) = (1, 1_000_000);
    pub const BREAKER_THRESHOLD: (u32, u32) = (1, 10_000);
    pub const BREAKER_OPEN: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    pub const FAULT_DELAY: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(3600));
    /// An injected abort is the proxy's answer to the request, so a final status, not 1xx.
    pub const FAULT_HTTP_STATUS: (u16, u16) = (200, 599);
    /// The gRPC status codes: OK (0) to UNAUTHENTICATED (16).
    pub const GRPC_STATUS: (u32, u32) = (0, 16);
    /// Tokens per second: above the first bound (a rate of 0 would refuse everything), up to
    /// the second.
    pub const RATE: (f64, f64) = (0.0, 1e9);
    pub const RATE_LIMIT_BURST: (u32, u32) = (1, u32::MAX);
}

/// A service's namespace when the mesh config names none: Kubernetes' own default.
pub const MESH_NAMESPACE: &str = "default";

/// Mesh services accept TLS and plaintext by default (when the control plane issues
/// certificates), as Istio's PERMISSIVE: a mesh can then be adopted one service at a time, and
/// `strict` set once every caller has a sidecar.
pub const MESH_MTLS: crate::model::MtlsMode = crate::model::MtlsMode::Permissive;

/// A sidecar's inbound listener, as Istio's: every interface, since traffic for the
/// workload arrives from other pods (in Kubernetes, redirected here by iptables).
pub const MESH_INBOUND: &str = "0.0.0.0:15006";

/// A sidecar's outbound listener, as Istio's: loopback only, since only the workload in its
/// own pod may send through it.
pub const MESH_OUTBOUND: &str = "127.0.0.1:15001";
