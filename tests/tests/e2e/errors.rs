//! Responses the proxy makes itself: each failure has its status and an `x-remora-error` reason,
//! and an upstream's own error statuses pass through unmarked.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use remora_tests::ChannelBody;
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, RawServer, Reply, Upstream, free_addr};

/// A proxy with route `only` (path `/only`) to cluster `app` of `protocol` with `endpoints`
/// (YAML flow list), and route timeout `timeout`.
fn proxy(protocol: &str, endpoints: &str, timeout: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: only
        match: {{ path: {{ exact: /only }} }}
        cluster: app
        timeout: {timeout}
clusters:
  - name: app
    protocol: {protocol}
    connect_timeout: 1s
    endpoints: {endpoints}
"#
    ))
}

fn endpoint(addr: std::net::SocketAddr) -> String {
    format!("[{{ address: \"{addr}\" }}]")
}

fn assert_proxy_error(reply: &Reply, status: u16, reason: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.remora_error(), Some(reason), "{:?}", reply.headers);
    assert!(
        reply.text().contains(reason),
        "the body should say why: {}",
        reply.text()
    );
}

fn assert_counted(proxy: &ProxyProcess, reason: &str, n: f64) {
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", reason)],
        n,
    );
}

#[tokio::test]
async fn no_matching_route_is_404_no_route() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy("http1", &endpoint(upstream.addr()), "15s");
    for proto in Proto::ALL {
        let reply = remora_tests::client::get(proxy.listener("main"), proto, "/elsewhere").await;
        assert_proxy_error(&reply, 404, "no-route");
    }
    assert_eq!(upstream.requests(), 0);
    assert_counted(&proxy, "no-route", 2.0);
}

#[tokio::test]
async fn a_cluster_without_endpoints_is_503_no_endpoint() {
    let proxy = proxy("http1", "[]", "15s");
    for proto in Proto::ALL {
        let reply = remora_tests::client::get(proxy.listener("main"), proto, "/only").await;
        assert_proxy_error(&reply, 503, "no-endpoint");
    }
    assert_counted(&proxy, "no-endpoint", 2.0);
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_is_502_connect_failed() {
    for protocol in ["http1", "http2"] {
        let proxy = proxy(protocol, &endpoint(free_addr()), "15s");
        let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
        assert_proxy_error(&reply, 502, "connect-failed");
        assert_counted(&proxy, "connect-failed", 1.0);
        // The default retry policy tries a connect failure once more (nothing was sent).
        assert_eq!(reply.header("x-remora-attempts"), Some("2"));
        proxy.wait_metric(
            "remora_upstream_connect_errors_total",
            &[("cluster", "app")],
            2.0,
        );
    }
}

#[tokio::test]
async fn an_endpoint_that_never_answers_the_handshake_is_502_connect_timeout() {
    let hole = remora_tests::raw::BlackHole::start();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    connect_timeout: 200ms
    endpoints: [{{ address: "{}" }}]
"#,
        hole.addr()
    ));
    let started = Instant::now();
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/").await;
    let waited = started.elapsed();
    assert_proxy_error(&reply, 502, "connect-timeout");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?} for two attempts of a 200ms connect timeout"
    );
    assert_counted(&proxy, "connect-timeout", 1.0);
    assert_eq!(reply.header("x-remora-attempts"), Some("2"));
    proxy.wait_metric(
        "remora_upstream_connect_errors_total",
        &[("cluster", "app")],
        2.0,
    );
}

#[tokio::test]
async fn an_upstream_slower_than_the_route_timeout_is_504_upstream_timeout() {
    let upstream = Upstream::start(Behaviour::Echo.delayed(Duration::from_secs(10)));
    for protocol in ["http1", "http2"] {
        let proxy = proxy(protocol, &endpoint(upstream.addr()), "200ms");
        let started = Instant::now();
        let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
        let waited = started.elapsed();
        assert_proxy_error(&reply, 504, "upstream-timeout");
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(3),
            "answered after {waited:?} for a 200ms timeout"
        );
        assert_counted(&proxy, "upstream-timeout", 1.0);
    }
}

#[tokio::test]
async fn the_route_timeout_stops_at_the_response_headers() {
    // Headers at once, then a body that takes 3 x the route timeout to arrive.
    let upstream = Upstream::start(Behaviour::custom(|_, _| async move {
        let (tx, body) = ChannelBody::new(1);
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                    .await;
            }
        });
        Ok(http::Response::new(body.boxed()))
    }));
    let proxy = proxy("http1", &endpoint(upstream.addr()), "200ms");
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "tick\n".repeat(6));
}

#[tokio::test]
async fn an_upstream_that_drops_the_request_is_502_upstream_reset() {
    let upstream = Upstream::start(Behaviour::Abort);
    for protocol in ["http1", "http2"] {
        let proxy = proxy(protocol, &endpoint(upstream.addr()), "15s");
        let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
        assert_proxy_error(&reply, 502, "upstream-reset");
        assert_counted(&proxy, "upstream-reset", 1.0);
    }
}

#[tokio::test]
async fn an_upstream_that_closes_after_reading_the_request_is_502_upstream_reset() {
    // Reads the head, answers nothing, closes.
    let upstream = RawServer::start(|mut stream| {
        let _ = remora_tests::raw::read_head(&mut stream);
    });
    let proxy = proxy("http1", &endpoint(upstream.addr()), "15s");
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
    assert_proxy_error(&reply, 502, "upstream-reset");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn an_upstream_speaking_garbage_is_502_upstream_bad_response() {
    let upstream = RawServer::http_reply(b"SMTP READY\r\n\r\n");
    let proxy = proxy("http1", &endpoint(upstream.addr()), "15s");
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/only").await;
    assert_proxy_error(&reply, 502, "upstream-bad-response");
    assert_counted(&proxy, "upstream-bad-response", 1.0);
}

#[tokio::test]
async fn an_upstream_closing_after_each_response_gets_a_new_connection_each_time() {
    let upstream = Upstream::start(Behaviour::RespondAndClose(200));
    let proxy = proxy("http1", &endpoint(upstream.addr()), "15s");
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for _ in 0..3 {
        let reply = client.get("/only").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.remora_error(), None);
    }
    assert_eq!(upstream.connections(), 3);
}

#[tokio::test]
async fn error_statuses_from_the_upstream_pass_through_unmarked() {
    // GET /N answers with status N.
    let upstream = Upstream::start(Behaviour::custom(|req, _| async move {
        let status = req.uri().path()[1..].parse().unwrap_or(500);
        Ok(remora_tests::upstream::text(status, "from the app\n"))
    }));
    let proxy = ProxyProcess::start(&remora_tests::simple_config("http1", &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for status in [404, 500, 502, 503, 504] {
        let reply = client.get(&format!("/{status}")).await;
        assert_eq!(reply.status, status);
        assert_eq!(
            reply.remora_error(),
            None,
            "the proxy must not claim the upstream's {status}"
        );
        assert_eq!(reply.text(), "from the app\n");
    }
}
