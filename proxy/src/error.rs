//! Proxy errors, and the one place they become HTTP responses.
//!
//! Each failure the proxy can produce on its own has a variant here. [`ProxyError::status`],
//! [`ProxyError::grpc_code`] and [`ProxyError::reason`] are the single mapping to an HTTP
//! status, a gRPC status and the `x-remora-error` header value, so a user reading a response
//! never has to guess whether the app or the proxy answered, nor why.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::grpc;

/// The header that marks every response the proxy generated itself.
pub const ERROR_HEADER: &str = "x-remora-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("cluster {0} has no endpoint to send to")]
    NoEndpoint(String),
    #[error("connecting to {addr} timed out after {after:?}")]
    ConnectTimeout {
        addr: std::net::SocketAddr,
        after: Duration,
    },
    #[error("connecting to {addr} failed: {source}")]
    ConnectFailed {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    Handshake {
        addr: std::net::SocketAddr,
        source: hyper::Error,
    },
    #[error("no response headers from upstream within the route timeout of {0:?}")]
    UpstreamTimeout(Duration),
    /// A gRPC call's own deadline (its `grpc-timeout`) passed before the response headers.
    #[error("no response headers from upstream within the call's grpc-timeout of {0:?}")]
    DeadlineExceeded(Duration),
    #[error("upstream closed the connection before a complete response: {0}")]
    UpstreamReset(hyper::Error),
    #[error("upstream sent an invalid response: {0}")]
    UpstreamBadResponse(hyper::Error),
    #[error("request target is {len} bytes, over the limit of {limit}")]
    UriTooLong { len: usize, limit: usize },
    #[error("request headers are {what}, over the limit of {limit}")]
    HeadersTooLarge { what: String, limit: usize },
    #[error("request body is over the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(&'static str),
    /// The client went silent mid-body for longer than the body timeout.
    #[error("no request body bytes for {0:?}")]
    RequestBodyTimeout(Duration),
    /// The upstream's response head had ambiguous framing (see `crate::framing`).
    #[error("upstream response has {0}")]
    UpstreamInvalid(&'static str),
    /// The listener's or route's rate limit; the client may try again after the duration.
    #[error("rate limited; try again in {0:?}")]
    RateLimited(Duration),
    /// A fault injected by the route's config (or a fault header it allows).
    #[error("fault injected: HTTP {http}")]
    FaultAbort { http: u16, grpc: Option<u32> },
    /// The cluster's consecutive-failure breaker is open.
    #[error("cluster {0} is failing; its circuit breaker is open")]
    CircuitOpen(String),
    /// One of the cluster's circuit-breaker limits is reached (`reason` is `overflow-<which>`).
    #[error("cluster {cluster} is at its {reason} limit")]
    Overflow {
        cluster: String,
        reason: &'static str,
    },
    /// A reload made this connection's listener stop serving HTTP; the client must reconnect.
    #[error("this listener no longer serves HTTP; reconnect")]
    ListenerChanged,
    /// The cluster is reached over mTLS and this sidecar has no valid certificate (none issued
    /// yet, or expired and not renewed): fail closed.
    #[error("no valid workload certificate for mTLS to cluster {0}")]
    NoIdentity(String),
    /// An authorization policy refused the request.
    #[error("not authorized: {0}")]
    Unauthorized(&'static str),
    /// The mTLS handshake with the endpoint failed, or it proved another identity.
    #[error("mTLS with {addr} failed: {reason}")]
    UpstreamTls { addr: SocketAddr, reason: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint(_)
            | ProxyError::ListenerChanged
            | ProxyError::CircuitOpen(_)
            | ProxyError::NoIdentity(_)
            | ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Unauthorized(_) => StatusCode::FORBIDDEN,
            ProxyError::FaultAbort { http, .. } => {
                StatusCode::from_u16(*http).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            ProxyError::ConnectTimeout { .. }
            | ProxyError::ConnectFailed { .. }
            | ProxyError::Handshake { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamBadResponse(_)
            | ProxyError::UpstreamInvalid(_) => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UpstreamTimeout(_) | ProxyError::DeadlineExceeded(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Short, stable token for `x-remora-error`, metrics labels and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no-route",
            ProxyError::NoEndpoint(_) => "no-endpoint",
            ProxyError::ConnectTimeout { .. } => "connect-timeout",
            ProxyError::ConnectFailed { .. } => "connect-failed",
            ProxyError::Handshake { .. } => "upstream-handshake-failed",
            ProxyError::UpstreamTimeout(_) => "upstream-timeout",
            ProxyError::DeadlineExceeded(_) => grpc::DEADLINE_REASON,
            ProxyError::UpstreamReset(_) => "upstream-reset",
            ProxyError::UpstreamBadResponse(_) | ProxyError::UpstreamInvalid(_) => {
                "upstream-bad-response"
            }
            ProxyError::RequestBodyTimeout(_) => "request-body-timeout",
            ProxyError::UriTooLong { .. } => "uri-too-long",
            ProxyError::HeadersTooLarge { .. } => "headers-too-large",
            ProxyError::BodyTooLarge { .. } => "body-too-large",
            ProxyError::BadRequest(_) => "bad-request",
            ProxyError::ListenerChanged => "listener-changed",
            ProxyError::RateLimited(_) => "rate-limited",
            ProxyError::FaultAbort { .. } => "fault-injected",
            ProxyError::CircuitOpen(_) => "circuit-open",
            ProxyError::Overflow { reason, .. } => reason,
            ProxyError::NoIdentity(_) => "no-identity",
            ProxyError::Unauthorized(_) => "unauthorized",
            ProxyError::UpstreamTls { .. } => "upstream-tls-failed",
        }
    }

    /// The `grpc-status` a gRPC client gets for this failure.
    pub fn grpc_code(&self) -> grpc::Code {
        use grpc::Code;
        match self {
            ProxyError::NoRoute => Code::Unimplemented,
            ProxyError::NoEndpoint(_)
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ConnectFailed { .. }
            | ProxyError::Handshake { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::NoIdentity(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::ListenerChanged
            | ProxyError::CircuitOpen(_)
            | ProxyError::Overflow { .. } => Code::Unavailable,
            ProxyError::RateLimited(_) => Code::ResourceExhausted,
            ProxyError::Unauthorized(_) => Code::PermissionDenied,
            // Only reached without a configured gRPC status (see `to_grpc_response`).
            ProxyError::FaultAbort { .. } => Code::Unavailable,
            ProxyError::UpstreamTimeout(_)
            | ProxyError::DeadlineExceeded(_)
            | ProxyError::RequestBodyTimeout(_) => Code::DeadlineExceeded,
            ProxyError::UriTooLong { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::BodyTooLarge { .. } => Code::ResourceExhausted,
            ProxyError::UpstreamBadResponse(_)
            | ProxyError::UpstreamInvalid(_)
            | ProxyError::BadRequest(_) => Code::Internal,
        }
    }

    /// Whether the downstream connection must close after this response: the rest of its byte
    /// stream cannot be trusted (a malformed request) or is not HTTP any more.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::RequestBodyTimeout(_)
                | ProxyError::ListenerChanged
        )
    }

    /// A failure of the upstream itself rather than an answer from it: what outlier
    /// detection counts as a gateway failure (connect failure, reset, timeout).
    pub fn is_gateway_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectTimeout { .. }
                | ProxyError::ConnectFailed { .. }
                | ProxyError::Handshake { .. }
                | ProxyError::UpstreamTls { .. }
                | ProxyError::UpstreamReset(_)
                | ProxyError::UpstreamTimeout(_)
                | ProxyError::UpstreamBadResponse(_)
                | ProxyError::UpstreamInvalid(_)
        )
    }

    /// Whether the upstream was never reached, so nothing was sent and a retry is always safe.
    /// Retries (a later issue) read this instead of matching variants.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::ConnectTimeout { .. }
                | ProxyError::ConnectFailed { .. }
                | ProxyError::Handshake { .. }
                | ProxyError::UpstreamTls { .. }
                | ProxyError::NoIdentity(_)
                | ProxyError::NoEndpoint(_)
        )
    }

    /// Classifies a hyper client error from an exchange that was already under way.
    pub fn from_upstream(err: hyper::Error) -> Self {
        if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
            ProxyError::UpstreamBadResponse(err)
        } else {
            ProxyError::UpstreamReset(err)
        }
    }

    /// The response sent downstream in place of an upstream one.
    pub fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        let body = Bytes::from(format!("remora: {}: {}\n", self.reason(), self));
        let mut resp = Response::new(B::from(body));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        self.add_retry_after(headers);
        resp
    }

    /// A rate-limited client learns when to come back (RFC 9110 section 10.2.3).
    fn add_retry_after(&self, headers: &mut http::HeaderMap) {
        if let ProxyError::RateLimited(wait) = self {
            headers.insert(
                http::header::RETRY_AFTER,
                crate::ratelimit::retry_after_header(*wait),
            );
        }
    }

    /// The response sent to a gRPC client in place of an upstream one: trailers-only (HTTP 200,
    /// the status in `grpc-status` and `grpc-message`, no body), since gRPC clients read the
    /// call's outcome from there and not from the HTTP status. Over HTTP/2 it is a single
    /// HEADERS frame that ends the stream.
    pub fn to_grpc_response<B: Default>(&self) -> Response<B> {
        let mut resp = Response::new(B::default());
        let headers = resp.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, grpc::CONTENT_TYPE_GRPC);
        let status = match self {
            ProxyError::FaultAbort {
                grpc: Some(code), ..
            } => HeaderValue::from(*code),
            _ => self.grpc_code().header_value(),
        };
        headers.insert(grpc::GRPC_STATUS, status);
        headers.insert(
            grpc::GRPC_MESSAGE,
            grpc::encode_message(&format!("remora: {}: {}", self.reason(), self)),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(self.reason()));
        self.add_retry_after(headers);
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_the_documented_status_and_reason() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::NoRoute, 404, "no-route"),
            (ProxyError::NoEndpoint("api".into()), 503, "no-endpoint"),
            (
                ProxyError::ConnectTimeout {
                    addr,
                    after: Duration::from_secs(1),
                },
                502,
                "connect-timeout",
            ),
            (
                ProxyError::ConnectFailed {
                    addr,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                },
                502,
                "connect-failed",
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "upstream-timeout",
            ),
            (
                ProxyError::UriTooLong { len: 10, limit: 5 },
                414,
                "uri-too-long",
            ),
            (
                ProxyError::HeadersTooLarge {
                    what: "101 headers".into(),
                    limit: 100,
                },
                431,
                "headers-too-large",
            ),
            (ProxyError::BodyTooLarge { limit: 1 }, 413, "body-too-large"),
            (ProxyError::BadRequest("x"), 400, "bad-request"),
        ];
        for (err, status, reason) in cases {
            let resp: Response<Bytes> = err.to_response();
            assert_eq!(resp.status().as_u16(), status, "{err}");
            assert_eq!(resp.headers()[ERROR_HEADER], reason);
            assert!(String::from_utf8_lossy(resp.body()).contains(reason));
        }
    }

    #[test]
    fn grpc_calls_get_trailers_only_responses_with_the_documented_codes() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let cases: Vec<(ProxyError, &str)> = vec![
            (ProxyError::NoRoute, "12"),
            (ProxyError::NoEndpoint("api".into()), "14"),
            (
                ProxyError::ConnectFailed {
                    addr,
                    source: std::io::ErrorKind::ConnectionRefused.into(),
                },
                "14",
            ),
            (
                ProxyError::ConnectTimeout {
                    addr,
                    after: Duration::from_secs(1),
                },
                "14",
            ),
            (ProxyError::UpstreamTimeout(Duration::from_secs(1)), "4"),
            (
                ProxyError::DeadlineExceeded(Duration::from_millis(100)),
                "4",
            ),
            (ProxyError::BodyTooLarge { limit: 1 }, "8"),
            (ProxyError::UriTooLong { len: 10, limit: 5 }, "8"),
            (ProxyError::BadRequest("x"), "13"),
        ];
        for (err, code) in cases {
            let resp: Response<Bytes> = err.to_grpc_response();
            assert_eq!(resp.status(), StatusCode::OK, "{err}");
            let h = resp.headers();
            assert_eq!(h["content-type"], "application/grpc");
            assert_eq!(h["grpc-status"], code, "{err}");
            assert_eq!(h[ERROR_HEADER], err.reason());
            let message = h["grpc-message"].to_str().unwrap();
            assert!(
                message.starts_with(&format!("remora: {}: ", err.reason())),
                "{message}"
            );
            assert!(resp.body().is_empty(), "trailers-only means no body");
        }
        assert_eq!(
            ProxyError::DeadlineExceeded(Duration::from_millis(100)).reason(),
            "deadline-exceeded"
        );
    }
}
