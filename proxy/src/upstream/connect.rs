//! Opening upstream connections: TCP with a connect timeout, mTLS for clusters that ask for
//! it, then the HTTP handshake. Each connection holds the cluster's open-connections gauge up
//! while it lives.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ClusterRt;
use crate::body::RequestBody;
use crate::breaker::{Overflow, Permit};
use crate::error::ProxyError;
use crate::io::CountingIo;
use crate::metrics::OpenGuard;

type Io = TokioIo<CountingIo<UpstreamStream>>;

/// An upstream connection's bytes: plain TCP, or mTLS to another sidecar. An enum rather than
/// a box: plaintext pays one match per read or write, and no allocation.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection to `addr` ready for bytes: TCP, then, for a cluster with `mtls`, a TLS
/// handshake offering the ALPN of `http2` (`None`: opaque TCP, none) whose peer must prove the
/// cluster's identity. Without a valid workload certificate nothing is attempted: fail closed.
pub async fn stream(
    cluster: &ClusterRt,
    addr: SocketAddr,
    http2: Option<bool>,
) -> Result<UpstreamStream, ProxyError> {
    let Some(mtls) = &cluster.config.mtls else {
        return Ok(UpstreamStream::Plain(tcp(cluster, addr).await?));
    };
    let tls = crate::tls::global();
    if !tls.has_identity() {
        tls.metrics.handshake("outbound", "no-local-certificate");
        return Err(ProxyError::NoIdentity(cluster.name.clone()));
    }
    let stream = tcp(cluster, addr).await?;
    match mtls_handshake(stream, addr, &mtls.identity, http2, cluster.connect_timeout).await {
        Ok(stream) => Ok(stream),
        Err((reason, detail)) => {
            cluster.metrics.connect_errors.inc();
            Err(ProxyError::UpstreamTls {
                addr,
                reason: format!("{reason}: {detail}"),
            })
        }
    }
}

/// The mTLS handshake on a connected `stream` to `addr`, offering the ALPN of `http2`, whose
/// peer must prove `identity`; counted in `remora_tls_handshakes_total`. On failure, the
/// metric's reason and a description.
pub async fn mtls_handshake(
    stream: TcpStream,
    addr: SocketAddr,
    identity: &remora_config::identity::SpiffeId,
    http2: Option<bool>,
    timeout: std::time::Duration,
) -> Result<UpstreamStream, (&'static str, String)> {
    let tls = crate::tls::global();
    let connector = tokio_rustls::TlsConnector::from(tls.client_config(http2));
    // The peer is named by its SPIFFE ID, not a DNS name: an IP server name sends no SNI.
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let failed = |reason: &'static str, detail: String| {
        tls.metrics.handshake("outbound", reason);
        Err((reason, detail))
    };
    let stream = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return failed(crate::tls::failure_reason(&e), e.to_string()),
        Err(_) => return failed("timeout", format!("handshake timed out after {timeout:?}")),
    };
    let peer = crate::tls::peer_identity(stream.get_ref().1);
    if peer.as_ref() != Some(identity) {
        let got = peer.map_or_else(|| "none".to_owned(), |p| p.to_string());
        return failed(
            "wrong-identity",
            format!("the peer is {got}, not {identity}"),
        );
    }
    tls.metrics.handshake("outbound", "ok");
    Ok(UpstreamStream::Tls(Box::new(stream)))
}

/// A TCP connection to `addr` within the cluster's connect timeout.
pub async fn tcp(cluster: &ClusterRt, addr: SocketAddr) -> Result<TcpStream, ProxyError> {
    let result = tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(addr)).await;
    let stream = match result {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            cluster.metrics.connect_errors.inc();
            return Err(ProxyError::ConnectFailed { addr, source });
        }
        Err(_) => {
            cluster.metrics.connect_errors.inc();
            return Err(ProxyError::ConnectTimeout {
                addr,
                after: cluster.connect_timeout,
            });
        }
    };
    // Requests and responses are written whole; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn counted(cluster: &ClusterRt, stream: UpstreamStream) -> Io {
    TokioIo::new(CountingIo::new(stream, cluster.metrics.bytes.clone(), None))
}

/// An HTTP/1.1 upstream connection that is not spawned: whoever holds it drives it (see
/// [`H1Conn::drive`]). The request's own task sends, waits for and streams the response while
/// driving the connection, so an exchange costs no hop to a connection task and back.
pub struct H1Conn {
    pub sender: http1::SendRequest<RequestBody>,
    conn: http1::Connection<Io, RequestBody>,
    /// Set once `conn` has resolved; a finished future must not be polled again.
    done: bool,
    _open: OpenGuard,
    /// The cluster's `connections` circuit-breaker permit, given back when the connection goes.
    _permit: Permit,
}

impl H1Conn {
    /// Lets the connection read and write. Returns false once it has ended (closed or failed).
    pub fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        drive(&mut self.conn, &mut self.done, cx)
    }

    /// Drives the connection once and reports whether it can take a request now.
    pub fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && matches!(self.sender.poll_ready(cx), Poll::Ready(Ok(())))
    }

    /// Sends `req` and drives the connection until the response head arrives.
    pub async fn send(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<RequestBody>>> {
        let mut resp = std::pin::pin!(self.sender.try_send_request(req));
        // `resp` borrows the sender; the connection and its flag are separate fields.
        let (conn, done) = (&mut self.conn, &mut self.done);
        std::future::poll_fn(|cx| {
            drive(conn, done, cx);
            resp.as_mut().poll(cx)
        })
        .await
    }
}

fn drive(
    conn: &mut http1::Connection<Io, RequestBody>,
    done: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if !*done && let Poll::Ready(res) = Pin::new(conn).poll(cx) {
        *done = true;
        if let Err(e) = res {
            tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
        }
    }
    !*done
}

/// Boxed: the connection holds its buffers inline, and it moves between the pool and response
/// bodies on every request.
pub async fn http1(
    cluster: &Arc<ClusterRt>,
    addr: SocketAddr,
    permit: Permit,
) -> Result<Box<H1Conn>, ProxyError> {
    let stream = stream(cluster, addr, Some(false)).await?;
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake::<Io, RequestBody>(counted(cluster, stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    Ok(Box::new(H1Conn {
        sender,
        conn,
        done: false,
        _open: OpenGuard::new(&cluster.metrics.open, &cluster.metrics.total),
        _permit: permit,
    }))
}

/// A dedicated HTTP/1.1 connection for one upgrade request (WebSocket and the like): never
/// pooled, and run as its own task, which hands the socket over if the upstream answers 101.
/// The guard holds the cluster's open-connections gauge up and its `connections` permit: the
/// task keeps one clone, and the tunnel built on the connection after a 101 the other.
pub async fn http1_for_upgrade(
    cluster: &ClusterRt,
    addr: SocketAddr,
) -> Result<(http1::SendRequest<RequestBody>, Arc<(OpenGuard, Permit)>), ProxyError> {
    let permit = cluster.acquire(Overflow::Connections)?;
    let stream = stream(cluster, addr, Some(false)).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake::<Io, RequestBody>(counted(cluster, stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    let guard = Arc::new((
        OpenGuard::new(&cluster.metrics.open, &cluster.metrics.total),
        permit,
    ));
    let held = guard.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream upgrade connection ended");
        }
        drop(held);
    });
    Ok((sender, guard))
}

pub async fn http2(
    cluster: &Arc<ClusterRt>,
    addr: SocketAddr,
    permit: Permit,
) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    let stream = stream(cluster, addr, Some(true)).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<Io, RequestBody>(counted(cluster, stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    let guard = OpenGuard::new(&cluster.metrics.open, &cluster.metrics.total);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
        drop((guard, permit));
    });
    Ok(sender)
}
