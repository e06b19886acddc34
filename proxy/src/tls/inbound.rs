//! Accepting on a listener with mutual TLS.
//!
//! The first byte tells TLS from plaintext (a TLS record starts with 0x16). `strict` closes
//! plaintext connections; `permissive` serves them as if mTLS were off. A TLS connection is
//! terminated here with the workload certificate, the client's certificate is required and
//! verified, and what is inside is served by ALPN: `h2` or `http/1.1` as HTTP, nothing as the
//! listener's TCP cluster. The peer's SPIFFE ID goes to the app in `x-remora-peer-identity`.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use remora_config::model::MtlsMode;
use tokio::net::TcpStream;

use crate::context::ConnCtx;
use crate::detect::{self, Outcome};
use crate::http::Timeouts;
use crate::server::Forward;
use crate::snapshot::{ListenerRt, ListenerRtKind};

/// The longest a client may take to complete its handshake: a real one takes milliseconds;
/// this only bounds what a stalled or hostile client holds.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the first byte on an `http` or `tcp` listener with mTLS (an `auto`
/// listener uses its own `detect_timeout`).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(1);

/// `forward`: what becomes of what is inside (or of what comes in plaintext, when
/// permissive): an opaque port's or another port's bytes are forwarded as TCP.
pub(crate) async fn serve(
    ctx: Arc<ConnCtx>,
    stream: TcpStream,
    rt: Arc<ListenerRt>,
    t: Timeouts,
    forward: Forward,
) {
    let wait = match &rt.kind {
        ListenerRtKind::Auto { detect_timeout, .. } => *detect_timeout,
        _ => FIRST_BYTE_TIMEOUT,
    };
    let outcome = detect::detect(&stream, wait).await;
    let tls = super::global();
    match outcome {
        Outcome::Closed => {}
        Outcome::Tls => terminate(ctx, stream, rt, t, forward).await,
        _ if rt.mtls == MtlsMode::Strict => {
            tls.metrics.handshake("inbound", "plaintext-refused");
            tracing::debug!(peer = %ctx.peer, listener = %rt.name, "plaintext on a strict mTLS listener; closing");
        }
        // Permissive: as without mTLS.
        _ => crate::server::serve_forward(ctx, stream, rt, t, forward).await,
    }
}

async fn terminate(
    ctx: Arc<ConnCtx>,
    stream: TcpStream,
    rt: Arc<ListenerRt>,
    t: Timeouts,
    forward: Forward,
) {
    let tls = super::global();
    if !tls.has_identity() {
        // No certificate (not issued yet, or expired unrenewed): fail closed.
        tls.metrics.handshake("inbound", "no-local-certificate");
        tracing::warn!(peer = %ctx.peer, "mTLS connection refused: no valid workload certificate");
        return;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let reason = super::failure_reason(&e);
            tls.metrics.handshake("inbound", reason);
            tracing::debug!(peer = %ctx.peer, %reason, error = %e, "mTLS handshake failed");
            return;
        }
        Err(_) => {
            tls.metrics.handshake("inbound", "timeout");
            return;
        }
    };
    let (_, conn) = stream.get_ref();
    // The verifier accepted the chain only with a SPIFFE ID in it.
    let Some(id) = super::peer_identity(conn) else {
        tls.metrics.handshake("inbound", "no-spiffe-id");
        return;
    };
    tls.metrics.handshake("inbound", "ok");
    tls.metrics.peer(&id);
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        let _ = ctx.peer_identity.set(v);
    }
    match forward {
        Forward::Detect => {}
        Forward::Opaque => return crate::server::serve_opaque(ctx, stream, rt, t.idle).await,
        Forward::Port(to) => return crate::server::serve_port(ctx, stream, rt, to, t.idle).await,
    }
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    match (&rt.kind, alpn) {
        (ListenerRtKind::Tcp(cluster), _) => {
            crate::tcp::serve(ctx, stream, cluster.clone(), t.idle).await
        }
        (ListenerRtKind::Auto { fallback, .. }, None) => match fallback {
            Some(cluster) => {
                ctx.activity.not_http();
                crate::tcp::serve(ctx, stream, cluster.clone(), t.idle).await
            }
            None => {
                tracing::debug!(peer = %ctx.peer, "mTLS without ALPN and no TCP cluster; closing")
            }
        },
        _ => crate::http::serve(ctx, stream, rt.builder.clone(), t).await,
    }
}
