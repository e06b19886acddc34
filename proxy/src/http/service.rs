//! The request path: from a downstream request to an upstream response (or an error response).
//!
//! `handle` is what hyper calls per request. In order (see `docs/request-flow.md`):
//! 1. check limits (414, 431, 413 by Content-Length);
//! 2. route (404), pick a backend by weight, pick an endpoint (503);
//! 3. rewrite the request: hop-by-hop removal, X-Forwarded-*, x-request-id, traceparent, the
//!    route's header rules, and the target form the upstream protocol needs;
//! 4. send on a pooled connection within the route timeout (502, 504);
//! 5. rewrite the response, and wrap its body so the exchange is recorded when it ends.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use remora_config::model::{Limits, UpstreamProtocol};
use tokio::time::Instant;

use crate::body::{ObservedBody, ProxyBody, RequestBody};
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::headers;
use crate::observe::Completion;
use crate::rng::ThreadRng;
use crate::route::RequestView;
use crate::snapshot::{ListenerRtKind, Snapshot};
use crate::trace;
use crate::upstream::pool;

pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let start = Instant::now();
    ctx.activity.request_started();
    let snapshot = ctx.shared.snapshot.load_full();
    let mut done = Completion::new(ctx.clone(), snapshot.clone(), start, &req);
    let resp = match forward(&ctx, &snapshot, req, start, &mut done).await {
        Ok(resp) => resp,
        Err(err) => {
            let listener = &snapshot.listeners[ctx.listener];
            tracing::debug!(listener = %listener.name, error = %err, "proxy error response");
            ctx.shared.metrics.proxy_error(&listener.name, err.reason());
            done.error = Some(err.reason());
            err.to_response()
        }
    };
    done.status = resp.status();
    Ok(resp.map(|body| ObservedBody::new(body, done)))
}

async fn forward(
    ctx: &ConnCtx,
    snapshot: &Snapshot,
    req: Request<Incoming>,
    start: Instant,
    done: &mut Completion,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limits = &snapshot.config.limits;
    check_limits(&req, limits)?;

    let ListenerRtKind::Http(table) = &snapshot.listeners[ctx.listener].kind else {
        unreachable!("HTTP connections are only accepted on HTTP listeners");
    };
    let view = RequestView {
        host: request_host(&req),
        path: req.uri().path(),
        method: req.method(),
        headers: req.headers(),
    };
    let route = table.lookup(&view).ok_or(ProxyError::NoRoute)?.clone();
    let backend = route.split.pick(&mut ThreadRng);
    done.route = Some((route.clone(), backend));
    let cluster = &route.backends[backend].cluster;
    let ep = cluster.pick()?;
    let addr = cluster.endpoints[ep].address;
    done.upstream = Some(addr);

    let downstream_version = req.version();
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::append_forwarded(h, &ctx.client_ip, &headers::PROTO_HTTP);
    done.set_request_id(&headers::ensure_request_id(h, &mut ThreadRng));
    trace::propagate(h, &mut ThreadRng);
    headers::rewrite(h, &route.request_headers);
    set_target(&mut parts, cluster.protocol, addr)?;

    let (body, body_stats) = RequestBody::new(body, limits.max_request_body_bytes);
    done.request_body = body_stats.clone();
    let sent_at = Instant::now();
    let req = Request::from_parts(parts, body);
    let deadline = start + route.timeout;
    // One await per protocol rather than a shared wrapper future: each layer of futures is
    // another copy of the request state on every request.
    let result = match cluster.protocol {
        UpstreamProtocol::Http1 => {
            tokio::time::timeout_at(deadline, pool::send_http1(cluster, ep, req)).await
        }
        UpstreamProtocol::Http2 => {
            tokio::time::timeout_at(deadline, pool::send_http2(cluster, ep, req)).await
        }
    };
    let mut resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => {
            let over =
                body_stats.is_some_and(|s| s.over_limit.load(std::sync::atomic::Ordering::Relaxed));
            return Err(match (over, limits.max_request_body_bytes) {
                (true, Some(limit)) => ProxyError::BodyTooLarge { limit },
                _ => err,
            });
        }
        Err(_) => return Err(ProxyError::UpstreamTimeout(route.timeout)),
    };
    cluster
        .metrics
        .latency
        .observe(sent_at.elapsed().as_secs_f64());
    // We answer in the client's protocol, whatever the upstream spoke (an HTTP/1.0 upstream must
    // not turn a keep-alive HTTP/1.1 client connection into HTTP/1.0).
    *resp.version_mut() = downstream_version;
    headers::strip_hop_by_hop(resp.headers_mut());
    headers::rewrite(resp.headers_mut(), &route.response_headers);
    Ok(resp.map(ProxyBody::Upstream))
}

/// Limits checked on the parsed head. hyper enforces a hard ceiling at twice these (see
/// [`super::builder`]); between the two, the client gets our error with its reason header.
fn check_limits(req: &Request<Incoming>, limits: &Limits) -> Result<(), ProxyError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong {
            len: target,
            limit: limits.max_uri_bytes,
        });
    }
    let count = req.headers().len();
    if count > limits.max_request_headers {
        return Err(ProxyError::HeadersTooLarge {
            what: format!("{count} headers"),
            limit: limits.max_request_headers,
        });
    }
    // The size of the head as an HTTP/1.1 client would write it: request line, then
    // `name: value\r\n` per header.
    let head = req.method().as_str().len()
        + target
        + 12
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > limits.max_request_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            what: format!("{head} bytes"),
            limit: limits.max_request_header_bytes,
        });
    }
    if let (Some(limit), Some(len)) = (limits.max_request_body_bytes, content_length(req))
        && len > limit
    {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    Ok(())
}

fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The host a request is for: the URI's authority (HTTP/2 `:authority`, or an absolute-form
/// HTTP/1.1 target), else the `Host` header.
fn request_host(req: &Request<Incoming>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST)?.to_str().ok(),
    }
}

/// Puts the request target in the form the upstream protocol needs. HTTP/1.1 upstreams get an
/// origin-form target and a `Host` header; HTTP/2 upstreams get an absolute URI (hyper sends it
/// as `:scheme` and `:authority`) and no `Host`. The downstream's host is kept either way.
fn set_target(
    parts: &mut Parts,
    protocol: UpstreamProtocol,
    endpoint: std::net::SocketAddr,
) -> Result<(), ProxyError> {
    match protocol {
        UpstreamProtocol::Http1 => {
            if let Some(authority) = parts.uri.authority() {
                // RFC 9112 section 3.2.2: the target's authority replaces any Host received
                // (and it is what routing matched on). HTTP/2's :authority is treated alike.
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?;
                parts.headers.insert(HOST, host);
                let path = parts.uri.path_and_query().cloned();
                parts.uri = Uri::from(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
            } else if !parts.headers.contains_key(HOST) {
                // RFC 9112 section 3.2: an HTTP/1.1 request without Host is invalid; an
                // HTTP/1.0 one gets the endpoint's address.
                if parts.version == Version::HTTP_11 {
                    return Err(ProxyError::BadRequest("missing Host header"));
                }
                let host = HeaderValue::from_str(&endpoint.to_string())
                    .expect("a socket address is a valid header value");
                parts.headers.insert(HOST, host);
            }
            parts.version = Version::HTTP_11;
        }
        UpstreamProtocol::Http2 => {
            let authority = match parts.uri.authority() {
                Some(a) => a.clone(),
                None => match parts.headers.get(HOST) {
                    Some(h) => Authority::try_from(h.as_bytes())
                        .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
                    None => Authority::try_from(endpoint.to_string())
                        .expect("a socket address is a valid authority"),
                },
            };
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(authority);
            uri.path_and_query = Some(
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
            parts.uri =
                Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("invalid target"))?;
            parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, version: Version, host: Option<&'static str>) -> Parts {
        let mut b = Request::builder().uri(uri).version(version);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    const EP: &str = "10.0.0.1:8080";

    #[test]
    fn h2_downstream_to_h1_upstream_gets_origin_form_and_host() {
        let mut p = parts("http://api.local/x?y=1", Version::HTTP_2, None);
        set_target(&mut p, UpstreamProtocol::Http1, EP.parse().unwrap()).unwrap();
        assert_eq!(p.uri, "/x?y=1");
        assert_eq!(p.headers[HOST], "api.local");
        assert_eq!(p.version, Version::HTTP_11);
    }

    #[test]
    fn h1_downstream_to_h2_upstream_gets_absolute_uri_without_host() {
        let mut p = parts("/x?y=1", Version::HTTP_11, Some("api.local:8080"));
        set_target(&mut p, UpstreamProtocol::Http2, EP.parse().unwrap()).unwrap();
        assert_eq!(p.uri, "http://api.local:8080/x?y=1");
        assert!(!p.headers.contains_key(HOST));
        assert_eq!(p.version, Version::HTTP_2);
    }

    #[test]
    fn an_absolute_target_replaces_a_conflicting_host() {
        let mut p = parts("http://api.local/x", Version::HTTP_11, Some("other.local"));
        set_target(&mut p, UpstreamProtocol::Http1, EP.parse().unwrap()).unwrap();
        assert_eq!(p.headers[HOST], "api.local");
        assert_eq!(p.uri, "/x");
    }

    #[test]
    fn missing_host_is_refused_for_http11_and_filled_for_http10() {
        let mut p = parts("/", Version::HTTP_11, None);
        assert!(set_target(&mut p, UpstreamProtocol::Http1, EP.parse().unwrap()).is_err());
        let mut p = parts("/", Version::HTTP_10, None);
        set_target(&mut p, UpstreamProtocol::Http1, EP.parse().unwrap()).unwrap();
        assert_eq!(p.headers[HOST], EP);
    }
}
