//! Upstream connection pools, owned by the proxy rather than hyper's legacy client (see
//! `../shared/PERFORMANCE.md`: its checkout path and channel hops were the largest user-space
//! cost of a plain hyper proxy).
//!
//! HTTP/1.1: a stack of idle connections per endpoint and worker. Connections are not spawned
//! as tasks: the request's task drives its connection while it sends and while it streams the
//! response ([`PooledBody`]), so an exchange involves no task hops. A connection goes back on
//! the stack when its response body has been read to the end; one dropped early is closed,
//! since the rest of its response is still on the wire. The most recently used connection is
//! taken first: it is the one least likely to have been closed by the server.
//!
//! HTTP/2: one multiplexed connection per endpoint and worker, opened on first use by one task
//! while others wait for it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use tokio::time::Instant;

use super::ClusterRt;
use super::connect::{self, H1Conn};
use crate::body::RequestBody;
use crate::breaker::Overflow;
use crate::error::ProxyError;

#[derive(Default)]
pub struct Pool {
    h1: Mutex<Vec<Idle>>,
    /// The HTTP/2 connection and when a request last took it.
    h2: Mutex<Option<(http2::SendRequest<RequestBody>, Instant)>>,
    /// Held while an HTTP/2 connection is being opened, so concurrent first requests share one.
    h2_connecting: tokio::sync::Mutex<()>,
}

struct Idle {
    conn: Box<H1Conn>,
    since: Instant,
}

/// The pools are only touched for a few instructions at a time and never across an await, so a
/// panic while holding one cannot leave it half-updated: ignore poisoning.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A live idle HTTP/1.1 connection, ready for a request.
    async fn take_h1(&self, idle_timeout: Duration) -> Option<Box<H1Conn>> {
        loop {
            let idle = lock(&self.h1).pop()?;
            if idle.since.elapsed() >= idle_timeout {
                continue;
            }
            let mut conn = idle.conn;
            // One poll lets the connection notice a close by the server and finish moving to
            // idle; a connection that is not ready after it is not worth waiting for.
            if std::future::poll_fn(|cx| Poll::Ready(conn.poll_usable(cx))).await {
                return Some(conn);
            }
        }
    }

    fn put_h1(&self, conn: Box<H1Conn>) {
        lock(&self.h1).push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    fn h2_sender(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut slot = lock(&self.h2);
        match &mut *slot {
            Some((s, used)) if !s.is_closed() => {
                *used = Instant::now();
                Some(s.clone())
            }
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    async fn h2_connect(
        &self,
        cluster: &Arc<ClusterRt>,
        ep: usize,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let _one_at_a_time = self.h2_connecting.lock().await;
        if let Some(s) = self.h2_sender() {
            return Ok(s);
        }
        let permit = match cluster.limits.try_acquire(Overflow::Connections) {
            Ok(p) => p,
            // At the cap: another worker's connection to the endpoint carries this stream too,
            // or the request waits, as a pending one, for a connection to close.
            Err(_) => return wait_h2(cluster, ep).await,
        };
        let sender = connect::http2(cluster, cluster.endpoints[ep].address, permit).await?;
        *lock(&self.h2) = Some((sender.clone(), Instant::now()));
        Ok(sender)
    }

    /// Drops connections idle for `idle_timeout` or already closed by the server. An HTTP/2
    /// connection leaves the pool when no request has taken it for `idle_timeout`; streams
    /// still open on it finish first, then it closes.
    pub fn reap(&self, idle_timeout: Duration) {
        lock(&self.h1).retain(|i| i.since.elapsed() < idle_timeout && !i.conn.sender.is_closed());
        let mut h2 = lock(&self.h2);
        if h2
            .as_ref()
            .is_some_and(|(s, used)| s.is_closed() || used.elapsed() >= idle_timeout)
        {
            *h2 = None;
        }
    }

    /// Closes one idle HTTP/1.1 connection, if there is one: frees its connection permit for a
    /// request waiting at the cluster's connection cap.
    fn evict_one(&self) -> bool {
        lock(&self.h1).pop().is_some()
    }

    pub fn idle_count(&self) -> usize {
        lock(&self.h1).len() + usize::from(lock(&self.h2).is_some())
    }
}

/// An attempt that failed. `unsent` gives the request back when it never reached the
/// upstream, so a retry can send it as it is.
pub struct Failed {
    pub error: ProxyError,
    pub unsent: Option<Request<RequestBody>>,
}

impl Failed {
    fn sent(error: ProxyError) -> Self {
        Failed {
            error,
            unsent: None,
        }
    }
}

/// A connection for a request to endpoint `ep`: an idle one of this worker's, else a new one
/// within the cluster's connection limit, else (at the limit) the first to free up, waited for
/// as a pending request. True when it was reused.
async fn checkout_h1(
    cluster: &Arc<ClusterRt>,
    ep: usize,
) -> Result<(Box<H1Conn>, bool), ProxyError> {
    if let Some(c) = cluster.pool(ep).take_h1(cluster.idle_timeout).await {
        return Ok((c, true));
    }
    // Boxed: connecting and waiting are the rare paths, and their futures would otherwise make
    // every request's future (and every move of it) several hundred bytes larger.
    match cluster.limits.try_acquire(Overflow::Connections) {
        Ok(permit) => Box::pin(connect::http1(
            cluster,
            cluster.endpoints[ep].address,
            permit,
        ))
        .await
        .map(|c| (c, false)),
        Err(_) => Box::pin(wait_h1(cluster, ep)).await,
    }
}

/// At the connection cap: waits, holding a `pending_requests` permit, until a connection to
/// `ep` is idle in any worker's pool or a permit is free. Idle connections to other endpoints
/// are closed to make room, so a cap reached by connections nobody uses never stalls requests.
/// The caller's attempt deadline bounds the wait.
async fn wait_h1(cluster: &Arc<ClusterRt>, ep: usize) -> Result<(Box<H1Conn>, bool), ProxyError> {
    let _pending = cluster.acquire(Overflow::PendingRequests)?;
    let limit = &cluster.limits.connections;
    let _waiter = limit.waiter();
    loop {
        let Some(freed) = limit.freed() else {
            return Err(cluster.overflowed(Overflow::Connections));
        };
        let mut freed = std::pin::pin!(freed);
        freed.as_mut().enable();
        for pool in cluster.pools(ep) {
            if let Some(c) = pool.take_h1(cluster.idle_timeout).await {
                return Ok((c, true));
            }
        }
        let mut permit = limit.try_acquire();
        if permit.is_none() && evict_idle(cluster) {
            permit = limit.try_acquire();
        }
        if let Some(permit) = permit {
            let addr = cluster.endpoints[ep].address;
            return connect::http1(cluster, addr, permit)
                .await
                .map(|c| (c, false));
        }
        freed.await;
    }
}

/// Closes one idle connection anywhere in the cluster.
fn evict_idle(cluster: &ClusterRt) -> bool {
    (0..cluster.endpoints.len()).any(|ep| cluster.pools(ep).iter().any(Pool::evict_one))
}

/// At the connection cap, for HTTP/2: shares another worker's connection to `ep`, or waits
/// as a pending request until a connection permit is free.
async fn wait_h2(
    cluster: &Arc<ClusterRt>,
    ep: usize,
) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    let _pending = cluster.acquire(Overflow::PendingRequests)?;
    let limit = &cluster.limits.connections;
    let _waiter = limit.waiter();
    loop {
        let Some(freed) = limit.freed() else {
            return Err(cluster.overflowed(Overflow::Connections));
        };
        let mut freed = std::pin::pin!(freed);
        freed.as_mut().enable();
        if let Some(s) = cluster.pools(ep).iter().find_map(Pool::h2_sender) {
            return Ok(s);
        }
        if let Some(permit) = limit.try_acquire() {
            let sender = connect::http2(cluster, cluster.endpoints[ep].address, permit).await?;
            *lock(&cluster.pool(ep).h2) = Some((sender.clone(), Instant::now()));
            return Ok(sender);
        }
        freed.await;
    }
}

pub async fn send_http1(
    cluster: &Arc<ClusterRt>,
    ep: usize,
    mut req: Request<RequestBody>,
) -> Result<Response<PooledBody>, Failed> {
    loop {
        let (mut conn, reused) = match checkout_h1(cluster, ep).await {
            Ok(c) => c,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(req),
                });
            }
        };
        match conn.send(req).await {
            Ok(resp) => {
                // Ambiguous framing: 502, and the connection (dropped here) is never reused.
                if let Some(problem) = crate::framing::response_problem(resp.headers()) {
                    return Err(Failed::sent(ProxyError::UpstreamInvalid(problem)));
                }
                let ret = Return {
                    cluster: cluster.clone(),
                    ep,
                    conn,
                };
                let mut resp = resp.map(|inner| PooledBody::new(inner, Upstream::Http1(ret)));
                // A body broken from its first bytes (a bad chunk size, say) that arrived with
                // the head still gets a 502 instead of a 200 that dies.
                std::future::poll_fn(|cx| Poll::Ready(resp.body_mut().peek(cx)))
                    .await
                    .map_err(|e| Failed::sent(ProxyError::UpstreamBadResponse(e)))?;
                return Ok(resp);
            }
            // A pooled connection the server closed while it sat idle: the request was never
            // written, so it can go on another connection.
            Err(mut e) if reused && e.message().is_some() => {
                req = e.take_message().expect("checked above");
            }
            Err(mut e) => {
                let unsent = e.take_message();
                return Err(Failed {
                    error: ProxyError::from_upstream(e.into_error()),
                    unsent,
                });
            }
        }
    }
}

pub async fn send_http2(
    cluster: &Arc<ClusterRt>,
    ep: usize,
    mut req: Request<RequestBody>,
) -> Result<Response<PooledBody>, Failed> {
    let pool = cluster.pool(ep);
    let mut retried = false;
    loop {
        let mut sender = match pool.h2_sender() {
            Some(s) => s,
            // Boxed for the same reason as the HTTP/1.1 connect.
            None => match Box::pin(pool.h2_connect(cluster, ep)).await {
                Ok(s) => s,
                Err(error) => {
                    return Err(Failed {
                        error,
                        unsent: Some(req),
                    });
                }
            },
        };
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp.map(|inner| PooledBody::new(inner, Upstream::Task))),
            // The connection went away before the request was queued on it: open a new one once.
            Err(mut e) if !retried && e.message().is_some() => {
                retried = true;
                req = e.take_message().expect("checked above");
            }
            Err(mut e) => {
                let unsent = e.take_message();
                return Err(Failed {
                    error: ProxyError::from_upstream(e.into_error()),
                    unsent,
                });
            }
        }
    }
}

/// Where an HTTP/1.1 connection goes back when its response is done.
struct Return {
    cluster: Arc<ClusterRt>,
    ep: usize,
    conn: Box<H1Conn>,
}

enum Upstream {
    /// The connection this response arrives on, driven by whoever polls the body.
    Http1(Return),
    /// Released (pooled, or closed); also the HTTP/1.1 state after the body ended.
    Done,
    /// The connection runs as its own task (HTTP/2, and the dedicated connection of an upgrade
    /// request); nothing to drive or return.
    Task,
}

/// An upstream response body. For HTTP/1.1 it drives the connection as it is polled, and returns
/// the connection to the pool the moment the body has been read to its end.
pub struct PooledBody {
    inner: Incoming,
    upstream: Upstream,
    /// A frame read ahead by [`PooledBody::peek`], returned first.
    peeked: Option<Frame<Bytes>>,
}

impl PooledBody {
    fn new(inner: Incoming, upstream: Upstream) -> Self {
        let mut body = PooledBody {
            inner,
            upstream,
            peeked: None,
        };
        if body.inner.is_end_stream() {
            body.release();
        }
        body
    }

    /// Looks at whatever of the body has already arrived, without waiting: an error there is
    /// returned now; a frame is kept for the first `poll_frame`.
    fn peek(&mut self, cx: &mut Context<'_>) -> Result<(), hyper::Error> {
        if self.inner.is_end_stream() {
            return Ok(());
        }
        match Pin::new(&mut *self).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Err(e),
            Poll::Ready(Some(Ok(frame))) => {
                self.peeked = Some(frame);
                Ok(())
            }
            Poll::Ready(None) | Poll::Pending => Ok(()),
        }
    }

    /// The body of a response on a connection that runs as its own task and is never pooled.
    pub fn detached(inner: Incoming) -> Self {
        PooledBody::new(inner, Upstream::Task)
    }

    fn release(&mut self) {
        if let Upstream::Http1(r) = std::mem::replace(&mut self.upstream, Upstream::Done)
            && !r.conn.sender.is_closed()
        {
            r.cluster.pool(r.ep).put_h1(r.conn);
            // A request waiting at the connection cap can take it.
            r.cluster.limits.connections.wake();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.peeked.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Upstream::Http1(r) = &mut this.upstream
            && !r.conn.drive(cx)
        {
            // The connection ended. Dropping it drops the sender half of the body, so a body
            // cut short ends in an error instead of waiting forever.
            this.upstream = Upstream::Done;
        }
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // An error mid-body leaves the connection unusable: dropping it closes it.
            Poll::Ready(Some(Err(_))) => this.upstream = Upstream::Done,
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.peeked.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let peeked = self
            .peeked
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let inner = self.inner.size_hint();
        // Upper first: set_lower asserts it stays at or below the upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + peeked);
        }
        hint.set_lower(inner.lower() + peeked);
        hint
    }
}
