//! Request limits: each refusal has its status and `x-remora-error`, and nothing reaches the
//! upstream. Limits are set small so the tests stay cheap.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::request_labels;
use remora_tests::client::{ReqBody, boxed, empty, full, request};
use remora_tests::raw::{self, RawResponse};
use remora_tests::{Behaviour, Client, PatternBody, Proto, ProxyProcess, Upstream};

const BODY_LIMIT: usize = 1024;
const URI_LIMIT: usize = 128;
const HEADER_COUNT_LIMIT: usize = 10;
/// The smallest the config accepts.
const HEADER_BYTES_LIMIT: usize = 8 * 1024;

fn proxy(upstream: &Upstream) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
limits:
  max_request_body_bytes: 1KiB
  max_uri_bytes: {URI_LIMIT}
  max_request_headers: {HEADER_COUNT_LIMIT}
  max_request_header_bytes: 8KiB
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ))
}

fn assert_refused_raw(resp: &RawResponse, status: u16, reason: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(
        resp.header("x-remora-error"),
        Some(reason),
        "{:?}",
        resp.headers
    );
}

fn post(body: ReqBody) -> http::Request<ReqBody> {
    request("POST", "/upload").body(body).unwrap()
}

#[tokio::test]
async fn a_body_over_the_limit_by_content_length_is_413() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    for proto in Proto::ALL {
        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let reply = client.fetch(post(full(vec![b'x'; BODY_LIMIT]))).await;
        assert_eq!(
            reply.echo().body_bytes(),
            BODY_LIMIT as u64,
            "at the limit is fine"
        );

        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let reply = client.fetch(post(full(vec![b'x'; BODY_LIMIT + 1]))).await;
        assert_eq!(reply.status, 413, "{proto:?}: {}", reply.text());
        assert_eq!(reply.remora_error(), Some("body-too-large"));
    }
    // Refused on the head: the upstream never saw them.
    assert_eq!(upstream.requests(), 2);
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", "body-too-large")],
        2.0,
    );
}

#[tokio::test]
async fn a_chunked_body_going_over_the_limit_is_413() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    for proto in Proto::ALL {
        // No length up front: the proxy finds out while streaming.
        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let within = PatternBody::chunked(1000).with_chunk(100);
        let reply = client.fetch(post(boxed(within))).await;
        let echo = reply.echo();
        assert_eq!(echo.body_bytes(), 1000);
        assert!(echo.body_is_pattern());
        if proto == Proto::Http1 {
            assert_eq!(echo.header("content-length"), None, "sent chunked");
        }

        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let over = PatternBody::chunked(4 * BODY_LIMIT as u64).with_chunk(256);
        let reply = client.fetch(post(boxed(over))).await;
        assert_eq!(reply.status, 413, "{proto:?}: {}", reply.text());
        assert_eq!(reply.remora_error(), Some("body-too-large"));
    }
}

#[test]
fn a_target_over_the_limit_is_414() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let addr = proxy.listener("main");
    let at_limit = format!("/{}", "a".repeat(URI_LIMIT - 1));
    let resp = raw::exchange(
        addr,
        format!("GET {at_limit} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());

    let over = format!(
        "/{}?q={}",
        "a".repeat(URI_LIMIT / 2),
        "b".repeat(URI_LIMIT / 2)
    );
    let resp = raw::exchange(
        addr,
        format!("GET {over} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .unwrap();
    assert_refused_raw(&resp, 414, "uri-too-long");
    assert_eq!(upstream.requests(), 1);
    // Refused before routing: counted with an empty route and cluster.
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "", "", "4xx"),
        1.0,
    );
}

#[test]
fn too_many_headers_is_431() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let addr = proxy.listener("main");
    let request_with = |n: usize| {
        // Host plus n - 1 others.
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 1..n {
            req.push_str(&format!("x-h{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        raw::exchange(addr, req.as_bytes()).unwrap()
    };
    assert_eq!(request_with(HEADER_COUNT_LIMIT).status, 200);
    assert_refused_raw(
        &request_with(HEADER_COUNT_LIMIT + 3),
        431,
        "headers-too-large",
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn too_many_headers_over_h2c_is_431() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let mut req = request("GET", "/");
    for i in 0..HEADER_COUNT_LIMIT + 3 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let reply = remora_tests::client::fetch(
        proxy.listener("main"),
        Proto::H2c,
        req.body(empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, 431, "{}", reply.text());
    assert_eq!(reply.remora_error(), Some("headers-too-large"));
    assert_eq!(upstream.requests(), 0);
}

#[test]
fn headers_over_the_size_limit_are_431() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let addr = proxy.listener("main");
    let with_cookie = |len: usize| {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
            "c".repeat(len)
        );
        raw::exchange(addr, req.as_bytes()).unwrap()
    };
    assert_eq!(with_cookie(HEADER_BYTES_LIMIT / 2).status, 200);
    assert_refused_raw(
        &with_cookie(HEADER_BYTES_LIMIT + 500),
        431,
        "headers-too-large",
    );
    assert_eq!(upstream.requests(), 1);
}

fn proxy_with_timeouts(upstream: &Upstream, limits: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
limits: {limits}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ))
}

/// Reads from `conn` for up to `wait`: `true` if the peer closed it in that time.
fn closed_within(conn: &mut std::net::TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match conn.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected data on an idle connection"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

fn one_request(conn: &mut std::net::TcpStream) {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(RawResponse::read_from(conn, false).unwrap().status, 200);
}

#[test]
fn an_idle_client_connection_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy_with_timeouts(&upstream, "{ idle_timeout: 1s }");
    let mut conn = raw::connect(proxy.listener("main"));
    one_request(&mut conn);
    let idle_from = Instant::now();
    assert!(
        !closed_within(&mut conn, Duration::from_millis(800)),
        "closed before the idle timeout"
    );
    assert!(
        closed_within(&mut conn, Duration::from_secs(3)),
        "still open 3.8 s into a 1 s idle timeout"
    );
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_secs(1), "{idle:?}");
}

#[test]
fn a_request_head_sent_too_slowly_is_cut_off() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy_with_timeouts(&upstream, "{ header_read_timeout: 300ms }");
    let mut conn = raw::connect(proxy.listener("main"));
    let started = Instant::now();
    conn.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    assert!(closed_within(&mut conn, Duration::from_secs(3)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert_eq!(upstream.requests(), 0);
}

/// `header_read_timeout` is documented as the time to send a request head (slowloris
/// defence) and `idle_timeout` (default 1 h) as how long an idle keep-alive connection is kept.
/// But hyper (since 1.6, hyperium/hyper#3828) also starts its header read timer while a
/// keep-alive connection waits for its next request, so the proxy closes every idle HTTP/1.1
/// client connection after `header_read_timeout` (default 10 s): clients that pool connections
/// for 90 s race with that close and fail requests.
#[test]

fn a_keep_alive_connection_outlives_the_header_read_timeout() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy_with_timeouts(
        &upstream,
        "{ header_read_timeout: 300ms, idle_timeout: 1h }",
    );
    let mut conn = raw::connect(proxy.listener("main"));
    one_request(&mut conn);
    assert!(
        !closed_within(&mut conn, Duration::from_secs(1)),
        "an idle keep-alive connection was closed after the header read timeout"
    );
    one_request(&mut conn);
}
