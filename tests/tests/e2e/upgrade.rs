//! HTTP/1.1 Upgrade through the proxy: a real WebSocket client and server (`websockets`,
//! `tests/python/`) talking through it, any other protocol as raw bytes, an upstream that
//! refuses, and `Upgrade: h2c`, which is never tunnelled.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use remora_tests::python::{self, PyServer};
use remora_tests::raw::{self, RawResponse, RawServer};
use remora_tests::{Behaviour, Echo, ProxyProcess, Upstream, simple_config};
use serde_json::Value;

use crate::request_labels;

fn ws_server() -> PyServer {
    PyServer::start("ws_server.py", &[])
}

/// Runs a `tests/python/ws_client.py` scenario against `ws://<proxy>/chat`.
fn ws_client(proxy: &ProxyProcess, scenario: &str) -> Value {
    let url = format!("ws://{}/chat", proxy.listener("main"));
    python::run("ws_client.py", &[&url, scenario])
}

/// Waits for the server's report that a connection ended; returns the close code and reason it
/// received.
fn server_saw_close(server: &PyServer) -> (Option<u64>, Option<String>) {
    server.wait_event(Duration::from_secs(10), |e| {
        (e["event"] == "closed")
            .then(|| (e["code"].as_u64(), e["reason"].as_str().map(str::to_owned)))
    })
}

#[test]
fn a_websocket_echoes_text_and_binary_and_the_client_closes() {
    // The upgrade goes over HTTP/1.1 whatever the cluster's protocol.
    for protocol in ["http1", "http2"] {
        let server = ws_server();
        let proxy = ProxyProcess::start(&simple_config(protocol, &[server.addr()]));
        let result = ws_client(&proxy, "client-close");

        assert_eq!(result["response_status"], 101, "{result:#}");
        assert_eq!(result["echo_text"], "hello through remora");
        assert_eq!(result["echo_binary_ok"], true);
        // The upgrade request got the proxy's header rules like any other.
        let saw = &result["server_saw_headers"];
        assert_eq!(saw["upgrade"], "websocket", "{saw:#}");
        assert_eq!(saw["connection"], "upgrade");
        assert_eq!(saw["x-forwarded-for"], "127.0.0.1");
        assert!(saw["x-request-id"].is_string(), "{saw:#}");
        assert_eq!(result["close_code"], 1000);
        assert_eq!(
            server_saw_close(&server),
            (Some(1000), Some("bye from client".into()))
        );

        proxy.wait_metric(
            "remora_requests_total",
            &request_labels("main", "all", "app", "1xx"),
            1.0,
        );
        proxy.wait_metric(
            "remora_upstream_connections_open",
            &[("cluster", "app")],
            0.0,
        );
        // The 16 KiB binary message went through the tunnel, and was counted both ways.
        let m = proxy.scrape();
        let listener = [("listener", "main"), ("direction", "inbound")];
        for (name, labels) in [
            ("remora_downstream_received_bytes_total", &listener[..]),
            ("remora_downstream_sent_bytes_total", &listener[..]),
            (
                "remora_upstream_received_bytes_total",
                &[("cluster", "app")][..],
            ),
            (
                "remora_upstream_sent_bytes_total",
                &[("cluster", "app")][..],
            ),
        ] {
            let bytes = m.get(name, labels).unwrap_or_default();
            assert!(bytes > 16384.0, "{name} is {bytes}");
        }
        let log = proxy.stderr().text();
        assert!(log.contains("upgraded connection closed"), "{log}");
    }
}

#[test]
fn a_websocket_closed_by_the_server() {
    let server = ws_server();
    let proxy = ProxyProcess::start(&simple_config("http1", &[server.addr()]));
    let result = ws_client(&proxy, "server-close");
    assert_eq!(result["response_status"], 101, "{result:#}");
    assert_eq!(result["close_code"], 4001);
    assert_eq!(result["close_reason"], "bye from server");
    proxy.wait_metric(
        "remora_upstream_connections_open",
        &[("cluster", "app")],
        0.0,
    );
}

const UPGRADE_ECHO: &[u8] =
    b"GET /tunnel HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n";

/// An upstream that switches to `echo/1`: echoes bytes until the client half-closes, then says
/// `bye` and closes.
fn echo_protocol_upstream() -> RawServer {
    RawServer::start(|mut stream| {
        if raw::read_head(&mut stream).is_err() {
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n",
        );
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = stream.write_all(b"bye");
        let _ = stream.shutdown(Shutdown::Write);
    })
}

/// Sends [`UPGRADE_ECHO`] through `proxy` and reads the 101.
fn open_tunnel(proxy: &ProxyProcess) -> (TcpStream, RawResponse) {
    let mut conn = raw::connect(proxy.listener("main"));
    conn.write_all(UPGRADE_ECHO).unwrap();
    let head = RawResponse::read_from(&mut conn, false).unwrap();
    (conn, head)
}

#[test]
fn any_protocol_is_tunnelled_and_half_closes_pass_through() {
    let upstream = echo_protocol_upstream();
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    let (mut conn, head) = open_tunnel(&proxy);
    assert_eq!(head.status, 101, "{head:?}");
    assert_eq!(head.header("upgrade"), Some("echo/1"));
    assert!(
        head.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{head:?}"
    );

    for round in 0..3 {
        let msg = format!("ping {round}");
        conn.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    // Our half-close reaches the upstream, which answers and closes its side.
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"bye");

    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "all", "app", "1xx"),
        1.0,
    );
    proxy.wait_metric(
        "remora_upstream_connections_open",
        &[("cluster", "app")],
        0.0,
    );
    proxy.wait_metric(
        "remora_downstream_connections_open",
        &[("listener", "main"), ("direction", "inbound")],
        0.0,
    );
}

#[test]
fn a_quiet_tunnel_is_closed_after_the_idle_timeout() {
    let upstream = echo_protocol_upstream();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
limits: {{ idle_timeout: 1s }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ));
    let (mut conn, head) = open_tunnel(&proxy);
    assert_eq!(head.status, 101);
    let quiet_from = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    let n = conn.read(&mut byte).expect("closed, not timed out");
    let quiet = quiet_from.elapsed();
    assert_eq!(n, 0);
    assert!(
        quiet >= Duration::from_secs(1) && quiet < Duration::from_secs(3),
        "closed after {quiet:?} for a 1 s idle timeout"
    );
    proxy.wait_metric(
        "remora_upstream_connections_open",
        &[("cluster", "app")],
        0.0,
    );
}

#[test]
fn an_upstream_refusing_the_upgrade_is_relayed_and_the_connection_goes_on() {
    let upstream = Upstream::start(Behaviour::Status(400));
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    let mut conn = raw::connect(proxy.listener("main"));
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let resp = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.header("x-remora-error"), None, "the upstream's answer");
    assert_eq!(resp.header("upgrade"), None);
    let head = &upstream.heads()[0];
    assert_eq!(head.headers["upgrade"], "websocket");
    assert_eq!(head.headers["connection"], "upgrade");
    assert_eq!(
        head.headers["sec-websocket-key"],
        "dGhlIHNhbXBsZSBub25jZQ=="
    );

    conn.write_all(b"GET /next HTTP/1.1\r\nHost: svc\r\n\r\n")
        .unwrap();
    let next = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(next.status, 400);
    assert_eq!(upstream.heads()[1].uri, "/next");
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "all", "app", "4xx"),
        2.0,
    );
}

#[test]
fn an_h2c_upgrade_is_served_as_plain_http11() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));
    let mut conn = raw::connect(proxy.listener("main"));
    // The second time `Connection` does not name HTTP2-Settings: it is dropped anyway.
    for connection in ["Upgrade, HTTP2-Settings", "Upgrade"] {
        let req = format!(
            "GET /h2c HTTP/1.1\r\nHost: svc\r\nConnection: {connection}\r\nUpgrade: h2c\r\n\
             HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).unwrap();
        let resp = RawResponse::read_from(&mut conn, false).unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.header("upgrade"), None);
        let echo = Echo::parse(&resp.body);
        assert_eq!(echo.version(), "HTTP/1.1");
        for name in ["upgrade", "http2-settings", "connection"] {
            assert_eq!(echo.header(name), None, "{name} reached the upstream");
        }
    }
    // Still HTTP/1.1 on the same connection.
    conn.write_all(b"GET /after HTTP/1.1\r\nHost: svc\r\n\r\n")
        .unwrap();
    let after = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(Echo::parse(&after.body).path(), "/after");
    assert_eq!(upstream.connections(), 1);
}
