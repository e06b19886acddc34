//! Which endpoints get traffic: active health checks (HTTP, TCP, gRPC), outlier detection,
//! and what becomes of both across config reloads, seen through real traffic, `/clusters` and
//! the metrics. Intervals are short (100-200 ms) and ejections as short as the config allows
//! (1 s), so each test takes a second or a few. Panic mode is in `balancing/panic.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use remora_tests::upstream::text;
use remora_tests::{Behaviour, ProxyProcess, Upstream, eventually};

mod grpc_check;
mod http_check;
mod outlier;
mod reloads;
mod tcp_check;

/// How long a test waits for a state the checks or the clock bring about: a second or two
/// normally, far longer on a loaded machine.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(15);

/// An upstream whose `/healthz` answers with the status in `health` (which the test changes
/// while it runs), and every other request with 200 and its name.
pub fn checked_upstream(name: &str, health: &Arc<AtomicU16>) -> Upstream {
    let health = health.clone();
    Upstream::start_named(
        name,
        Behaviour::custom(move |req, info| {
            let status = match req.uri().path() {
                "/healthz" => health.load(Ordering::Relaxed),
                _ => 200,
            };
            async move {
                Ok(match status {
                    200 => text(200, &info.name),
                    s => text(s, "sick\n"),
                })
            }
        }),
    )
}

/// A status a test flips: shared with [`checked_upstream`].
pub fn status(code: u16) -> Arc<AtomicU16> {
    Arc::new(AtomicU16::new(code))
}

/// Waits until endpoint `addr` of `cluster` is in `state` on `/clusters`.
pub async fn wait_state(
    proxy: &ProxyProcess,
    cluster: &str,
    addr: std::net::SocketAddr,
    state: &str,
) {
    eventually(
        &format!("{addr} of {cluster} to be {state}"),
        STATE_TIMEOUT,
        || (proxy.clusters().endpoint(cluster, addr).state() == state).then_some(()),
    )
    .await;
}
