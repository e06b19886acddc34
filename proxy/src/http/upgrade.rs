//! HTTP/1.1 Upgrade through the proxy: WebSocket, or any other protocol but h2c.
//!
//! An HTTP/1.1 request with `Connection: upgrade` and `Upgrade: <protocols>` is routed, limited
//! and rewritten like any other, then sent with its upgrade headers on a dedicated upstream
//! HTTP/1.1 connection (never pooled: after a 101 it no longer speaks HTTP). If the upstream
//! answers 101, the 101 is relayed downstream, and once hyper has handed over both sockets a
//! [`Tunnel`] copies bytes both ways until either side closes, or until nothing has moved for the
//! listener's idle timeout. Any other answer is relayed as a normal response.
//!
//! `Upgrade: h2c` (the cleartext HTTP/2 upgrade of RFC 7540, withdrawn by RFC 9113) never opens a
//! tunnel: the request goes on as plain HTTP/1.1 with its upgrade headers removed, and a client
//! that wants HTTP/2 speaks it with prior knowledge.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::breaker::Permit;
use crate::error::ProxyError;
use crate::io::Activity;
use crate::metrics::OpenGuard;
use crate::upstream::ClusterRt;
use crate::upstream::connect;
use crate::upstream::pool::PooledBody;

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");
const UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// A downstream request that asked for an upgrade the proxy will tunnel.
pub struct Requested {
    /// Resolves to the downstream socket once the 101 has been written.
    downstream: OnUpgrade,
    /// The request's `Upgrade` value, sent upstream as it came.
    pub protocols: HeaderValue,
}

/// Whether `req` asks for an upgrade the proxy tunnels; takes what is needed to do so.
///
/// hyper marks every HTTP/1.1 request carrying an `Upgrade` header (and every CONNECT) with an
/// [`OnUpgrade`] extension, so the common request costs one check of an empty extension map.
/// An `Upgrade: h2c` request also loses its `HTTP2-Settings`, which is connection-specific
/// even when `Connection` fails to name it.
pub fn requested(req: &mut Request<Incoming>) -> Option<Requested> {
    req.extensions().get::<OnUpgrade>()?;
    if has_token(req.headers(), &UPGRADE, "h2c") {
        req.headers_mut().remove(HTTP2_SETTINGS);
        return None;
    }
    if !has_token(req.headers(), &CONNECTION, "upgrade") {
        return None;
    }
    let protocols = req.headers().get(UPGRADE)?.clone();
    let downstream = req.extensions_mut().remove::<OnUpgrade>()?;
    Some(Requested {
        downstream,
        protocols,
    })
}

/// Whether any `name` header lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Puts back the upgrade headers that hop-by-hop removal took out: they are meant for the next
/// hop, which is the one that switches protocols.
pub fn set_headers(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(CONNECTION, UPGRADE_TOKEN);
    headers.insert(UPGRADE, protocols);
}

/// What a 101 switched to: the upstream's `Upgrade`, else what the client asked for.
pub fn switched_to(response: &HeaderMap, requested: &HeaderValue) -> HeaderValue {
    response.get(UPGRADE).unwrap_or(requested).clone()
}

/// Sends an upgrade request on a dedicated connection to `addr`. On a 101, the tunnel to run
/// once the 101 has gone downstream is left in `tunnels`.
pub async fn send(
    cluster: &ClusterRt,
    addr: SocketAddr,
    req: Request<RequestBody>,
    requested: Requested,
    tunnels: &TunnelSlot,
) -> Result<Response<PooledBody>, ProxyError> {
    let (mut sender, open) = connect::http1_for_upgrade(cluster, addr).await?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(ProxyError::from_upstream)?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream = hyper::upgrade::on(&mut resp);
        tunnels.put(Tunnel {
            downstream: requested.downstream,
            upstream,
            upstream_addr: addr,
            protocols: switched_to(resp.headers(), &requested.protocols),
            _open: open,
        });
    }
    Ok(resp.map(PooledBody::detached))
}

/// Where the service leaves a tunnel for the connection's task to run after the 101: one per
/// downstream connection, since an upgraded connection carries no further requests.
#[derive(Default)]
pub struct TunnelSlot(Mutex<Option<Tunnel>>);

impl TunnelSlot {
    fn put(&self, tunnel: Tunnel) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    pub fn take(&self) -> Option<Tunnel> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Both halves of a switched connection, waiting for hyper to hand over the sockets.
pub struct Tunnel {
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    upstream_addr: SocketAddr,
    /// For the log line.
    protocols: HeaderValue,
    /// The upstream connection counts as open (and against the cluster's connection limit)
    /// until the tunnel ends.
    _open: Arc<(OpenGuard, Permit)>,
}

impl Tunnel {
    /// Copies bytes both ways until either side closes or nothing moves for `idle`. The bytes
    /// are counted in the connection metrics by the transports underneath.
    pub async fn run(self, peer: SocketAddr, activity: &Activity, idle: Duration) {
        let started = Instant::now();
        let (down, up) = match tokio::try_join!(self.downstream, self.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "upgrade did not complete");
                return;
            }
        };
        // Bytes now flow both ways at any time: nothing here is a request head to time.
        activity.not_http();
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        let protocol = String::from_utf8_lossy(self.protocols.as_bytes());
        let upstream = self.upstream_addr;
        tokio::select! {
            res = tokio::io::copy_bidirectional(&mut down, &mut up) => match res {
                Ok((to_upstream, to_client)) => tracing::info!(
                    client = %peer, %upstream, %protocol, to_upstream, to_client,
                    duration = ?started.elapsed(), "upgraded connection closed"
                ),
                Err(e) => tracing::info!(
                    client = %peer, %upstream, %protocol, error = %e,
                    duration = ?started.elapsed(), "upgraded connection ended with an error"
                ),
            },
            _ = super::watch(activity, idle, None) => tracing::info!(
                client = %peer, %upstream, %protocol, ?idle,
                duration = ?started.elapsed(), "closing idle upgraded connection"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn connection_tokens_are_found_in_any_line_and_case() {
        let h = map(&[("connection", "keep-alive"), ("connection", " Upgrade ,x")]);
        assert!(has_token(&h, &CONNECTION, "upgrade"));
        assert!(!has_token(&h, &CONNECTION, "close"));
        assert!(!has_token(&h, &UPGRADE, "websocket"));
    }

    #[test]
    fn a_101_reports_the_upstreams_protocol_or_the_requested_one() {
        let asked = HeaderValue::from_static("websocket");
        let h = map(&[("upgrade", "WebSocket")]);
        assert_eq!(switched_to(&h, &asked), "WebSocket");
        assert_eq!(switched_to(&HeaderMap::new(), &asked), "websocket");
    }

    #[test]
    fn upgrade_headers_are_restored_for_the_next_hop() {
        let mut h = map(&[("connection", "keep-alive")]);
        set_headers(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h[CONNECTION], "upgrade");
        assert_eq!(h[UPGRADE], "websocket");
        assert_eq!(h.len(), 2);
    }
}
