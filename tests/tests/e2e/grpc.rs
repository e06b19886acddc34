//! gRPC through the proxy, seen by a real gRPC client and server (grpcio, `tests/python/`) on an
//! `http2` cluster: every kind of call, metadata and trailers, status codes, the call's
//! `grpc-timeout` as a deadline, and the proxy's own failures as gRPC statuses. Where the exact
//! bytes matter (a deadline the client itself does not enforce, trailers-only responses, request
//! trailers) a hand-made gRPC request from hyper does the asking.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use remora_tests::client::{ReqBody, boxed, request};
use remora_tests::python::{self, PyServer};
use remora_tests::upstream::UpBody;
use remora_tests::{
    Behaviour, ChannelBody, Client, Proto, ProxyProcess, Upstream, free_addr, simple_config,
};
use serde_json::{Value, json};

use crate::request_labels;

/// A proxy whose route `echo` sends `remora.test.Echo` calls, and route `health` the health
/// service, to cluster `grpc` (HTTP/2) at `endpoint`. `timeout` is route `echo`'s.
fn grpc_proxy(endpoint: SocketAddr, timeout: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: echo
        match: {{ path: {{ prefix: /remora.test.Echo }} }}
        cluster: grpc
        timeout: {timeout}
      - name: health
        match: {{ path: {{ prefix: /grpc.health.v1.Health }} }}
        cluster: grpc
clusters:
  - name: grpc
    protocol: http2
    connect_timeout: 1s
    endpoints: [{{ address: "{endpoint}" }}]
"#
    ))
}

fn grpc_server() -> PyServer {
    PyServer::start("grpc_server.py", &[])
}

/// One call from the grpcio client (see `tests/python/grpc_client.py` for `spec`).
fn call(proxy: &ProxyProcess, spec: Value) -> Value {
    python::run(
        "grpc_client.py",
        &[&proxy.listener("main").to_string(), &spec.to_string()],
    )
}

fn echo_path(method: &str) -> String {
    format!("/remora.test.Echo/{method}")
}

/// Metadata the client saw, initial or trailing (a trailers-only response has only the latter).
fn seen<'a>(result: &'a Value, key: &str) -> Option<&'a str> {
    result["initial"][key]
        .as_str()
        .or_else(|| result["trailing"][key].as_str())
}

fn assert_code(result: &Value, code: &str) {
    assert_eq!(result["code"], code, "{result:#}");
}

#[test]
fn unary_calls_and_the_health_service_pass_through() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");

    let health = call(
        &proxy,
        json!({"kind": "health", "service": "remora.test.Echo"}),
    );
    assert_code(&health, "OK");
    assert_eq!(health["responses"], json!(["SERVING"]));

    let result = call(
        &proxy,
        json!({"kind": "unary", "path": echo_path("Unary"), "requests": ["hello"],
               "metadata": {"x-custom": "from-client"}}),
    );
    assert_code(&result, "OK");
    assert_eq!(result["responses"], json!(["hello"]));
    assert_eq!(result["initial"]["x-initial"], "hello");
    assert_eq!(result["trailing"]["x-trailer"], "from-server");
    // The server got the client's metadata and the proxy's additions.
    let keys = result["trailing"]["x-seen-metadata"].as_str().unwrap();
    for key in ["x-custom", "x-request-id", "x-forwarded-for", "traceparent"] {
        assert!(keys.split(',').any(|k| k == key), "{key} not in {keys}");
    }
    assert_eq!(seen(&result, "x-remora-error"), None);
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "echo", "grpc", "2xx"),
        1.0,
    );
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "health", "grpc", "2xx"),
        1.0,
    );
}

#[test]
fn server_client_and_bidirectional_streams_pass_through() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");

    let result = call(
        &proxy,
        json!({"kind": "server_stream", "path": echo_path("ServerStream"), "requests": ["m"],
               "metadata": {"x-count": "5", "x-interval-ms": "20"}}),
    );
    assert_code(&result, "OK");
    assert_eq!(
        result["responses"],
        json!(["m-0", "m-1", "m-2", "m-3", "m-4"])
    );
    assert_eq!(result["trailing"]["x-trailer"], "from-server");

    let result = call(
        &proxy,
        json!({"kind": "client_stream", "path": echo_path("ClientStream"),
               "requests": ["a", "b", "c"]}),
    );
    assert_code(&result, "OK");
    assert_eq!(result["responses"], json!(["a|b|c"]));

    let result = call(
        &proxy,
        json!({"kind": "bidi", "path": echo_path("Bidi"), "requests": ["x", "y", "z"]}),
    );
    assert_code(&result, "OK");
    assert_eq!(result["responses"], json!(["echo:x", "echo:y", "echo:z"]));
    assert_eq!(result["trailing"]["x-trailer"], "from-server");
}

#[test]
fn status_codes_details_and_trailing_metadata_from_the_server_pass_through() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    for (kind, method) in [("unary", "Unary"), ("server_stream", "ServerStream")] {
        let result = call(
            &proxy,
            json!({"kind": kind, "path": echo_path(method), "requests": ["q"],
                   "metadata": {"x-fail-code": "NOT_FOUND",
                                "x-fail-details": "no such thing: 100% gone"}}),
        );
        assert_code(&result, "NOT_FOUND");
        assert_eq!(result["details"], "no such thing: 100% gone");
        assert_eq!(result["trailing"]["x-trailer"], "from-server");
        assert_eq!(
            seen(&result, "x-remora-error"),
            None,
            "the server's own status"
        );
    }
    assert_eq!(
        proxy.metric(
            "remora_proxy_errors_total",
            &[("listener", "main"), ("reason", "no-route")]
        ),
        None
    );
}

#[test]
fn a_call_no_route_matches_is_unimplemented() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let result = call(
        &proxy,
        json!({"kind": "unary", "path": "/other.Service/Call", "requests": ["q"]}),
    );
    assert_code(&result, "UNIMPLEMENTED");
    assert_eq!(seen(&result, "x-remora-error"), Some("no-route"));
    assert!(
        result["details"].as_str().unwrap().contains("no-route"),
        "{result:#}"
    );
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", "no-route")],
        1.0,
    );
}

#[test]
fn a_call_to_a_dead_endpoint_is_unavailable() {
    let proxy = grpc_proxy(free_addr(), "15s");
    for (kind, method) in [("unary", "Unary"), ("bidi", "Bidi")] {
        let result = call(
            &proxy,
            json!({"kind": kind, "path": echo_path(method), "requests": ["q"]}),
        );
        assert_code(&result, "UNAVAILABLE");
        assert_eq!(seen(&result, "x-remora-error"), Some("connect-failed"));
    }
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", "connect-failed")],
        2.0,
    );
}

#[test]
fn a_client_deadline_shorter_than_the_route_timeout_is_deadline_exceeded() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let started = Instant::now();
    let result = call(
        &proxy,
        json!({"kind": "unary", "path": echo_path("Unary"), "requests": ["q"],
               "metadata": {"x-sleep-ms": "3000"}, "timeout": 0.5}),
    );
    assert_code(&result, "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[test]
fn the_route_timeout_still_bounds_a_call_with_a_longer_deadline() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "300ms");
    let result = call(
        &proxy,
        json!({"kind": "unary", "path": echo_path("Unary"), "requests": ["q"],
               "metadata": {"x-sleep-ms": "3000"}, "timeout": 10}),
    );
    assert_code(&result, "DEADLINE_EXCEEDED");
    assert_eq!(seen(&result, "x-remora-error"), Some("upstream-timeout"));
}

#[test]
fn the_server_sees_the_deadline_the_client_set() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let result = call(
        &proxy,
        json!({"kind": "unary", "path": echo_path("Unary"), "requests": ["q"], "timeout": 2}),
    );
    assert_code(&result, "OK");
    let left: u64 = result["trailing"]["x-time-remaining-ms"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no deadline at the server: {result:#}"));
    assert!((1000..=2000).contains(&left), "{left} ms left of 2 s");
}

/// A gRPC message: flag byte, length, payload.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// A body of `frames` sent in order, then the end.
fn frames_body(frames: Vec<Frame<Bytes>>) -> ReqBody {
    let (tx, body) = ChannelBody::new(frames.len());
    for f in frames {
        tx.try_send(Ok(f)).expect("room for every frame");
    }
    boxed(body)
}

/// A hand-made gRPC request: `grpc-timeout` as given, which a gRPC library would also enforce
/// itself; here only the proxy does.
fn grpc_request(
    path: &str,
    grpc_timeout: &str,
    metadata: &[(&str, &str)],
) -> http::Request<ReqBody> {
    let mut b = request("POST", path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout);
    for (k, v) in metadata {
        b = b.header(*k, *v);
    }
    b.body(frames_body(vec![Frame::data(grpc_frame(b"q"))]))
        .unwrap()
}

/// Reads a response to its end: head, data and trailers.
async fn read_all(resp: Response<Incoming>) -> (http::response::Parts, Bytes, Option<HeaderMap>) {
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("response body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn a_deadline_passing_before_the_response_head_is_a_trailers_only_deadline_exceeded() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    let started = Instant::now();
    let resp = client
        .send(grpc_request(
            &echo_path("Unary"),
            "300m",
            &[("x-sleep-ms", "2000")],
        ))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1500),
        "answered after {waited:?} for a 300m grpc-timeout: {:?}",
        resp.headers()
    );
    // Trailers-only: one HEADERS frame that ends the stream.
    assert!(resp.body().is_end_stream(), "{:?}", resp.headers());
    let (head, body, trailers) = read_all(resp).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(head.headers["grpc-status"], "4");
    assert_eq!(head.headers["x-remora-error"], "deadline-exceeded");
    let message = head.headers["grpc-message"].to_str().unwrap();
    assert!(message.contains("grpc-timeout of 300ms"), "{message}");
    assert!(body.is_empty() && trailers.is_none());
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", "deadline-exceeded")],
        1.0,
    );
    // The upstream's stream was dropped: the server finds its call cancelled when it wakes.
    let cancelled = server.wait_event(Duration::from_secs(5), |e| {
        (e["event"] == "unary").then(|| e["cancelled"].as_bool())
    });
    assert_eq!(cancelled, Some(true));
}

#[tokio::test]
async fn a_deadline_passing_mid_stream_ends_the_response_with_grpc_status_4() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    let started = Instant::now();
    // 50 messages 100 ms apart: about 5 fit in the deadline.
    let resp = client
        .send(grpc_request(
            &echo_path("ServerStream"),
            "500m",
            &[("x-count", "50"), ("x-interval-ms", "100")],
        ))
        .await
        .unwrap();
    let (head, body, trailers) = read_all(resp).await;
    let waited = started.elapsed();
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["x-initial"], "hello");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(2000),
        "ended after {waited:?}"
    );
    assert!(!body.is_empty(), "the messages before the deadline arrive");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "4");
    assert_eq!(trailers["x-remora-error"], "deadline-exceeded");
    proxy.wait_metric(
        "remora_proxy_errors_total",
        &[("listener", "main"), ("reason", "deadline-exceeded")],
        1.0,
    );
    let (sent, cancelled) = server.wait_event(Duration::from_secs(5), |e| {
        (e["event"] == "server_stream").then(|| (e["sent"].as_u64(), e["cancelled"].as_bool()))
    });
    assert_eq!(cancelled, Some(true), "the upstream stream was not dropped");
    assert!(sent.unwrap() < 20, "the server went on sending: {sent:?}");
}

#[tokio::test]
async fn a_call_the_client_cancels_is_cancelled_upstream_and_counted_as_499() {
    let server = grpc_server();
    let proxy = grpc_proxy(server.addr(), "15s");
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    // Dropping the response future resets the stream, as a gRPC client cancelling does.
    let req = grpc_request(&echo_path("Unary"), "10S", &[("x-sleep-ms", "1000")]);
    let sent = tokio::time::timeout(Duration::from_millis(200), client.send(req)).await;
    assert!(sent.is_err(), "answered before the cancel");
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "echo", "grpc", "4xx"),
        1.0,
    );
    let cancelled = server.wait_event(Duration::from_secs(5), |e| {
        (e["event"] == "unary").then(|| e["cancelled"].as_bool())
    });
    assert_eq!(cancelled, Some(true));
}

#[tokio::test]
async fn the_upstream_gets_what_is_left_of_the_grpc_timeout() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config("http2", &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    let reply = client.fetch(grpc_request("/svc/M", "5S", &[])).await;
    let forwarded = reply.echo().header("grpc-timeout").unwrap().to_owned();
    let left = remora_proxy::grpc::parse_timeout(forwarded.as_bytes())
        .unwrap_or_else(|| panic!("bad grpc-timeout {forwarded:?}"));
    assert!(
        left <= Duration::from_secs(5) && left > Duration::from_secs(4),
        "{forwarded} ({left:?}) for 5S"
    );
    assert_ne!(forwarded, "5S", "rewritten in the finest unit: {forwarded}");

    // Not a gRPC call: the header means nothing to the proxy and goes as it came.
    let reply = client
        .fetch(
            request("POST", "/plain")
                .header("content-type", "application/json")
                .header("grpc-timeout", "5S")
                .body(remora_tests::client::full("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.echo().header("grpc-timeout"), Some("5S"));
}

#[tokio::test]
async fn request_and_response_trailers_pass_through_both_ways() {
    // Reads the request to its end and answers with its body size, then trailers: the request's
    // own trailers back, plus one of its own.
    let upstream = Upstream::start(Behaviour::custom(|req, _| async move {
        let collected = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?;
        let mut trailers = collected.trailers().cloned().unwrap_or_default();
        trailers.insert("x-upstream-trailer", HeaderValue::from_static("yes"));
        let size = collected.to_bytes().len();
        let (tx, body) = ChannelBody::new(2);
        tx.try_send(Ok(Frame::data(Bytes::from(format!("{size} bytes")))))
            .unwrap();
        tx.try_send(Ok(Frame::trailers(trailers))).unwrap();
        let body: UpBody = body.boxed();
        Ok(Response::new(body))
    }));
    // HTTP/2 on both sides, as for gRPC. (HTTP/1.1 carries trailers only when a `Trailer`
    // header announces them, which gRPC never sends.)
    let proxy = ProxyProcess::start(&simple_config("http2", &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    let mut request_trailers = HeaderMap::new();
    request_trailers.insert("x-client-trailer", HeaderValue::from_static("sent-last"));
    let req = request("POST", "/trailers")
        .header("te", "trailers")
        .body(frames_body(vec![
            Frame::data(Bytes::from_static(b"12345")),
            Frame::trailers(request_trailers),
        ]))
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let (head, body, trailers) = read_all(resp).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(body, "5 bytes");
    let trailers = trailers.expect("response trailers");
    assert_eq!(trailers["x-upstream-trailer"], "yes");
    assert_eq!(
        trailers["x-client-trailer"], "sent-last",
        "the request's trailers did not reach the upstream"
    );
}
