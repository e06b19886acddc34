//! Downstream HTTP: serving one accepted connection (HTTP/1.1 and h2c prior knowledge on the
//! same port), with the configured limits and the idle timeout; an HTTP/1.1 connection that
//! switches protocols ends as a tunnel ([`upgrade`]).

mod gate;
pub mod service;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use remora_config::model::Limits;

use crate::context::ConnCtx;
use crate::io::{Activity, CountingIo};
use crate::metrics::OpenGuard;

pub type Builder = auto::Builder<TokioExecutor>;

/// hyper's own limits are set to twice ours. Requests between our limit and twice it reach
/// [`service`], which refuses them with 431 and `x-remora-error` like every other proxy error;
/// only grossly oversized ones are cut off by hyper itself (a bare 431), so a client can never
/// make us buffer more than twice the configured head size.
pub fn builder(limits: &Limits) -> Builder {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // The header-read timeout is ours (see `watch`): hyper's would also cut idle keep-alive
    // connections after it.
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size((limits.max_request_header_bytes * 2).max(8192))
        .max_headers(limits.max_request_headers * 2)
        .writev(false);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(
            u32::try_from(limits.max_request_header_bytes * 2).unwrap_or(u32::MAX),
        );
    b
}

/// The per-connection timeouts of an HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Duration,
    pub header_read: Duration,
}

/// Serves HTTP on a downstream connection: a plain TCP stream, or the decrypted side of an
/// mTLS one.
pub async fn serve<S>(ctx: Arc<ConnCtx>, stream: S, builder: Arc<Builder>, t: Timeouts)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let listener = ctx.listener_rt();
    let metrics = &listener.metrics;
    let _open = OpenGuard::new(&metrics.open, &metrics.total);
    let io = CountingIo::new(stream, metrics.bytes.clone(), Some(ctx.activity.clone()));
    drop(listener);

    let activity = ctx.activity.clone();
    let peer = ctx.peer;
    let ctx_drain = ctx.shared.drain.watch();
    let ctx_closing = ctx.listener.http_closing();
    let tunnels = Arc::new(upgrade::TunnelSlot::default());
    let svc = {
        let tunnels = tunnels.clone();
        service_fn(move |req| service::handle(ctx.clone(), tunnels.clone(), req))
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // The rare reasons to stop, gated so they cost nothing on the wakes that serve requests.
    let stop = gate::Gated::new(stop_reason(ctx_drain, ctx_closing, &activity, t));
    tokio::pin!(stop);
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                // After a 101, hyper is done with the connection and hands its socket over.
                if let Some(tunnel) = tunnels.take() {
                    tunnel.run(peer, &activity, t.idle).await;
                }
                return;
            }
            why = stop.as_mut(), if !closing => match why {
                Stop::Expired(Expiry::HeadTimeout) => {
                    // A client trickling its request head (slowloris): drop it, no goodbye.
                    tracing::debug!(timeout = ?t.header_read, "request head too slow; closing");
                    return;
                }
                // Finish what is in flight, then close: HTTP/1 says `Connection: close`, HTTP/2
                // sends GOAWAY.
                why => {
                    tracing::debug!(?why, "closing downstream connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Why a connection stops taking requests.
#[derive(Debug)]
enum Stop {
    Draining,
    /// A reload made the listener opaque TCP: the client should reconnect to what the port
    /// serves now.
    ListenerNoLongerHttp,
    Expired(Expiry),
}

async fn stop_reason(
    mut drain: tokio::sync::watch::Receiver<bool>,
    mut not_http: tokio::sync::watch::Receiver<bool>,
    activity: &Activity,
    t: Timeouts,
) -> Stop {
    tokio::select! {
        () = crate::server::until_set(&mut drain) => Stop::Draining,
        () = crate::server::until_set(&mut not_http) => Stop::ListenerNoLongerHttp,
        why = watch(activity, t.idle, Some(t.header_read)) => Stop::Expired(why),
    }
}

/// Why [`watch`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// No request in flight and no bytes moving for the idle timeout.
    Idle,
    /// A request head has been arriving for longer than the header-read timeout.
    HeadTimeout,
}

/// Resolves when the connection has expired. It checks periodically rather than arming a timer
/// per request: four times per idle timeout and twice per header-read timeout, so it fires
/// within 1.25x the idle timeout and 1.5x the header-read timeout.
pub async fn watch(activity: &Activity, idle: Duration, header_read: Option<Duration>) -> Expiry {
    let mut tick = idle / 4;
    if let Some(h) = header_read {
        tick = tick.min(h / 2);
    }
    let tick = tick.max(Duration::from_millis(5));
    let mut last = activity.io_ops();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        if let (Some(limit), Some(age)) = (header_read, activity.head_age())
            && age >= limit
        {
            return Expiry::HeadTimeout;
        }
        let now = activity.io_ops();
        if now == last && activity.in_flight() == 0 {
            quiet += tick;
            if quiet >= idle {
                return Expiry::Idle;
            }
        } else {
            quiet = Duration::ZERO;
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn idle_fires_after_the_timeout_of_silence() {
        let activity = Activity::new(true);
        let start = Instant::now();
        let why = watch(
            &activity,
            Duration::from_secs(60),
            Some(Duration::from_secs(10)),
        )
        .await;
        assert_eq!(why, Expiry::Idle);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(60) && waited <= Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection() {
        let activity = Activity::new(true);
        activity.request_started();
        let fired = tokio::time::timeout(
            Duration::from_secs(600),
            watch(
                &activity,
                Duration::from_secs(60),
                Some(Duration::from_secs(10)),
            ),
        )
        .await;
        assert!(fired.is_err(), "fired with a request in flight");
    }

    /// Drives an `Activity` through a real transport: bytes read with nothing in flight start
    /// a head; a complete head (request_started) stops the clock.
    async fn feed(activity: &Arc<Activity>, data: &[u8]) {
        let (mut client, server) = tokio::io::duplex(1024);
        let metrics = Metrics::new().listener("t", "inbound").bytes;
        let mut io = CountingIo::new(server, metrics, Some(activity.clone()));
        client.write_all(data).await.unwrap();
        let mut buf = vec![0; data.len()];
        io.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_times_out_but_a_quiet_keep_alive_does_not() {
        let header_read = Some(Duration::from_secs(10));
        let idle = Duration::from_secs(3600);

        let slow = Arc::new(Activity::new(true));
        feed(&slow, b"GET / HTTP/1.1\r\nHo").await;
        let start = Instant::now();
        assert_eq!(watch(&slow, idle, header_read).await, Expiry::HeadTimeout);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(10) && waited <= Duration::from_secs(15));

        // A head that completed, then a long pause between requests: only idle applies.
        let kept = Arc::new(Activity::new(true));
        feed(&kept, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        kept.request_started();
        kept.request_finished();
        let start = Instant::now();
        assert_eq!(watch(&kept, idle, header_read).await, Expiry::Idle);
        assert!(start.elapsed() >= idle);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_and_tcp_connections_have_no_head_timer() {
        let h2 = Arc::new(Activity::new(true));
        feed(&h2, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert_eq!(h2.head_age(), None);
        let tcp = Arc::new(Activity::new(false));
        feed(&tcp, b"GET / HTTP/1.1\r\n").await;
        assert_eq!(tcp.head_age(), None);
    }
}
