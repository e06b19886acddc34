//! Opaque TCP listeners: each accepted connection is forwarded, bytes both ways, to an endpoint
//! of the listener's cluster, chosen by the same balancer as HTTP.

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::Overflow;
use crate::context::ConnCtx;
use crate::health::Outcome;
use crate::http::watch;
use crate::io::CountingIo;
use crate::metrics::OpenGuard;
use crate::rng::ThreadRng;
use crate::upstream::{ClusterRt, PickInput, connect};

/// Forwards a downstream connection (plain TCP, or the decrypted side of an mTLS one) to an
/// endpoint of `cluster`.
pub async fn serve<S>(ctx: Arc<ConnCtx>, stream: S, cluster: Arc<ClusterRt>, idle: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    serve_to(ctx, stream, cluster, To::Picked, idle).await
}

/// Where in a cluster an opaque connection goes.
#[derive(Debug, Clone, Copy)]
pub enum To {
    /// The endpoint the balancer picks.
    Picked,
    /// This endpoint: a connection captured on its way there goes there (the app chose it).
    Endpoint(usize),
    /// This address, another port of one of the cluster's endpoints' hosts: a captured call to
    /// a meshed pod's port that is not in the config, sent with the cluster's mTLS.
    Address(std::net::SocketAddr),
}

/// [`serve`], to where `to` says, with the cluster's mTLS when it has some.
pub async fn serve_to<S>(
    ctx: Arc<ConnCtx>,
    stream: S,
    cluster: Arc<ClusterRt>,
    to: To,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = ctx.listener_rt();
    let metrics = listener.metrics.clone();
    let duration = ctx
        .shared
        .metrics
        .tcp_duration(&listener.name, listener.direction.as_str());
    let start = tokio::time::Instant::now();
    // A listener's rate limit applies per connection on opaque TCP.
    if let Some(limit) = &listener.rate_limit
        && limit.check(start).is_err()
    {
        tracing::debug!(peer = %ctx.peer, listener = %listener.name, "rate limited; closing");
        return;
    }
    let caller = ctx.peer_identity.get().and_then(|v| v.to_str().ok());
    if let Some(authz) = &listener.authz
        && !authz.check_connection(caller, ctx.port.get().copied())
    {
        tracing::debug!(peer = %ctx.peer, ?caller, listener = %listener.name, "not authorized; closing");
        return;
    }
    drop(listener);
    let _record = scopeguard(move || duration.observe(start.elapsed().as_secs_f64()));
    let _open = OpenGuard::new(&metrics.open, &metrics.total);

    // Opaque bytes carry no headers: only a `source_ip` hash key can apply.
    let no_headers = http::HeaderMap::new();
    let input = PickInput {
        headers: &no_headers,
        uri: &http::Uri::from_static("/"),
        client_ip: ctx.peer.ip(),
    };
    // The endpoint (for its load and health), unless the address is not one.
    let (ep, _in_flight) = match to {
        To::Endpoint(ep) => (Some(ep), Some(cluster.health.endpoint(ep).track())),
        To::Address(_) => (None, None),
        To::Picked => match cluster.pick(&input, &mut ThreadRng) {
            Ok(picked) => (Some(picked.index), Some(picked.in_flight)),
            Err(e) => {
                tracing::warn!(peer = %ctx.peer, error = %e, "closing TCP connection");
                return;
            }
        },
    };
    let _permit = match cluster.acquire(Overflow::Connections) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(peer = %ctx.peer, error = %e, "closing TCP connection");
            return;
        }
    };
    let addr = match (to, ep) {
        (To::Address(addr), _) => addr,
        (_, Some(ep)) => cluster.endpoints[ep].address,
        (_, None) => return,
    };
    let record = |outcome| {
        if let Some(ep) = ep {
            cluster.record(ep, outcome, None);
        }
    };
    let upstream = match connect::stream(&cluster, addr, None).await {
        Ok(s) => {
            record(Outcome::Success);
            s
        }
        Err(e) => {
            record(Outcome::GatewayFailure);
            tracing::warn!(peer = %ctx.peer, error = %e, "closing TCP connection");
            return;
        }
    };
    let _up_open = OpenGuard::new(&cluster.metrics.open, &cluster.metrics.total);
    let mut down = CountingIo::new(stream, metrics.bytes.clone(), Some(ctx.activity.clone()));
    let mut up = CountingIo::new(upstream, cluster.metrics.bytes.clone(), None);
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            if let Err(e) = res {
                tracing::debug!(peer = %ctx.peer, upstream = %addr, error = %e, "TCP proxy ended");
            }
        }
        _ = watch(&ctx.activity, idle, None) => {
            tracing::debug!(peer = %ctx.peer, upstream = %addr, "closing idle TCP connection");
        }
    }
}

/// Forwards a connection iptables redirected to a transparent listener on to where it was
/// going (`dst`), bytes both ways: traffic to destinations outside the mesh leaves as if the
/// sidecar were not there. Counted in the listener's connection and byte metrics.
pub async fn passthrough<S>(ctx: Arc<ConnCtx>, stream: S, dst: std::net::SocketAddr, idle: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = ctx.listener.load();
    let metrics = listener.metrics.clone();
    drop(listener);
    ctx.activity.not_http();
    let _open = OpenGuard::new(&metrics.open, &metrics.total);
    let connect = tokio::net::TcpStream::connect(dst);
    let upstream = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(peer = %ctx.peer, %dst, error = %e, "passthrough connect failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %ctx.peer, %dst, "passthrough connect timed out");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let mut down = CountingIo::new(stream, metrics.bytes.clone(), Some(ctx.activity.clone()));
    let mut up = upstream;
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut down, &mut up) => {
            if let Err(e) = res {
                tracing::debug!(peer = %ctx.peer, %dst, error = %e, "passthrough ended");
            }
        }
        _ = watch(&ctx.activity, idle, None) => {
            tracing::debug!(peer = %ctx.peer, %dst, "closing idle passthrough connection");
        }
    }
}

/// Runs `f` when dropped, on every way out of the function.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
