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
use crate::body::CaptureCell;
use crate::body::{ObservedBody, ProxyBody, RequestBody};
use crate::breaker::{Admission, Overflow};
use crate::context::ConnCtx;
use crate::error::ProxyError;
use crate::fault::{self, Abort};
use crate::grpc::{self, DeadlineBody};
use crate::headers;
use crate::health::Outcome;
use crate::observe::Completion;
use crate::retry::backoff::server_delay;
use crate::retry::policy::{DEADLINE_MS, attempt_deadline, deadline_ms_header, is_idempotent};
use crate::retry::{Decision, Failed, Outcome as RetryOutcome, RouteRetry};
use crate::rng::ThreadRng;
use crate::route::RequestView;
use crate::snapshot::FaultRt;
use crate::snapshot::{ListenerRt, RouteRt};
use crate::trace;
use crate::upstream::pool::PooledBody;
use crate::upstream::{ClusterRt, PickInput, pool};
use remora_config::model::RetryOn;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

/// The attempts a response took (the first included).
pub const ATTEMPTS: http::HeaderName = http::HeaderName::from_static("x-remora-attempts");
/// Set when a retry was skipped because the cluster's retry budget was spent.
pub const BUDGET_EXHAUSTED: http::HeaderName =
    http::HeaderName::from_static("x-remora-retry-budget-exhausted");

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
    let mut resp = match outcome {
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
    // How many attempts it took, on proxied and generated responses alike.
    if done.attempts > 0 {
        resp.headers_mut()
            .insert(ATTEMPTS, HeaderValue::from(done.attempts));
    }
    if done.budget_exhausted {
        resp.headers_mut()
            .insert(BUDGET_EXHAUSTED, HeaderValue::from_static("true"));
    }
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
    if let Some(limit) = &listener.rate_limit {
        limit.check(start)?;
    }
    let caller = ctx.peer_identity.get().and_then(|v| v.to_str().ok());
    // An mTLS connection opened before this sidecar's certificate expired carries no request
    // after it: fail closed on the connection too, not only at the handshake.
    if caller.is_some() && !crate::tls::global().has_identity() {
        return Err(ProxyError::NoIdentity(listener.name.clone()));
    }
    if listener.normalize_paths {
        normalize_path(&mut req)?;
    }
    if let Some(authz) = &listener.authz
        && !authz.check_request(
            caller,
            req.uri().path(),
            req.method(),
            ctx.port.get().copied(),
        )
    {
        return Err(ProxyError::Unauthorized("by the listener's rules"));
    }
    let dst = ctx.original_dst.get().copied();
    let (route, backend) = choose_route(listener, dst, &ctx.shared.metrics, &req, done)?;
    if let Some(authz) = &route.authz
        && !authz.check_request(
            caller,
            req.uri().path(),
            req.method(),
            ctx.port.get().copied(),
        )
    {
        return Err(ProxyError::Unauthorized("by the route's rules"));
    }
    if let Some(limit) = &route.rate_limit {
        limit.check(start)?;
    }
    let is_grpc = call.is_some() || grpc::is_grpc(req.headers());
    if let Some(fault) = &route.fault {
        inject_fault(fault, &req, is_grpc, done).await?;
    }
    // The route timeout runs from here: an injected delay stands in for the caller's own
    // latency, not the upstream's. A gRPC deadline and a previous hop's deadline are absolute.
    let routed = Instant::now();
    let cluster = route.backends[backend].cluster.clone();
    // Likewise outbound: a pooled mTLS connection outliving the certificate is not used.
    if cluster.config.mtls.is_some() && !crate::tls::global().has_identity() {
        return Err(ProxyError::NoIdentity(cluster.name.clone()));
    }
    if let Some(breaker) = &cluster.breaker
        && breaker.admit(routed) == Admission::Rejected
    {
        return Err(ProxyError::CircuitOpen(cluster.name.clone()));
    }
    done.permit = Some(cluster.acquire(Overflow::Requests)?);
    let input = PickInput {
        headers: req.headers(),
        uri: req.uri(),
        client_ip: ctx.peer.ip(),
    };
    let picked = cluster.pick(&input, &mut ThreadRng)?;
    let mut ep = picked.index;
    done.upstream = Some(cluster.endpoints[ep].address);
    done.in_flight = Some(picked.in_flight);
    let set_cookie = picked.set_cookie;
    let addr = cluster.endpoints[ep].address;

    // The earliest of the route timeout, the gRPC call's deadline and the previous hop's.
    let mut deadline = Deadline::route(routed, route.timeout);
    if let Some(c) = call {
        deadline.cap(c.at, ProxyError::DeadlineExceeded(c.timeout));
    }
    if let Some(left) = hop_deadline(req.headers()) {
        deadline.cap(start + left, ProxyError::UpstreamTimeout(left));
    }

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

    let mut resp = match upgrade {
        // One attempt: an upgrade is not replayed. Boxed: upgrades are rare, and their future
        // would enlarge every request's.
        Some(up) => {
            done.attempts = 1;
            let req = Request::from_parts(parts, body);
            let send = Box::pin(upgrade::send(&cluster, addr, req, up, tunnels));
            let sent_at = Instant::now();
            match tokio::time::timeout_at(deadline.at, send).await {
                Ok(Ok(resp)) => {
                    observe_response(&cluster, ep, resp.status(), sent_at);
                    resp
                }
                Ok(Err(err)) => {
                    if err.is_gateway_failure() {
                        cluster.record(ep, Outcome::GatewayFailure, None);
                    }
                    return Err(err);
                }
                Err(_) => {
                    cluster.record(ep, Outcome::GatewayFailure, None);
                    return Err(deadline.error);
                }
            }
        }
        None => {
            let route_retry = route.retry.as_ref().unwrap_or(&cluster.retry);
            let exchange = Exchange {
                ctx,
                cluster: &cluster,
                retry: route_retry,
                limits,
                body_stats,
                is_grpc,
                deadline,
            };
            Box::pin(exchange.run(&mut ep, parts, body, done)).await?
        }
    };
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

/// Rewrites the request's path to its normalized form (see [`crate::authz::normalize`]), so
/// that what the rules matched is what the upstream gets.
fn normalize_path<B>(req: &mut Request<B>) -> Result<(), ProxyError> {
    let uri = req.uri();
    let normalized = match crate::authz::normalize(uri.path()) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(()),
        Ok(std::borrow::Cow::Owned(p)) => p,
        Err(e) => return Err(ProxyError::BadRequest(e.message())),
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{normalized}?{q}"),
        None => normalized,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| ProxyError::BadRequest("the normalized path is not a valid URI"))?,
    );
    *req.uri_mut() = Uri::from_parts(parts)
        .map_err(|_| ProxyError::BadRequest("the request target is invalid"))?;
    Ok(())
}

/// The earliest deadline a request is under, and the error it ends in when that one passes.
struct Deadline {
    at: Instant,
    error: ProxyError,
}

impl Deadline {
    fn route(start: Instant, timeout: std::time::Duration) -> Self {
        Deadline {
            at: start + timeout,
            error: ProxyError::UpstreamTimeout(timeout),
        }
    }

    fn cap(&mut self, at: Instant, error: ProxyError) {
        if at < self.at {
            *self = Deadline { at, error };
        }
    }

    /// The error for this deadline (the `ProxyError` it holds is not `Clone`).
    fn expired(&self) -> ProxyError {
        match &self.error {
            ProxyError::DeadlineExceeded(d) => ProxyError::DeadlineExceeded(*d),
            ProxyError::UpstreamTimeout(d) => ProxyError::UpstreamTimeout(*d),
            _ => ProxyError::UpstreamTimeout(std::time::Duration::ZERO),
        }
    }
}

/// The time a previous hop left this request (its `x-remora-deadline-ms`), so that this hop
/// gives up when the caller has.
fn hop_deadline(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    let v = headers.get(DEADLINE_MS)?.to_str().ok()?;
    v.trim().parse().ok().map(std::time::Duration::from_millis)
}

/// Applies the route's fault to this request: an injected delay is waited out here; an abort
/// comes back as the error to answer with.
async fn inject_fault(
    fault: &FaultRt,
    req: &Request<Incoming>,
    is_grpc: bool,
    done: &mut Completion,
) -> Result<(), ProxyError> {
    let plan = fault::decide(
        &fault.config,
        SystemTime::now(),
        req.headers(),
        is_grpc,
        &mut ThreadRng,
    );
    if let Some(delay) = plan.delay {
        fault.delays.inc();
        done.fault = Some("delay");
        tokio::time::sleep(delay).await;
    }
    let Some(abort) = plan.abort else {
        return Ok(());
    };
    fault.aborts.inc();
    done.fault = Some(match plan.delay {
        Some(_) => "delay+abort",
        None => "abort",
    });
    Err(match abort {
        Abort::Http(status) => ProxyError::FaultAbort {
            http: status.as_u16(),
            grpc: None,
        },
        Abort::Grpc(code) => ProxyError::FaultAbort {
            http: StatusCode::OK.as_u16(),
            grpc: Some(code),
        },
    })
}

/// Latency and outlier bookkeeping for a response head from endpoint `ep`.
fn observe_response(cluster: &ClusterRt, ep: usize, status: StatusCode, sent_at: Instant) {
    let rtt = sent_at.elapsed();
    cluster.metrics.latency.observe(rtt.as_secs_f64());
    cluster.record(ep, Outcome::from_status(status.as_u16()), Some(rtt));
}

/// One request's attempts at a cluster: the first, and the retries its policy, the cluster's
/// budget and the retries limit allow.
struct Exchange<'a> {
    ctx: &'a ConnCtx,
    cluster: &'a Arc<ClusterRt>,
    retry: &'a RouteRetry,
    limits: &'a Limits,
    body_stats: Option<Arc<crate::body::RequestBodyStats>>,
    is_grpc: bool,
    deadline: Deadline,
}

/// What a retry needs to send the request again when the attempt did not hand it back: the
/// head (copied before the first attempt) and the body (captured as it streams).
struct Replay {
    method: http::Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
    body: Option<Arc<CaptureCell>>,
}

impl Replay {
    /// The request again, if its body (if any) was all kept already.
    fn request(&self) -> Option<Request<RequestBody>> {
        let body = match &self.body {
            None => RequestBody::empty(),
            Some(c) => c.replay_now()?,
        };
        Some(self.with_body(body))
    }

    /// Whether the request may yet be had again: its body did not outgrow the buffer.
    fn replayable(&self) -> bool {
        self.body.as_ref().is_none_or(|c| c.replayable())
    }

    /// The request again, waiting until `until` for the rest of a body the failed attempt had
    /// not finished reading (see [`CaptureCell::replay`]).
    async fn request_by(&self, until: Instant) -> Option<Request<RequestBody>> {
        let body = match &self.body {
            None => RequestBody::empty(),
            Some(c) => tokio::time::timeout_at(until, c.replay()).await.ok()??,
        };
        Some(self.with_body(body))
    }

    fn with_body(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Exchange<'_> {
    async fn run(
        self,
        ep: &mut usize,
        parts: Parts,
        mut body: RequestBody,
        done: &mut Completion,
    ) -> Result<Response<crate::upstream::pool::PooledBody>, ProxyError> {
        let cluster = self.cluster;
        let policy = &self.retry.policy;
        let may_retry = policy.max_attempts > 1;
        // A failed attempt hands the request back when none of it was sent (connect failure, a
        // pooled HTTP/1.1 connection found closed). Any other retry needs a copy of the head,
        // and of the body as it streams (up to the buffer limit).
        // Hedging: idempotent requests without a body, when there is another endpoint to ask.
        let hedge_after = policy.hedge_after.filter(|_| {
            is_idempotent(&parts.method)
                && http_body::Body::is_end_stream(&body)
                && cluster.endpoints.len() > 1
        });
        if may_retry || hedge_after.is_some() {
            cluster.budget.deposit(Instant::now());
        }
        let wants_replay = may_retry && needs_replay(policy, cluster.protocol);
        let replay = (wants_replay || hedge_after.is_some()).then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: (!http_body::Body::is_end_stream(&body))
                .then(|| body.capture(policy.buffer_limit)),
        });
        let method = parts.method.clone();
        let mut req = Request::from_parts(parts, body);
        let mut _retry_permit = None;
        let mut attempts = 0;
        loop {
            let now = Instant::now();
            // Counted only once it is sent: a passed deadline stops a request before it goes.
            let Some(until) = attempt_deadline(now, self.deadline.at, policy.per_try_timeout)
            else {
                return Err(self.deadline.expired());
            };
            attempts += 1;
            done.attempts = attempts;
            set_deadline(req.headers_mut(), until - now, self.is_grpc);
            let sent = match (hedge_after, &replay) {
                (Some(after), Some(replay)) if attempts == 1 => {
                    let hedged = self.hedged(ep, req, replay, after, until, done);
                    let sent = tokio::time::timeout_at(until, hedged).await;
                    attempts = done.attempts;
                    sent
                }
                _ => match cluster.protocol {
                    UpstreamProtocol::Http1 => {
                        tokio::time::timeout_at(until, pool::send_http1(cluster, *ep, req)).await
                    }
                    UpstreamProtocol::Http2 => {
                        tokio::time::timeout_at(until, pool::send_http2(cluster, *ep, req)).await
                    }
                },
            };
            _retry_permit = None;
            let (outcome, result, unsent) = match sent {
                Ok(Ok(resp)) => {
                    observe_response(cluster, *ep, resp.status(), now);
                    let o =
                        RetryOutcome::from_response(resp.status(), resp.headers(), self.is_grpc);
                    (o, Ok(resp), None)
                }
                Ok(Err(failed)) => {
                    // A failure the request body caused is the client's (413, 408, 400), not
                    // the upstream's; our own limits are not the upstream's either.
                    let limit = self.limits.max_request_body_bytes;
                    let timeout = self.limits.request_body_timeout;
                    if let Some(err) = self
                        .body_stats
                        .as_ref()
                        .and_then(|s| s.error(limit, timeout))
                    {
                        return Err(err);
                    }
                    if matches!(failed.error, ProxyError::Overflow { .. }) {
                        return Err(failed.error);
                    }
                    if failed.error.is_gateway_failure() {
                        cluster.record(*ep, Outcome::GatewayFailure, None);
                    }
                    let o = classify(&failed);
                    (o, Err(failed.error), failed.unsent)
                }
                // Whichever deadline was the earlier one passed.
                Err(_) => {
                    cluster.record(*ep, Outcome::GatewayFailure, None);
                    let err = match policy.per_try_timeout {
                        Some(t) if until < self.deadline.at => ProxyError::UpstreamTimeout(t),
                        _ => self.deadline.expired(),
                    };
                    (RetryOutcome::Timeout, Err(err), None)
                }
            };
            if let Some(breaker) = &cluster.breaker {
                breaker.record(!is_failure(outcome), Instant::now());
            }
            if !may_retry
                || !policy
                    .retry_on
                    .iter()
                    .any(|&on| outcome.matches(on, &policy.retriable_status_codes))
            {
                return result;
            }
            let body_replayable =
                unsent.is_some() || replay.as_ref().is_some_and(Replay::replayable);
            let pushback = result
                .as_ref()
                .ok()
                .and_then(|r| server_delay(r.headers(), SystemTime::now(), policy.max_retry_after));
            let failed = Failed {
                outcome,
                pushback,
                method: &method,
                body_replayable,
                attempts,
                now: Instant::now(),
                route_deadline: self.deadline.at,
            };
            let Decision::Retry { after } = self.retry.decide(&failed, &mut ThreadRng) else {
                return result;
            };
            let next = match (unsent, &replay) {
                (Some(req), _) => Some(req),
                (None, Some(replay)) => replay.request_by(self.deadline.at).await,
                (None, None) => None,
            };
            let Some(mut next) = next else {
                return result;
            };
            let Some(permit) = self.extra_attempt(Instant::now(), done) else {
                return result;
            };
            _retry_permit = Some(permit);
            let input = PickInput {
                headers: next.headers(),
                uri: next.uri(),
                client_ip: self.ctx.peer.ip(),
            };
            let Ok(picked) = cluster.pick_other(&input, *ep, &mut ThreadRng) else {
                return result;
            };
            // The failed response is dropped unread: its connection closes.
            drop(result);
            *ep = picked.index;
            let addr = cluster.endpoints[*ep].address;
            done.upstream = Some(addr);
            done.in_flight = Some(picked.in_flight);
            if cluster.protocol == UpstreamProtocol::Http1 && next.version() < Version::HTTP_11 {
                *next.version_mut() = Version::HTTP_11;
            }
            cluster.resilience.retries.inc();
            tracing::debug!(cluster = %cluster.name, %addr, attempt = attempts + 1, ?after, ?outcome, "retrying");
            tokio::time::sleep(after).await;
            req = next;
        }
    }
}

type Sending<'a> =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody>, pool::Failed>> + Send + 'a>>;

impl Exchange<'_> {
    /// What a retry or a hedge must get before it goes: a closed consecutive-failure breaker,
    /// a withdrawal from the retry budget (else `x-remora-retry-budget-exhausted`), and a
    /// permit of the cluster's `retries` limit, held while the attempt runs. `None`: not
    /// sent (the refusal counted).
    fn extra_attempt(&self, now: Instant, done: &mut Completion) -> Option<crate::breaker::Permit> {
        let cluster = self.cluster;
        if cluster.breaker.as_ref().is_some_and(|b| !b.allows_retry()) {
            return None;
        }
        if !cluster.budget.try_withdraw(now) {
            cluster.resilience.budget_exhausted.inc();
            done.budget_exhausted = true;
            return None;
        }
        match cluster.limits.try_acquire(Overflow::Retries) {
            Ok(permit) => Some(permit),
            Err(_) => {
                cluster.resilience.overflow(Overflow::Retries);
                None
            }
        }
    }

    fn send(&self, ep: usize, req: Request<RequestBody>) -> Sending<'_> {
        match self.cluster.protocol {
            UpstreamProtocol::Http1 => Box::pin(pool::send_http1(self.cluster, ep, req)),
            UpstreamProtocol::Http2 => Box::pin(pool::send_http2(self.cluster, ep, req)),
        }
    }

    /// The first attempt, hedged: if it has not answered after `after`, the same request goes
    /// to another endpoint too (paid for like a retry, from the budget and the retries limit),
    /// and the first response wins; the other attempt is dropped, which cancels it. When one
    /// fails, the other's result is the answer. `ep` ends as the endpoint that answered.
    async fn hedged(
        &self,
        ep: &mut usize,
        req: Request<RequestBody>,
        replay: &Replay,
        after: std::time::Duration,
        until: Instant,
        done: &mut Completion,
    ) -> Result<Response<PooledBody>, pool::Failed> {
        let cluster = self.cluster;
        let mut first = self.send(*ep, req);
        tokio::select! {
            r = &mut first => return r,
            _ = tokio::time::sleep(after) => {}
        }
        let Some(mut second_req) = replay.request() else {
            return first.await;
        };
        let now = Instant::now();
        let Some(_permit) = self.extra_attempt(now, done) else {
            return first.await;
        };
        let input = PickInput {
            headers: second_req.headers(),
            uri: second_req.uri(),
            client_ip: self.ctx.peer.ip(),
        };
        let picked = match cluster.pick_other(&input, *ep, &mut ThreadRng) {
            Ok(p) if p.index != *ep => p,
            _ => return first.await,
        };
        set_deadline(
            second_req.headers_mut(),
            until.saturating_duration_since(now),
            self.is_grpc,
        );
        cluster.resilience.hedges.inc();
        done.attempts += 1;
        let hedge_ep = picked.index;
        let mut second = self.send(hedge_ep, second_req);
        let take_second = |ep: &mut usize, done: &mut Completion, in_flight| {
            *ep = hedge_ep;
            done.upstream = Some(cluster.endpoints[hedge_ep].address);
            done.in_flight = Some(in_flight);
        };
        tokio::select! {
            r = &mut first => match r {
                Ok(resp) => Ok(resp),
                Err(_) => {
                    let r = second.await;
                    take_second(ep, done, picked.in_flight);
                    r
                }
            },
            r = &mut second => match r {
                Ok(resp) => {
                    take_second(ep, done, picked.in_flight);
                    Ok(resp)
                }
                Err(_) => first.await,
            },
        }
    }
}

/// Whether retries under `policy` may need the request again after some of it was sent: any
/// condition but a connect failure (and, on HTTP/1.1, a refused stream, which there only ever
/// means a request handed back unsent).
fn needs_replay(policy: &remora_config::model::RetryPolicy, protocol: UpstreamProtocol) -> bool {
    policy.retry_on.iter().any(|&on| match on {
        RetryOn::ConnectFailure => false,
        RetryOn::RefusedStream => protocol == UpstreamProtocol::Http2,
        _ => true,
    })
}

/// What a failed attempt means for retrying.
fn classify(failed: &pool::Failed) -> RetryOutcome {
    match &failed.error {
        ProxyError::ConnectTimeout { .. }
        | ProxyError::ConnectFailed { .. }
        | ProxyError::Handshake { .. }
        | ProxyError::UpstreamTls { .. }
        | ProxyError::NoIdentity(_)
        | ProxyError::NoEndpoint(_) => RetryOutcome::ConnectFailure,
        // Handed back unsent: the upstream never saw it.
        _ if failed.unsent.is_some() => RetryOutcome::RefusedStream,
        ProxyError::UpstreamReset(e) if refused_stream(e) => RetryOutcome::RefusedStream,
        _ => RetryOutcome::Reset,
    }
}

/// An HTTP/2 `REFUSED_STREAM` somewhere in the error's causes: the upstream promises it did
/// not process the request (RFC 9113 section 8.7).
fn refused_stream(err: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = e.source();
    }
    false
}

/// What the consecutive-failure breaker counts as a failure: no response, a 5xx, or a gRPC
/// status that says the server is in trouble.
fn is_failure(outcome: RetryOutcome) -> bool {
    match outcome {
        RetryOutcome::Status(s) => s.is_server_error(),
        RetryOutcome::Grpc(code) => matches!(code, 4 | 13 | 14),
        _ => true,
    }
}

/// Tells the upstream how long this attempt has: `grpc-timeout` on a gRPC call, else
/// `x-remora-deadline-ms`.
fn set_deadline(h: &mut http::HeaderMap, left: std::time::Duration, is_grpc: bool) {
    if is_grpc {
        h.insert(grpc::GRPC_TIMEOUT, grpc::format_timeout(left));
    } else {
        h.insert(DEADLINE_MS, deadline_ms_header(left));
    }
}

/// The route for `req` and the backend it picks; both noted in `done`.
fn choose_route(
    listener: &ListenerRt,
    original_dst: Option<std::net::SocketAddr>,
    metrics: &crate::metrics::Metrics,
    req: &Request<Incoming>,
    done: &mut Completion,
) -> Result<(Arc<RouteRt>, usize), ProxyError> {
    // A call iptables redirected here for a destination outside the mesh goes there, whatever
    // its host says (only `passthrough: http` serves those as HTTP).
    if let (Some(dst), Some(passthrough)) = (original_dst, &listener.passthrough)
        && !listener.by_destination.contains_key(&dst)
    {
        let route = passthrough.route(dst, metrics);
        done.route = Some((route.clone(), 0));
        return Ok((route, 0));
    }
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
    // A call iptables redirected here, addressed by IP: the route to where it was going.
    let route = table
        .lookup(&view)
        .or_else(|| listener.route_to(original_dst?))
        .ok_or(ProxyError::NoRoute)?
        .clone();
    let backend = route.split.pick(&mut ThreadRng);
    done.route = Some((route.clone(), backend));
    Ok((route, backend))
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
    // Whoever the client says it is, only a verified certificate names the caller.
    h.remove(headers::X_REMORA_PEER_IDENTITY);
    if let Some(id) = ctx.peer_identity.get() {
        h.insert(headers::X_REMORA_PEER_IDENTITY, id.clone());
    }
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

    fn policy(retry_on: Vec<RetryOn>) -> remora_config::model::RetryPolicy {
        remora_config::model::RetryPolicy {
            retry_on,
            ..Default::default()
        }
    }

    #[test]
    fn a_head_copy_is_kept_only_for_retries_that_can_follow_a_sent_request() {
        use RetryOn::*;
        use UpstreamProtocol::*;
        // The default: connect failures and (on HTTP/1.1) refused streams always come with the
        // request handed back unsent.
        assert!(!needs_replay(
            &policy(vec![ConnectFailure, RefusedStream]),
            Http1
        ));
        // An HTTP/2 REFUSED_STREAM arrives after the request went out.
        assert!(needs_replay(
            &policy(vec![ConnectFailure, RefusedStream]),
            Http2
        ));
        for on in [
            Reset,
            FiveXx,
            GatewayError,
            RetriableStatusCodes,
            Unavailable,
        ] {
            assert!(
                needs_replay(&policy(vec![ConnectFailure, on]), Http1),
                "{on:?}"
            );
        }
    }

    #[test]
    fn failed_attempts_are_classified_by_what_the_upstream_can_have_seen() {
        let addr: std::net::SocketAddr = EP.parse().unwrap();
        let failed = |error, unsent| pool::Failed { error, unsent };
        let refused = ProxyError::ConnectFailed {
            addr,
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(
            classify(&failed(refused, None)),
            RetryOutcome::ConnectFailure
        );
        let timeout = ProxyError::ConnectTimeout {
            addr,
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(
            classify(&failed(timeout, None)),
            RetryOutcome::ConnectFailure
        );
        let unsent = Request::new(RequestBody::empty());
        let closed = ProxyError::UpstreamInvalid("closed");
        assert_eq!(
            classify(&failed(closed, Some(unsent))),
            RetryOutcome::RefusedStream
        );
        let bad = ProxyError::UpstreamInvalid("two Content-Length");
        assert_eq!(classify(&failed(bad, None)), RetryOutcome::Reset);
    }

    #[test]
    fn the_failure_breaker_counts_server_trouble_only() {
        assert!(!is_failure(RetryOutcome::Status(StatusCode::OK)));
        assert!(!is_failure(RetryOutcome::Status(StatusCode::NOT_FOUND)));
        assert!(is_failure(RetryOutcome::Status(StatusCode::BAD_GATEWAY)));
        assert!(is_failure(RetryOutcome::Reset));
        assert!(is_failure(RetryOutcome::Timeout));
        assert!(is_failure(RetryOutcome::Grpc(14)));
        assert!(!is_failure(RetryOutcome::Grpc(5)));
    }

    #[test]
    fn the_earliest_deadline_wins_and_names_its_error() {
        let now = Instant::now();
        let s = std::time::Duration::from_secs;
        let mut d = Deadline::route(now, s(10));
        d.cap(now + s(20), ProxyError::DeadlineExceeded(s(20)));
        assert_eq!(d.at, now + s(10));
        assert_eq!(d.expired().reason(), "upstream-timeout");
        d.cap(now + s(2), ProxyError::DeadlineExceeded(s(2)));
        assert_eq!(d.at, now + s(2));
        assert_eq!(d.expired().reason(), "deadline-exceeded");

        let mut h = http::HeaderMap::new();
        assert_eq!(hop_deadline(&h), None);
        h.insert(DEADLINE_MS, HeaderValue::from_static("1500"));
        assert_eq!(
            hop_deadline(&h),
            Some(std::time::Duration::from_millis(1500))
        );
        h.insert(DEADLINE_MS, HeaderValue::from_static("-3"));
        assert_eq!(hop_deadline(&h), None);
    }

    #[test]
    fn each_attempt_says_how_long_it_has() {
        let mut h = http::HeaderMap::new();
        set_deadline(&mut h, std::time::Duration::from_millis(2500), false);
        assert_eq!(h[DEADLINE_MS], "2500");
        assert!(!h.contains_key(grpc::GRPC_TIMEOUT));
        let mut h = http::HeaderMap::new();
        set_deadline(&mut h, std::time::Duration::from_millis(2500), true);
        assert!(h.contains_key(grpc::GRPC_TIMEOUT));
        assert!(!h.contains_key(DEADLINE_MS));
    }

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
