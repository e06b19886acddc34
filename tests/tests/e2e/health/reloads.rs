//! Endpoint health across config reloads. A reload that leaves a cluster as it was keeps the
//! cluster, and with it what the checks and outlier detection learned. A reload that changes
//! the cluster (here: one more endpoint, as a scale-up does) should keep it too for the
//! endpoints that stay: a dead endpoint must not get traffic again because a neighbour came.

use std::time::{Duration, Instant};

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use super::{checked_upstream, status, wait_state};
use crate::balancing::{app_config, named_upstreams};
use crate::reload::wait_reloads;

/// Long enough that a fresh checker cannot have marked an endpoint unhealthy again by the time
/// the test looks (two failures are needed, the second one interval after the first).
const CHECK: &str = "
    health_check:
      http: { path: /healthz }
      interval: 1s
      jitter: 0%
      timeout: 500ms
      unhealthy_threshold: 2
      healthy_threshold: 1
    ";

/// Sends `n` requests; the names of the upstreams that answered them.
async fn served(proxy: &ProxyProcess, n: usize) -> Vec<String> {
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let reply = client.get(&format!("/r/{i}")).await;
        names.push(reply.text());
    }
    names
}

/// The config of `app` with these endpoints and health checks, plus a second cluster `side`
/// (no route uses it) whose endpoint a reload can change without touching `app`.
fn with_side(endpoints: &[&Upstream], side: &Upstream) -> String {
    let addrs: Vec<_> = endpoints.iter().map(|u| u.addr()).collect();
    let mut config = app_config(&addrs, CHECK);
    config.push_str(&format!(
        "  - name: side\n    endpoints: [{{ address: \"{}\" }}]\n",
        side.addr()
    ));
    config
}

async fn unhealthy_setup() -> (ProxyProcess, Vec<Upstream>, Upstream) {
    let sick = checked_upstream("sick", &status(503));
    let ups = named_upstreams(&["ok-1", "ok-2"]);
    let side = Upstream::start_named("side", Behaviour::name());
    let proxy = ProxyProcess::start(&with_side(&[&sick, &ups[0]], &side));
    wait_state(&proxy, "app", sick.addr(), "unhealthy").await;
    let mut all = vec![sick];
    all.extend(ups);
    (proxy, all, side)
}

/// The control: a reload that changes only another cluster reuses `app` as it is.
#[tokio::test]
async fn a_reload_that_leaves_the_cluster_alone_keeps_its_health() {
    let (proxy, ups, side) = unhealthy_setup().await;
    let side_2 = Upstream::start_named("side-2", Behaviour::name());
    proxy.write_config(&with_side(&[&ups[0], &ups[1]], &side_2));
    wait_reloads(&proxy, 1, 0);
    assert_eq!(
        proxy.clusters().endpoint("app", ups[0].addr()).state(),
        "unhealthy"
    );
    assert!(served(&proxy, 10).await.iter().all(|n| n == "ok-1"));
    drop(side);
}

/// Proxy bug: `Snapshot::build` (proxy/src/snapshot.rs) builds a new `ClusterRt` for every
/// cluster whose config changed, and `ClusterHealth::new` starts every endpoint afresh at
/// `initial_state`: an endpoint the checks had taken out is healthy again after any change to
/// its cluster, and gets its share of traffic until the new checker has failed it
/// `unhealthy_threshold` more times (15 s with the default 5 s interval and threshold 3).
/// Observed: right after the reload `sick` is `healthy` and gets 7 of 21 requests.
#[tokio::test]
async fn an_unhealthy_endpoint_stays_out_when_its_cluster_gains_an_endpoint() {
    let (proxy, ups, side) = unhealthy_setup().await;
    proxy.write_config(&with_side(&[&ups[0], &ups[1], &ups[2]], &side));
    wait_reloads(&proxy, 1, 0);
    let reloaded = Instant::now();
    let state = proxy
        .clusters()
        .endpoint("app", ups[0].addr())
        .state()
        .to_owned();
    let names = served(&proxy, 21).await;
    // Only meaningful while a fresh checker could not yet have failed it twice.
    assert!(reloaded.elapsed() < Duration::from_millis(900));
    let to_sick = names.iter().filter(|n| *n == "sick").count();
    assert_eq!(
        (state.as_str(), to_sick),
        ("unhealthy", 0),
        "after the reload: {names:?}"
    );
}

/// Proxy bug, the same cause: an ejection is forgotten when the cluster changes, so an
/// endpoint ejected for failing every request is back at once, and its next ejection lasts
/// the base time again instead of twice as long. Observed: right after the reload `bad` is
/// `healthy` with `times_ejected` 0, and one of the 9 requests reaches it and fails with its
/// 500 (which ejects it again, as if for the first time).
#[tokio::test]
async fn an_ejected_endpoint_stays_ejected_when_its_cluster_gains_an_endpoint() {
    let bad = Upstream::start_named("bad", Behaviour::Status(500));
    let ups = named_upstreams(&["ok-1", "ok-2"]);
    let outlier = "
        outlier_detection:
          consecutive_5xx: 1
          base_ejection_time: 30s
          max_ejection_percent: 50%
        ";
    let proxy = ProxyProcess::start(&app_config(&[bad.addr(), ups[0].addr()], outlier));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    while proxy.clusters().endpoint("app", bad.addr()).state() != "ejected" {
        assert!(bad.requests() < 5, "not ejected");
        client.get("/").await;
    }
    proxy.write_config(&app_config(
        &[bad.addr(), ups[0].addr(), ups[1].addr()],
        outlier,
    ));
    wait_reloads(&proxy, 1, 0);
    let page = proxy.clusters();
    let ep = page.endpoint("app", bad.addr());
    let before = bad.requests();
    let names = served(&proxy, 9).await;
    assert_eq!(
        (ep.state(), ep.times_ejected(), bad.requests() - before),
        ("ejected", 1, 0),
        "after the reload: {:#} then {names:?}",
        ep.0
    );
}

/// Proxy bug: the per-endpoint series are created when a cluster is built and never removed,
/// so an endpoint taken out of the config is still exported, healthy, forever; with pod IPs
/// coming and going in a mesh, the series only ever grow. Observed after removing `gone`:
/// `remora_endpoint_healthy{cluster="app",endpoint="<gone>"} 1` (and its picks, ejected and
/// ejections series) still on `/metrics`.
#[tokio::test]
async fn a_removed_endpoint_is_no_longer_exported() {
    let ups = named_upstreams(&["stays", "gone"]);
    let proxy = ProxyProcess::start(&app_config(&[ups[0].addr(), ups[1].addr()], ""));
    let gone = ups[1].addr().to_string();
    let labels = crate::balancing::endpoint_labels("app", &gone);
    assert_eq!(proxy.metric("remora_endpoint_healthy", &labels), Some(1.0));

    proxy.write_config(&app_config(&[ups[0].addr()], ""));
    wait_reloads(&proxy, 1, 0);
    let metrics = proxy.scrape();
    let left: Vec<String> = metrics
        .samples
        .iter()
        .filter(|s| s.name.starts_with("remora_endpoint_") && s.label("endpoint") == Some(&gone))
        .map(|s| format!("{} {}", s.name, s.value))
        .collect();
    assert!(left.is_empty(), "still exported for {gone}: {left:?}");
}
