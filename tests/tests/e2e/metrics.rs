//! The `/metrics` page counts exactly what happened: requests by listener, route, cluster and
//! status class, latencies, connections and bytes.

use remora_tests::client::{full, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use crate::request_labels;

#[tokio::test]
async fn requests_connections_and_bytes_are_counted_exactly() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: ok
        match: {{ path: {{ prefix: /ok }} }}
        cluster: app
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for i in 0..7 {
        let reply = client
            .fetch(
                request("POST", &format!("/ok/{i}"))
                    .body(full("0123456789"))
                    .unwrap(),
            )
            .await;
        assert_eq!(reply.echo().body_bytes(), 10);
    }
    for _ in 0..3 {
        assert_eq!(client.get("/nope").await.status, 404);
    }

    let requests = "remora_requests_total";
    proxy.wait_metric(requests, &request_labels("main", "ok", "app", "2xx"), 7.0);
    proxy.wait_metric(requests, &request_labels("main", "", "", "4xx"), 3.0);
    let m = proxy.scrape();
    // Nothing else was counted anywhere.
    assert_eq!(m.sum(requests, &[]), 10.0);
    assert_eq!(
        m.get(requests, &request_labels("main", "ok", "app", "5xx")),
        Some(0.0)
    );
    assert_eq!(
        m.get(
            "remora_proxy_errors_total",
            &[("listener", "main"), ("reason", "no-route")]
        ),
        Some(3.0)
    );
    assert_eq!(m.sum("remora_proxy_errors_total", &[]), 3.0);

    // Latency histograms: one observation per routed request.
    let route = [("listener", "main"), ("route", "ok")];
    assert_eq!(
        m.get("remora_request_duration_seconds_count", &route),
        Some(7.0)
    );
    let inf_bucket = [("listener", "main"), ("route", "ok"), ("le", "+Inf")];
    assert_eq!(
        m.get("remora_request_duration_seconds_bucket", &inf_bucket),
        Some(7.0)
    );
    assert!(
        m.get("remora_request_duration_seconds_sum", &route)
            .unwrap()
            > 0.0
    );
    let cluster = [("cluster", "app")];
    assert_eq!(
        m.get("remora_upstream_request_duration_seconds_count", &cluster),
        Some(7.0)
    );

    // One client connection, still open; one pooled upstream connection, reused.
    let listener = [("listener", "main"), ("direction", "inbound")];
    assert_eq!(
        m.get("remora_downstream_connections_total", &listener),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_downstream_connections_open", &listener),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_upstream_connections_total", &cluster),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_upstream_connections_open", &cluster),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_upstream_connect_errors_total", &cluster),
        Some(0.0)
    );
    assert_eq!(upstream.connections(), 1);

    // Bytes: 7 bodies of 10 went up, 7 echoes came back; heads make up the rest.
    let down_rx = m
        .get("remora_downstream_received_bytes_total", &listener)
        .unwrap();
    let down_tx = m
        .get("remora_downstream_sent_bytes_total", &listener)
        .unwrap();
    let up_tx = m.get("remora_upstream_sent_bytes_total", &cluster).unwrap();
    let up_rx = m
        .get("remora_upstream_received_bytes_total", &cluster)
        .unwrap();
    assert!(
        down_rx > 70.0 && down_tx > 0.0 && up_tx > 70.0 && up_rx > 0.0,
        "{m:?}"
    );

    // Closing the client connection brings the open gauge back down.
    drop(client);
    proxy.wait_metric("remora_downstream_connections_open", &listener, 0.0);
    assert_eq!(
        proxy.metric("remora_downstream_connections_total", &listener),
        Some(1.0)
    );
}

#[tokio::test]
async fn each_listener_counts_under_its_own_name_and_direction() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: in
    address: 127.0.0.1:0
    direction: inbound
    routes: [{{ name: r, cluster: app }}]
  - name: out
    address: 127.0.0.1:0
    direction: outbound
    routes: [{{ name: r, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ));
    for _ in 0..2 {
        remora_tests::client::get(proxy.listener("in"), Proto::Http1, "/")
            .await
            .echo();
    }
    for _ in 0..5 {
        remora_tests::client::get(proxy.listener("out"), Proto::H2c, "/")
            .await
            .echo();
    }
    let labels = |listener, direction| {
        [
            ("listener", listener),
            ("direction", direction),
            ("route", "r"),
            ("cluster", "app"),
            ("status_class", "2xx"),
        ]
    };
    proxy.wait_metric("remora_requests_total", &labels("in", "inbound"), 2.0);
    proxy.wait_metric("remora_requests_total", &labels("out", "outbound"), 5.0);
    let m = proxy.scrape();
    let conns = |listener, direction| {
        m.get(
            "remora_downstream_connections_total",
            &[("listener", listener), ("direction", direction)],
        )
    };
    assert_eq!(conns("in", "inbound"), Some(2.0));
    assert_eq!(conns("out", "outbound"), Some(5.0));
}
