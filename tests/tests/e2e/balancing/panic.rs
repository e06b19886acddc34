//! Panic mode: when fewer than `panic_threshold` of a cluster's endpoints are healthy, requests
//! are spread over all of them again rather than piled onto the few left, and each such pick
//! is counted in `remora_lb_panic_total`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use remora_tests::{Client, Proto, ProxyProcess, Upstream};

use crate::health::{checked_upstream, status, wait_state};

/// Two clusters over the same four endpoints, with the default threshold (50%) and with 20%.
fn config(ups: &[Upstream]) -> String {
    let endpoints: Vec<String> = ups
        .iter()
        .map(|u| format!("{{ address: \"{}\" }}", u.addr()))
        .collect();
    let endpoints = endpoints.join(", ");
    // One failed check takes nothing out (a slow check on a busy machine); one pass brings an
    // endpoint in. They start unhealthy, so only passing endpoints are ever healthy.
    let check = "{ http: { path: /healthz }, interval: 100ms, jitter: 0%, timeout: 90ms, \
                 unhealthy_threshold: 3, healthy_threshold: 1, initial_state: unhealthy }";
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - {{ name: strict, match: {{ path: {{ prefix: /strict }} }}, cluster: strict }}
      - {{ name: all, cluster: app }}
clusters:
  - name: app
    endpoints: [{endpoints}]
    health_check: {check}
  - name: strict
    load_balancer: {{ panic_threshold: 20% }}
    endpoints: [{endpoints}]
    health_check: {check}
"#
    )
}

/// Sends `n` requests to `path` one after another; how many each upstream answered.
async fn spread(proxy: &ProxyProcess, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let reply = client.get(&format!("{path}/{i}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        *counts.entry(reply.text()).or_default() += 1;
    }
    counts
}

fn panics(proxy: &ProxyProcess, cluster: &str) -> f64 {
    proxy
        .metric("remora_lb_panic_total", &[("cluster", cluster)])
        .unwrap_or_else(|| panic!("no remora_lb_panic_total for {cluster}"))
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// One healthy endpoint of four is 25%: below 50%, the `app` cluster panics and round-robins
/// over all four, exactly 100 requests each of 400, every pick counted; above 20%, the
/// `strict` cluster does not, and sends everything to the healthy one. A second endpoint
/// passing its checks makes 50%, which is not below the threshold: `app` calms down.
#[tokio::test]
async fn below_the_panic_threshold_traffic_spreads_over_every_endpoint() {
    let health = [status(200), status(503), status(503), status(503)];
    let names = ["ok", "sick-1", "sick-2", "sick-3"];
    let ups: Vec<Upstream> = names
        .iter()
        .zip(&health)
        .map(|(n, h)| checked_upstream(n, h))
        .collect();
    let proxy = ProxyProcess::start(&config(&ups));
    for cluster in ["app", "strict"] {
        wait_state(&proxy, cluster, ups[0].addr(), "healthy").await;
        let c = proxy.clusters();
        for u in &ups[1..] {
            assert_eq!(c.endpoint(cluster, u.addr()).state(), "unhealthy");
        }
    }
    assert_eq!(panics(&proxy, "app"), 0.0);

    let app = spread(&proxy, "/app", 400).await;
    assert_eq!(
        app,
        counts(&[
            ("ok", 100),
            ("sick-1", 100),
            ("sick-2", 100),
            ("sick-3", 100)
        ])
    );
    assert_eq!(panics(&proxy, "app"), 400.0);

    let strict = spread(&proxy, "/strict", 100).await;
    assert_eq!(strict, counts(&[("ok", 100)]));
    assert_eq!(panics(&proxy, "strict"), 0.0);

    health[1].store(200, Ordering::Relaxed);
    wait_state(&proxy, "app", ups[1].addr(), "healthy").await;
    let calm = spread(&proxy, "/app", 100).await;
    assert_eq!(calm, counts(&[("ok", 50), ("sick-1", 50)]));
    assert_eq!(panics(&proxy, "app"), 400.0, "no panic at exactly 50%");
}
