//! Opening upstream connections: TCP with a connect timeout, then the HTTP handshake. Each
//! connection's task keeps the cluster's open-connections gauge up while it lives.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::ClusterRt;
use crate::body::RequestBody;
use crate::error::ProxyError;
use crate::io::CountingIo;
use crate::metrics::OpenGuard;

type Io = TokioIo<CountingIo<TcpStream>>;

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

fn counted(cluster: &ClusterRt, stream: TcpStream) -> Io {
    TokioIo::new(CountingIo::new(stream, cluster.metrics.bytes.clone(), None))
}

pub async fn http1(
    cluster: &Arc<ClusterRt>,
    addr: SocketAddr,
) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
    let stream = tcp(cluster, addr).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake::<Io, RequestBody>(counted(cluster, stream))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    let guard = OpenGuard::new(&cluster.metrics.open, &cluster.metrics.total);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/1.1 connection ended");
        }
        drop(guard);
    });
    Ok(sender)
}

pub async fn http2(
    cluster: &Arc<ClusterRt>,
    addr: SocketAddr,
) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
    let stream = tcp(cluster, addr).await?;
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
        drop(guard);
    });
    Ok(sender)
}
