//! Downstream HTTP: serving one accepted connection (HTTP/1.1 and h2c prior knowledge on the
//! same port), with the configured limits and the idle timeout.

pub mod service;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use remora_config::model::Limits;
use tokio::net::TcpStream;

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
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_request_header_bytes * 2).max(8192))
        .max_headers(limits.max_request_headers * 2);
    b.http2().timer(TokioTimer::new()).max_header_list_size(
        u32::try_from(limits.max_request_header_bytes * 2).unwrap_or(u32::MAX),
    );
    b
}

pub async fn serve(ctx: Arc<ConnCtx>, stream: TcpStream, builder: Arc<Builder>, idle: Duration) {
    let snapshot = ctx.shared.snapshot.load();
    let metrics = &snapshot.listeners[ctx.listener].metrics;
    let _open = OpenGuard::new(&metrics.open, &metrics.total);
    let io = CountingIo::new(stream, metrics.bytes.clone(), Some(ctx.activity.clone()));
    drop(snapshot);

    let activity = ctx.activity.clone();
    let svc = service_fn(move |req| service::handle(ctx.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_expired = idle_expired(&activity, idle);
    tokio::pin!(idle_expired);
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "downstream connection ended with an error");
                }
                return;
            }
            () = idle_expired.as_mut(), if !closing => {
                tracing::debug!(?idle, "closing idle downstream connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Resolves once the connection has had no request in flight and no bytes moving for `timeout`.
/// It checks four times per timeout, so it fires within 1.25 x `timeout`.
pub async fn idle_expired(activity: &Activity, timeout: Duration) {
    let tick = (timeout / 4).max(Duration::from_millis(5));
    let mut last = activity.io_ops();
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.io_ops();
        if now == last && activity.in_flight() == 0 {
            quiet += tick;
            if quiet >= timeout {
                return;
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

    #[tokio::test(start_paused = true)]
    async fn idle_fires_after_the_timeout_of_silence() {
        let activity = Activity::default();
        let start = tokio::time::Instant::now();
        idle_expired(&activity, Duration::from_secs(60)).await;
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(60) && waited <= Duration::from_secs(75));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_keeps_the_connection() {
        let activity = Activity::default();
        activity.request_started();
        let fired = tokio::time::timeout(
            Duration::from_secs(600),
            idle_expired(&activity, Duration::from_secs(60)),
        )
        .await;
        assert!(fired.is_err(), "idle timer fired with a request in flight");
    }
}
