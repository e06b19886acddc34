//! The admin listener: health, readiness, the effective config, and the clusters.

use std::time::Duration;

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, free_addr, raw, wait_for};
use serde_json::Value;

fn config(live: &Upstream, dead: std::net::SocketAddr) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: web
        match: {{ path: {{ prefix: /web }} }}
        cluster: app
        timeout: 3s
clusters:
  - name: app
    connect_timeout: 250ms
    endpoints:
      - {{ address: "{}", weight: 3 }}
      - {{ address: "{dead}", weight: 0 }}
  - name: grpc
    protocol: http2
    endpoints: []
"#,
        live.addr()
    )
}

#[test]
fn live_ready_and_unknown_paths() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&upstream, free_addr()));
    assert_eq!(proxy.admin_get("/live").status, 200);
    assert_eq!(proxy.admin_get("/ready").status, 200);
    let missing = proxy.admin_get("/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("/metrics"), "{}", missing.text());
    let post = raw::exchange(
        proxy.admin(),
        b"POST /ready HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(post.status, 405);
}

#[test]
fn config_is_the_effective_config_as_loadable_yaml() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&upstream, free_addr()));
    let resp = proxy.admin_get("/config");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/yaml"));
    let yaml = resp.text();
    let config = remora_config::load_str("/config", &yaml)
        .unwrap_or_else(|d| panic!("/config does not load back:\n{d}\n{yaml}"));
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].name, "main");
    assert_eq!(config.listeners[0].address.to_string(), "127.0.0.1:0");
    assert_eq!(config.clusters.len(), 2);
    assert_eq!(
        config.clusters[0].connect_timeout,
        Duration::from_millis(250)
    );
    assert!(yaml.contains("web") && yaml.contains("grpc"), "{yaml}");
    // Defaults are spelled out.
    assert!(
        yaml.contains("idle_timeout") && yaml.contains("workers"),
        "{yaml}"
    );
}

#[tokio::test]
async fn clusters_lists_endpoints_with_weight_state_and_idle_connections() {
    let upstream = Upstream::start(Behaviour::Echo);
    let dead = free_addr();
    let proxy = ProxyProcess::start(&config(&upstream, dead));
    let clusters = |proxy: &ProxyProcess| -> Value {
        let resp = proxy.admin_get("/clusters");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        serde_json::from_slice(&resp.body).expect("/clusters is JSON")
    };

    let doc = clusters(&proxy);
    let list = doc["clusters"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let app = &list[0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["protocol"], "http1");
    assert_eq!(app["connect_timeout_ms"], 250);
    let eps = app["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["address"], upstream.addr().to_string());
    assert_eq!(eps[0]["weight"], 3);
    assert_eq!(eps[0]["state"], "healthy");
    assert_eq!(eps[0]["idle_connections"], 0);
    assert_eq!(eps[1]["address"], dead.to_string());
    assert_eq!(eps[1]["weight"], 0);
    assert_eq!(eps[1]["state"], "drained");
    let grpc = &list[1];
    assert_eq!(grpc["name"], "grpc");
    assert_eq!(grpc["protocol"], "http2");
    assert_eq!(grpc["connect_timeout_ms"], 1000, "the default");
    assert_eq!(grpc["endpoints"], Value::Array(vec![]));
    // The circuit-breaker limits (defaults) with nothing in use, and an empty retry budget.
    let breakers = &app["circuit_breakers"];
    assert_eq!(breakers["requests"]["max"], 1024);
    assert_eq!(breakers["retries"]["max"], 64);
    assert_eq!(breakers["connections"]["used"], 0);
    assert_eq!(
        breakers["consecutive_failures"],
        Value::Null,
        "off by default"
    );
    assert_eq!(app["retry_budget"]["requests"], 0);

    // After a request, its upstream connection waits in the pool.
    let reply = Client::connect(proxy.listener("main"), Proto::Http1)
        .await
        .get("/web")
        .await;
    assert_eq!(reply.echo().path(), "/web");
    wait_for("one idle pooled connection", Duration::from_secs(5), || {
        (clusters(&proxy)["clusters"][0]["endpoints"][0]["idle_connections"] == 1).then_some(())
    });
    // That connection holds a connections permit; the request was counted by the budget.
    let app = &clusters(&proxy)["clusters"][0];
    assert_eq!(app["circuit_breakers"]["connections"]["used"], 1);
    assert_eq!(app["circuit_breakers"]["requests"]["used"], 0);
    assert_eq!(app["retry_budget"]["requests"], 1);
}

/// `admin.status_address` serves what may face the pod's network (`/live`, `/ready`,
/// `/metrics`) and nothing else: not the config, not the clusters, and no POST /drain (the
/// proxy keeps serving after one). The admin address still serves everything.
#[test]
fn the_status_listener_serves_probes_and_metrics_only() {
    let upstream = Upstream::start(Behaviour::Echo);
    let yaml = config(&upstream, free_addr()).replacen(
        "admin: { address: 127.0.0.1:0 }",
        "admin: { address: 127.0.0.1:0, status_address: 127.0.0.1:0 }",
        1,
    );
    let proxy = ProxyProcess::start(&yaml);
    let status = proxy.addrs().status.expect("a status listener");
    assert_ne!(status, proxy.admin());
    assert_eq!(raw::get(status, "/live").unwrap().status, 200);
    assert_eq!(raw::get(status, "/ready").unwrap().status, 200);
    let metrics = raw::get(status, "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("remora_"), "the proxy's metrics");
    for path in ["/config", "/clusters", "/"] {
        assert_eq!(raw::get(status, path).unwrap().status, 404, "{path}");
    }
    let drain = raw::exchange(
        status,
        b"POST /drain HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(drain.status, 404, "no drain on the status listener");
    // Still serving, and the admin address has it all.
    assert_eq!(raw::get(status, "/ready").unwrap().status, 200);
    assert_eq!(proxy.admin_get("/config").status, 200);
    assert_eq!(proxy.admin_get("/clusters").status, 200);
}
