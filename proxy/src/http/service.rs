//! The request path: from a downstream request to an upstream response (or an error response).
//!
//! `handle` is what hyper calls per request. In order (see `docs/request-flow.md`):
//! 1. check limits (414, 431, 413 by Content-Length);
//! 2. route (404), pick a backend by weight, pick an endpoint (503);
//! 3. rewrite the request: hop-by-hop removal, X-Forwarded-*, x-request-id, traceparent, the
//!    route's header rules, and the target form the upstream protocol needs;
//! 4. send on a pooled connection within the route timeout and a gRPC call's deadline (502,
//!    504), or an upgrade request on a dedicated one ([`super::upgrade`]);
//! 5. rewrite the response, and wrap its body so the exchange is recorded when it ends.
//!
//! A failure on a gRPC call is answered the gRPC way (trailers-only, with a `grpc-status`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::Poll;

use http::header::HOST;
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use remora_config::model::{Limits, UpstreamProtocol};
use tokio::time::Instant;

use super::upgrade::{self, TunnelSlot};
use crate::body::{ObservedBody, ProxyBody, RequestBody};
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::grpc::{self, DeadlineBody};
use crate::headers;
use crate::health::Outcome;
use crate::observe::Completion;
use crate::rng::ThreadRng;
use crate::route::RequestView;
use crate::snapshot::{ListenerRt, RouteRt};
use crate::trace;
use crate::upstream::{PickInput, pool};

pub async fn handle(
    ctx: Arc<ConnCtx>,
    tunnels: Arc<TunnelSlot>,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let start = Instant::now();
    let framing = ctx.activity.request_started();
    let listener = ctx.listener_rt();
    let mut done = Completion::new(ctx.clone(), listener.clone(), start, &req);
    // A gRPC call gets the proxy's failures as gRPC statuses, and its grpc-timeout honoured.
    let grpc = grpc::is_grpc(req.headers());
    let call = grpc
        .then(|| grpc::Deadline::from_request(req.headers(), start))
        .flatten();
    let outcome = match crate::framing::refuse(framing) {
        Some(err) => Err(err),
        None => forward(&ctx, &listener, &tunnels, req, start, call, &mut done).await,
    };
    let resp = match outcome {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(listener = %listener.name, error = %err, "proxy error response");
            done.record_error(err.reason());
            let mut resp = match grpc {
                true => err.to_grpc_response(),
                false => err.to_response(),
            };
            // After a malformed request the rest of the byte stream cannot be trusted.
            if err.closes_connection() {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    done.status = resp.status();
    Ok(resp.map(|body| ObservedBody::new(body, done)))
}

async fn forward(
    ctx: &ConnCtx,
    listener: &ListenerRt,
    tunnels: &TunnelSlot,
    mut req: Request<Incoming>,
    start: Instant,
    call: Option<grpc::Deadline>,
    done: &mut Completion,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limits = &listener.limits;
    check_limits(&req, limits)?;
    crate::framing::check_head(req.headers())?;
    crate::framing::check_target(&req)?;

    let (route, backend, ep, set_cookie) = choose(ctx, listener, &req, done)?;
    let cluster = &route.backends[backend].cluster;
    let addr = cluster.endpoints[ep].address;

    let upgrade = upgrade::requested(&mut req);
    let asked_upgrade = upgrade.as_ref().map(|u| u.protocols.clone());
    let downstream_version = req.version();
    let (mut parts, body) = req.into_parts();
    rewrite_request(ctx, &mut parts, &route, asked_upgrade.clone(), call, done)?;
    // An upgrade goes upstream over HTTP/1.1 whatever the cluster speaks: the only version
    // that has Upgrade.
    let protocol = match upgrade {
        Some(_) => UpstreamProtocol::Http1,
        None => cluster.protocol,
    };
    set_target(&mut parts, protocol, addr)?;

    let body_timeout =
        (downstream_version < Version::HTTP_2).then_some(limits.request_body_timeout);
    let (mut body, body_stats) =
        RequestBody::new(body, limits.max_request_body_bytes, body_timeout);
    done.request_body = body_stats.clone();
    // A body already broken when its head arrived never costs an upstream connection.
    if let Some(stats) = &body_stats
        && std::future::poll_fn(|cx| Poll::Ready(body.peek(cx)))
            .await
            .is_err()
    {
        let timeout = limits.request_body_timeout;
        return Err(stats
            .error(limits.max_request_body_bytes, timeout)
            .unwrap_or(ProxyError::BadRequest("malformed request body")));
    }
    let sent_at = Instant::now();
    let req = Request::from_parts(parts, body);
    // The response head must arrive within the route timeout, and within a gRPC call's own
    // deadline when it has an earlier one.
    let route_deadline = start + route.timeout;
    let deadline = call.map_or(route_deadline, |c| c.at.min(route_deadline));
    // One await per way of sending rather than a shared wrapper future: each layer of futures is
    // another copy of the request state on every request.
    let result = match (upgrade, cluster.protocol) {
        // Boxed: upgrades are rare, and their future would enlarge every request's.
        (Some(up), _) => {
            let send = Box::pin(upgrade::send(cluster, addr, req, up, tunnels));
            tokio::time::timeout_at(deadline, send).await
        }
        (None, UpstreamProtocol::Http1) => {
            tokio::time::timeout_at(deadline, pool::send_http1(cluster, ep, req))
                .await
                .map(|r| r.map_err(|f| f.error))
        }
        (None, UpstreamProtocol::Http2) => {
            tokio::time::timeout_at(deadline, pool::send_http2(cluster, ep, req))
                .await
                .map(|r| r.map_err(|f| f.error))
        }
    };
    let mut resp = match result {
        Ok(Ok(resp)) => resp,
        // A failure the request body caused is the client's (413, 408, 400), not the upstream's.
        Ok(Err(err)) => {
            let limit = limits.max_request_body_bytes;
            let body_err = body_stats.and_then(|s| s.error(limit, limits.request_body_timeout));
            if body_err.is_none() && err.is_gateway_failure() {
                cluster.record(ep, Outcome::GatewayFailure, None);
            }
            return Err(body_err.unwrap_or(err));
        }
        // Whichever deadline was the earlier one passed.
        Err(_) => {
            cluster.record(ep, Outcome::GatewayFailure, None);
            return Err(match call {
                Some(c) if c.at <= route_deadline => ProxyError::DeadlineExceeded(c.timeout),
                _ => ProxyError::UpstreamTimeout(route.timeout),
            });
        }
    };
    let rtt = sent_at.elapsed();
    cluster.metrics.latency.observe(rtt.as_secs_f64());
    cluster.record(ep, Outcome::from_status(resp.status().as_u16()), Some(rtt));
    for cookie in set_cookie {
        resp.headers_mut().append(http::header::SET_COOKIE, cookie);
    }
    // We answer in the client's protocol, whatever the upstream spoke (an HTTP/1.0 upstream must
    // not turn a keep-alive HTTP/1.1 client connection into HTTP/1.0).
    *resp.version_mut() = downstream_version;
    let status = resp.status();
    rewrite_response(resp.headers_mut(), status, asked_upgrade, &route);
    Ok(resp.map(|body| match call {
        Some(call) => ProxyBody::Deadline(Box::pin(DeadlineBody::new(body, call))),
        None => ProxyBody::Upstream(body),
    }))
}

/// The route for `req`, the backend it picks and the endpoint of that backend's cluster; all
/// noted in `done`.
fn choose(
    ctx: &ConnCtx,
    listener: &ListenerRt,
    req: &Request<Incoming>,
    done: &mut Completion,
) -> Result<(Arc<RouteRt>, usize, usize, Vec<HeaderValue>), ProxyError> {
    // A reload can turn an HTTP listener into a TCP one under an open connection: its next
    // request has no routes to go to, and the client should reconnect.
    let Some(table) = listener.kind.routes() else {
        return Err(ProxyError::ListenerChanged);
    };
    let view = RequestView {
        host: request_host(req),
        path: req.uri().path(),
        method: req.method(),
        headers: req.headers(),
    };
    let route = table.lookup(&view).ok_or(ProxyError::NoRoute)?.clone();
    let backend = route.split.pick(&mut ThreadRng);
    done.route = Some((route.clone(), backend));
    let cluster = &route.backends[backend].cluster;
    let input = PickInput {
        headers: req.headers(),
        uri: req.uri(),
        client_ip: ctx.peer.ip(),
    };
    let picked = cluster.pick(&input, &mut ThreadRng)?;
    done.upstream = Some(cluster.endpoints[picked.index].address);
    done.in_flight = Some(picked.in_flight);
    Ok((route, backend, picked.index, picked.set_cookie))
}

/// The request as the upstream gets it: hop-by-hop fields removed (but the upgrade asked for,
/// which is for the next hop), `X-Forwarded-*`, `x-request-id`, `traceparent`, the route's
/// header rules, and a gRPC call's remaining time.
fn rewrite_request(
    ctx: &ConnCtx,
    parts: &mut Parts,
    route: &RouteRt,
    upgrade: Option<HeaderValue>,
    call: Option<grpc::Deadline>,
    done: &mut Completion,
) -> Result<(), ProxyError> {
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    if let Some(protocols) = upgrade {
        upgrade::set_headers(h, protocols);
    }
    headers::append_forwarded(h, &ctx.client_ip, &headers::PROTO_HTTP);
    done.set_request_id(&headers::ensure_request_id(h, &mut ThreadRng));
    trace::propagate(h, &mut ThreadRng);
    headers::rewrite(h, &route.request_headers);
    if let Some(call) = call {
        let left = call
            .remaining(Instant::now())
            .ok_or(ProxyError::DeadlineExceeded(call.timeout))?;
        h.insert(grpc::GRPC_TIMEOUT, grpc::format_timeout(left));
    }
    Ok(())
}

/// The response head as the client gets it: hop-by-hop fields removed (but the upgrade headers
/// of a 101 that answers an upgrade request), then the route's header rules.
fn rewrite_response(
    h: &mut http::HeaderMap,
    status: StatusCode,
    asked_upgrade: Option<HeaderValue>,
    route: &RouteRt,
) {
    let switched = match asked_upgrade {
        Some(asked) if status == StatusCode::SWITCHING_PROTOCOLS => {
            Some(upgrade::switched_to(h, &asked))
        }
        _ => None,
    };
    headers::strip_hop_by_hop(h);
    if let Some(protocols) = switched {
        upgrade::set_headers(h, protocols);
    }
    headers::rewrite(h, &route.response_headers);
}

/// Limits checked on the parsed head. hyper enforces a hard ceiling at twice these (see
/// [`super::builder`]); between the two, the client gets our error with its reason header.
pub(crate) fn check_limits<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
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

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The host a request is for: the URI's authority (HTTP/2 `:authority`, or an absolute-form
/// HTTP/1.1 target), else the `Host` header.
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST)?.to_str().ok(),
    }
}

/// Puts the request target in the form the upstream protocol needs. HTTP/1.1 upstreams get an
/// origin-form target and a `Host` header; HTTP/2 upstreams get an absolute URI (hyper sends it
/// as `:scheme` and `:authority`) and no `Host`. The downstream's host is kept either way.
pub(crate) fn set_target(
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
