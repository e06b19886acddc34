//! HTTP/1.1 and h2c (prior knowledge) downstream, to http1 and http2 (h2c) clusters: every
//! combination carries method, target, host and body, and speaks the cluster's protocol upstream.

use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use remora_tests::client::{empty, pattern, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, simple_config};

async fn check_combination(downstream: Proto, cluster_protocol: &str) {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config(cluster_protocol, &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), downstream).await;

    let reply = client
        .fetch(
            request("GET", "/a/b?x=1&y=two")
                .header("host", "svc.local:8080")
                .body(empty())
                .unwrap(),
        )
        .await;
    let want_version = match downstream {
        Proto::Http1 => Version::HTTP_11,
        Proto::H2c => Version::HTTP_2,
    };
    assert_eq!(reply.version, want_version);
    let echo = reply.echo();
    assert_eq!(echo.method(), "GET");
    assert_eq!(echo.path(), "/a/b");
    assert_eq!(echo.query(), Some("x=1&y=two"));
    assert_eq!(echo.host(), Some("svc.local:8080"), "{:?}", echo.0);
    match cluster_protocol {
        "http1" => {
            assert_eq!(echo.version(), "HTTP/1.1");
            // Origin-form target and a Host header, whatever the client spoke.
            assert_eq!(echo.uri(), "/a/b?x=1&y=two");
            assert_eq!(echo.header_all("host"), ["svc.local:8080"]);
        }
        _ => {
            assert_eq!(echo.version(), "HTTP/2.0");
            // :scheme and :authority instead of a Host header.
            assert_eq!(echo.uri(), "http://svc.local:8080/a/b?x=1&y=two");
            assert_eq!(echo.header("host"), None);
        }
    }

    let reply = client
        .fetch(request("POST", "/upload").body(pattern(300_000)).unwrap())
        .await;
    let echo = reply.echo();
    assert_eq!(echo.method(), "POST");
    assert_eq!(echo.body_bytes(), 300_000);
    assert!(echo.body_is_pattern());

    // Sequential requests reuse one pooled upstream connection.
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn http1_client_to_http1_cluster() {
    check_combination(Proto::Http1, "http1").await;
}

#[tokio::test]
async fn http1_client_to_http2_cluster() {
    check_combination(Proto::Http1, "http2").await;
}

#[tokio::test]
async fn h2c_client_to_http1_cluster() {
    check_combination(Proto::H2c, "http1").await;
}

#[tokio::test]
async fn h2c_client_to_http2_cluster() {
    check_combination(Proto::H2c, "http2").await;
}

#[tokio::test]
async fn h2c_streams_run_concurrently_over_one_upstream_connection() {
    const STREAMS: usize = 10;
    const DELAY: Duration = Duration::from_millis(300);
    let upstream = Upstream::start(Behaviour::Echo.delayed(DELAY));
    let proxy = ProxyProcess::start(&simple_config("http2", &[upstream.addr()]));
    let client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    let started = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let mut c = client.try_clone().expect("h2 handles clone");
            tokio::spawn(async move { c.get(&format!("/stream/{i}")).await })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.echo().path(), format!("/stream/{i}"));
    }
    let elapsed = started.elapsed();
    // One after the other would take STREAMS x DELAY = 3 s.
    assert!(
        elapsed < DELAY * 5,
        "{STREAMS} streams of {DELAY:?} took {elapsed:?}"
    );
    assert_eq!(upstream.requests(), STREAMS);
    assert_eq!(upstream.connections(), 1);
}

/// Sends `request` as raw bytes to a proxy in front of an echo upstream.
fn raw_exchange(upstream: &Upstream, request: &str) -> remora_tests::raw::RawResponse {
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    remora_tests::raw::exchange(proxy.listener("main"), request.as_bytes()).unwrap()
}

#[test]
fn an_http10_request_without_host_gets_the_endpoint_as_host() {
    let upstream = Upstream::start(Behaviour::Echo);
    let resp = raw_exchange(&upstream, "GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = remora_tests::Echo::parse(&resp.body);
    assert_eq!(echo.version(), "HTTP/1.1");
    assert_eq!(echo.header_all("host"), [upstream.addr().to_string()]);
}

#[test]
fn an_http11_request_without_host_is_400_bad_request() {
    let upstream = Upstream::start(Behaviour::Echo);
    let resp = raw_exchange(&upstream, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("x-remora-error"), Some("bad-request"));
    assert_eq!(upstream.requests(), 0);
}

#[test]
fn head_responses_have_headers_but_no_body_and_keep_the_connection() {
    use std::io::Write;

    use remora_tests::raw::{self, RawResponse};
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    let mut conn = raw::connect(proxy.listener("main"));
    conn.write_all(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let head = RawResponse::read_from(&mut conn, true).unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // The echo's length is announced although no body follows.
    let announced: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(announced > 0);
    // The next request on the same connection is read as a request, not as leftover body.
    conn.write_all(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let next = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(next.status, 200);
    assert_eq!(remora_tests::Echo::parse(&next.body).path(), "/after");
    assert_eq!(upstream.heads()[0].method, http::Method::HEAD);
}

#[test]
fn expect_100_continue_gets_its_interim_response_before_the_body_is_sent() {
    use std::io::Write;

    use remora_tests::raw::{self, RawResponse};
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    let mut conn = raw::connect(proxy.listener("main"));
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    // Without the interim response, clients like curl wait a second before sending anyway.
    let interim = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(interim.status, 100);
    conn.write_all(b"hello").unwrap();
    let done = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(done.status, 200);
    assert_eq!(remora_tests::Echo::parse(&done.body).body_bytes(), 5);
}

/// RFC 9112 section 3.2.2: a proxy receiving an absolute-form target must ignore the received
/// Host and replace it with the target's authority. The proxy routes by the authority, but
/// forwards the client's Host unchanged, so the upstream sees a different host than the one the
/// route was chosen for.
#[test]

fn an_absolute_form_target_replaces_the_host_header() {
    let upstream = Upstream::start(Behaviour::Echo);
    let resp = raw_exchange(
        &upstream,
        "GET http://api.local/x?y=1 HTTP/1.1\r\nHost: other.local\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = remora_tests::Echo::parse(&resp.body);
    assert_eq!(echo.uri(), "/x?y=1");
    assert_eq!(echo.header_all("host"), ["api.local"]);
}

#[test]
fn an_absolute_form_target_without_host_gets_its_authority_as_host() {
    let upstream = Upstream::start(Behaviour::Echo);
    let resp = raw_exchange(&upstream, "GET http://api.local/x?y=1 HTTP/1.1\r\n\r\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = remora_tests::Echo::parse(&resp.body);
    assert_eq!(echo.uri(), "/x?y=1");
    assert_eq!(echo.header_all("host"), ["api.local"]);
}

/// An HTTP/2 upstream connection nobody has used for the cluster's idle_timeout leaves the
/// pool and closes (HTTP/1.1 ones are covered by the pool's idle stack the same way).
#[tokio::test]
async fn an_idle_http2_upstream_connection_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::start(Behaviour::Echo);
    let config = remora_tests::simple_config("http2", &[upstream.addr()]).replace(
        "    protocol: http2\n",
        "    protocol: http2\n    idle_timeout: 1s\n",
    );
    let proxy = ProxyProcess::start(&config);
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/").await;
    assert_eq!(reply.status, 200);
    let open = [("cluster", "app")];
    proxy.wait_metric("remora_upstream_connections_open", &open, 1.0);
    let started = Instant::now();
    proxy.wait_metric("remora_upstream_connections_open", &open, 0.0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}, before the idle timeout"
    );
    // A new request opens a new connection.
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/").await;
    assert_eq!(reply.status, 200);
    proxy.wait_metric("remora_upstream_connections_total", &open, 2.0);
}
