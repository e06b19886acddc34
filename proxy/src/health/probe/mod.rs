//! Health-check probes: one check of one endpoint, over HTTP/1.1, plain TCP or gRPC.
//!
//! A probe is made per endpoint and kept between checks, so it can hold a connection open (HTTP
//! and gRPC reuse theirs while the server keeps it alive). The checker bounds each check with the
//! configured timeout ([`check_within`]); a probe itself never waits on a clock. Failures are one
//! of a small fixed set of reasons, since they become a metric label.

pub mod grpc;
pub mod http_get;
pub mod tcp;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use remora_config::identity::SpiffeId;
use remora_config::model::{HealthCheckKind, UpstreamProtocol};

use crate::upstream::connect::UpstreamStream;

pub use grpc::GrpcProbe;
pub use http_get::HttpProbe;
pub use tcp::TcpProbe;

/// Why a check failed. The tokens are the `reason` label of
/// `remora_health_check_failures_total`, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// No answer within the check timeout.
    Timeout,
    /// The TCP connection could not be opened.
    Connect,
    /// The endpoint answered that it is not well: an HTTP status outside the accepted ranges,
    /// or a gRPC health status other than SERVING.
    Status,
    /// A TCP check's reply did not start with the expected bytes.
    Mismatch,
    /// The connection was closed or reset before a complete answer.
    Closed,
    /// The gRPC call itself failed (a `grpc-status` other than OK).
    GrpcStatus,
    /// The answer could not be understood (malformed HTTP, gRPC framing or protobuf).
    Protocol,
}

impl FailureReason {
    /// Every reason, in discriminant order (metrics index their counters by it).
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Timeout,
        FailureReason::Connect,
        FailureReason::Status,
        FailureReason::Mismatch,
        FailureReason::Closed,
        FailureReason::GrpcStatus,
        FailureReason::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Timeout => "timeout",
            FailureReason::Connect => "connect",
            FailureReason::Status => "status",
            FailureReason::Mismatch => "mismatch",
            FailureReason::Closed => "closed",
            FailureReason::GrpcStatus => "grpc-status",
            FailureReason::Protocol => "protocol",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed check: the bounded reason, and a human-readable detail for logs and the admin page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    pub reason: FailureReason,
    pub detail: String,
}

impl CheckFailure {
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        CheckFailure {
            reason,
            detail: detail.into(),
        }
    }

    /// Sorts a hyper error into the fixed reasons.
    pub(crate) fn from_hyper(e: &hyper::Error) -> Self {
        let reason = if e.is_parse() || e.is_parse_status() || e.is_user() {
            FailureReason::Protocol
        } else {
            FailureReason::Closed
        };
        CheckFailure::new(reason, e.to_string())
    }
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for CheckFailure {}

/// One endpoint's health check. `check` may be cancelled at any await (the timeout drops it), so
/// a probe must not leave half-used state behind: take a kept connection out while using it.
pub trait Probe: Send + 'static {
    fn check(&mut self) -> impl Future<Output = Result<(), CheckFailure>> + Send;
}

/// Runs one check, failing it with [`FailureReason::Timeout`] past `timeout`.
pub async fn check_within<P: Probe>(probe: &mut P, timeout: Duration) -> Result<(), CheckFailure> {
    match tokio::time::timeout(timeout, probe.check()).await {
        Ok(result) => result,
        Err(_) => Err(CheckFailure::new(
            FailureReason::Timeout,
            format!("no answer within {timeout:?}"),
        )),
    }
}

/// The probe a cluster's config asks for.
pub enum ConfiguredProbe {
    Http(HttpProbe),
    Tcp(TcpProbe),
    Grpc(GrpcProbe),
}

impl ConfiguredProbe {
    /// `protocol` is the cluster's: HTTP checks speak it.
    pub fn new(
        kind: &HealthCheckKind,
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        mtls: Option<SpiffeId>,
    ) -> Self {
        match kind {
            HealthCheckKind::Http {
                path,
                host,
                statuses,
            } => ConfiguredProbe::Http(HttpProbe::new(
                addr,
                protocol,
                path.clone(),
                host.clone(),
                statuses.clone(),
                mtls,
            )),
            HealthCheckKind::Tcp { send, expect } => ConfiguredProbe::Tcp(
                TcpProbe::new(addr, send.clone(), expect.clone()).with_mtls(mtls),
            ),
            HealthCheckKind::Grpc { service } => {
                ConfiguredProbe::Grpc(GrpcProbe::new(addr, service.clone()).with_mtls(mtls))
            }
        }
    }
}

impl Probe for ConfiguredProbe {
    async fn check(&mut self) -> Result<(), CheckFailure> {
        match self {
            ConfiguredProbe::Http(p) => p.check().await,
            ConfiguredProbe::Tcp(p) => p.check().await,
            ConfiguredProbe::Grpc(p) => p.check().await,
        }
    }
}

/// Opens a connection for a check: TCP, and mTLS when the cluster's endpoints are sidecars
/// that must prove `mtls` (a check goes the way requests go: a strict peer refuses
/// plaintext). `http2` picks the ALPN offered.
async fn connect(
    addr: SocketAddr,
    mtls: Option<&SpiffeId>,
    http2: Option<bool>,
) -> Result<UpstreamStream, CheckFailure> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| CheckFailure::new(FailureReason::Connect, e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let Some(identity) = mtls else {
        return Ok(UpstreamStream::Plain(stream));
    };
    if !crate::tls::global().has_identity() {
        let msg = "no workload certificate to check an mTLS endpoint with";
        return Err(CheckFailure::new(FailureReason::Connect, msg));
    }
    crate::upstream::connect::mtls_handshake(stream, addr, identity, http2, CHECK_HANDSHAKE_TIMEOUT)
        .await
        .map_err(|(reason, detail)| {
            CheckFailure::new(FailureReason::Connect, format!("mTLS {reason}: {detail}"))
        })
}

/// A check's TLS handshake is bounded like any connection it opens.
const CHECK_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
