//! Every default in the config, in one place, each with the reason it is that value.
//!
//! `validate` fills these in; `remora-proxy --print-config` and the admin `/config` page show them
//! explicitly, so what a user sees is what runs.

use std::time::Duration;

use crate::model::{Direction, LogTarget, UpstreamProtocol};
use crate::raw::ListenerProtocol;

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

/// 1 s to connect, as Linkerd. Inside a cluster a healthy endpoint accepts in well under a
/// millisecond; waiting Envoy's 5 s for a dead one only delays the 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pooled upstream connections idle for 60 s are closed. Below the keep-alive timeout of most
/// servers (nginx 75 s), so we close first and never reuse a connection the server is closing.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepted ranges, bounds included; outside them validation fails.
pub mod ranges {
    use std::time::Duration;

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
}
