//! Protocol detection on `protocol: auto` listeners: the first bytes of a connection decide
//! whether it is served as HTTP (an HTTP/1.x request line, the HTTP/2 preface) or forwarded as
//! opaque TCP to the fallback cluster (a TLS ClientHello, anything else, and silence that lasts
//! the detect timeout: a client waiting for the server to speak first).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use remora_tests::body::pattern_bytes;
use remora_tests::raw::{self, RawResponse};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, RawServer, Upstream, wait_for};

/// The detect timeout configured on both listeners.
const DETECT: Duration = Duration::from_millis(200);

/// Generous bound on anything that should take milliseconds, for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(2);

/// The start of a TLS 1.2/1.3 ClientHello: a handshake record (0x16), legacy version 3.1, its
/// length, then the handshake header (type 1, ClientHello) and the client version 3.3.
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03, 0x5a, 0x5a, 0x5a, 0x5a, 0x00,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x00, 0x02, 0x13, 0x01, 0x01,
    0x00,
];

/// A binary protocol: a length-prefixed frame, as Kafka, Postgres or Thrift would send.
const BINARY: &[u8] = &[
    0x00, 0x00, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0xca, 0xfe, 0xba, 0xbe,
];

/// `auto` forwards what is not HTTP to `opaque`; `strict` has no fallback and closes it.
fn config(web: &Upstream, opaque: SocketAddr) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: auto
    address: 127.0.0.1:0
    protocol: auto
    routes: [{{ name: all, cluster: web }}]
    cluster: opaque
    detect_timeout: 200ms
  - name: strict
    address: 127.0.0.1:0
    protocol: auto
    routes: [{{ name: all, cluster: web }}]
    detect_timeout: 200ms
clusters:
  - name: web
    endpoints: [{{ address: "{}" }}]
  - name: opaque
    endpoints: [{{ address: "{opaque}" }}]
"#,
        web.addr()
    )
}

fn detections(proxy: &ProxyProcess, listener: &str, result: &str) -> f64 {
    proxy
        .metric(
            "remora_protocol_detections_total",
            &[("listener", listener), ("result", result)],
        )
        .unwrap_or(0.0)
}

fn wait_detections(proxy: &ProxyProcess, listener: &str, result: &str, want: f64) {
    proxy.wait_metric(
        "remora_protocol_detections_total",
        &[("listener", listener), ("result", result)],
        want,
    );
}

/// Writes `data` on a new connection, half-closes, and reads everything that comes back.
fn round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut conn = raw::connect(addr);
    let mut writer = conn.try_clone().unwrap();
    let data = data.to_vec();
    // On a thread: the echo sends back while this one is still writing a large body.
    let sending = std::thread::spawn(move || {
        writer.write_all(&data).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    conn.read_to_end(&mut back).unwrap();
    sending.join().unwrap();
    back
}

/// Whether the proxy closes `conn` (end of stream or reset) within `within`, without sending
/// anything.
fn closed_without_a_byte(conn: &mut TcpStream, within: Duration) -> bool {
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("got {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read: {e}"),
    }
}

#[tokio::test]
async fn http1_and_h2c_on_an_auto_listener_are_routed() {
    let web = Upstream::start_named("web", Behaviour::Echo);
    let opaque = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&config(&web, opaque.addr()));
    for listener in ["auto", "strict"] {
        let addr = proxy.listener(listener);
        for proto in Proto::ALL {
            let mut client = Client::connect(addr, proto).await;
            let reply = client.get("/hello?x=1").await;
            assert_eq!(reply.echo().upstream(), "web", "{listener} {proto:?}");
            assert_eq!(reply.echo().uri(), "/hello?x=1");
            let downstream = match proto {
                Proto::Http1 => http::Version::HTTP_11,
                Proto::H2c => http::Version::HTTP_2,
            };
            assert_eq!(reply.version, downstream);
            // The connection stays HTTP for the requests after the first.
            assert_eq!(client.get("/again").await.echo().path(), "/again");
        }
        wait_detections(&proxy, listener, "http1", 1.0);
        wait_detections(&proxy, listener, "http2", 1.0);
    }

    // A request line that stalls past the detect timeout after two bytes is still HTTP.
    let mut conn = raw::connect(proxy.listener("auto"));
    conn.write_all(b"GE").unwrap();
    std::thread::sleep(DETECT + Duration::from_millis(100));
    conn.write_all(b"T /slow-line HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = RawResponse::read_from(&mut conn, false).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("/slow-line"), "{}", resp.text());
    wait_detections(&proxy, "auto", "http1", 2.0);

    assert_eq!(opaque.connections(), 0, "nothing went to the fallback");
}

#[tokio::test]
async fn binary_bytes_and_a_tls_client_hello_go_to_the_fallback_intact() {
    let web = Upstream::start_named("web", Behaviour::Echo);
    let opaque = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&config(&web, opaque.addr()));
    let auto = proxy.listener("auto");

    // A frame followed by a megabyte, all of it echoed back unchanged.
    let mut binary = BINARY.to_vec();
    binary.extend(pattern_bytes(1 << 20));
    assert!(round_trip(auto, &binary) == binary, "binary stream changed");
    let mut tls = CLIENT_HELLO.to_vec();
    tls.extend(pattern_bytes(64 * 1024));
    assert!(round_trip(auto, &tls) == tls, "TLS stream changed");
    // Text that is not an HTTP request line (a lowercase method) is opaque too.
    let text = b"get / http/1.1\r\n\r\n".to_vec();
    assert_eq!(round_trip(auto, &text), text);

    assert_eq!(opaque.connections(), 3);
    wait_detections(&proxy, "auto", "opaque", 2.0);
    wait_detections(&proxy, "auto", "tls", 1.0);
    let inbound = [("listener", "auto"), ("direction", "inbound")];
    proxy.wait_metric(
        "remora_tcp_connection_duration_seconds_count",
        &inbound,
        3.0,
    );
    proxy.wait_metric(
        "remora_upstream_connections_total",
        &[("cluster", "opaque")],
        3.0,
    );
    assert_eq!(web.requests(), 0);
}

#[tokio::test]
async fn a_server_that_speaks_first_greets_a_silent_client_after_the_detect_timeout() {
    const GREETING: &[u8] = b"220 mail.example ESMTP ready\r\n";
    let smtp = speaks_first(GREETING);
    let web = Upstream::start_named("web", Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&web, smtp.addr()));

    let start = Instant::now();
    let mut conn = raw::connect(proxy.listener("auto"));
    let mut greeting = vec![0u8; GREETING.len()];
    conn.read_exact(&mut greeting).unwrap();
    let waited = start.elapsed();
    assert_eq!(greeting, GREETING);
    assert!(
        waited >= DETECT - Duration::from_millis(50) && waited < Duration::from_secs(1),
        "greeted after {waited:?}; the detect timeout is {DETECT:?}"
    );
    // Then the connection is an ordinary tunnel.
    conn.write_all(b"EHLO client.example\r\n").unwrap();
    let mut back = vec![0u8; 21];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, b"EHLO client.example\r\n");
    wait_detections(&proxy, "auto", "timeout", 1.0);
    assert_eq!(smtp.connections(), 1);
}

/// A server that greets on connect, like SMTP or MySQL, then echoes.
fn speaks_first(greeting: &'static [u8]) -> RawServer {
    RawServer::start(move |mut stream| {
        if stream.write_all(greeting).is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            if stream.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// A port in `opaque_ports` skips detection: a server-speaks-first protocol greets at once
/// instead of after the detect timeout (10 s here, so waiting for it would fail the test), and
/// bytes that look like HTTP are forwarded as bytes. The same listener's other port (none
/// here: the control) still detects.
#[tokio::test]
async fn an_opaque_port_skips_detection_and_forwards_bytes_at_once() {
    const GREETING: &[u8] = b"* OK imap.example ready\r\n";
    let imap = speaks_first(GREETING);
    let web = Upstream::start_named("web", Behaviour::Echo);
    let [opaque_addr, detecting_addr] = remora_tests::free_addrs(2)[..] else {
        unreachable!()
    };
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: opaque
    address: "{opaque_addr}"
    protocol: auto
    routes: [{{ name: all, cluster: web }}]
    cluster: imap
    detect_timeout: 10s
    opaque_ports: [{opaque_port}]
  - name: detecting
    address: "{detecting_addr}"
    protocol: auto
    routes: [{{ name: all, cluster: web }}]
    cluster: imap
    detect_timeout: 10s
    opaque_ports: [{other_port}]
clusters:
  - name: web
    endpoints: [{{ address: "{web}" }}]
  - name: imap
    endpoints: [{{ address: "{imap}" }}]
"#,
        opaque_port = opaque_addr.port(),
        other_port = opaque_addr.port(),
        web = web.addr(),
        imap = imap.addr(),
    ));

    let start = Instant::now();
    let mut conn = raw::connect(proxy.listener("opaque"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = vec![0u8; GREETING.len()];
    conn.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting, GREETING);
    assert!(
        start.elapsed() < PROMPTLY,
        "greeted after {:?}: detection was not skipped",
        start.elapsed()
    );
    // HTTP on an opaque port is bytes too: echoed by the IMAP server, not routed to web.
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut back = vec![0u8; 27];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(back, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
    drop(conn);
    assert_eq!(web.requests(), 0);

    // The control: the same config but for the port, and a silent client waits.
    let mut conn = raw::connect(proxy.listener("detecting"));
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 8];
    let early = conn.read(&mut buf);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a detecting port greeted before its timeout: {early:?}"
    );
    // Counted as TCP connections of the listener, never as a detection.
    proxy.wait_metric(
        "remora_tcp_connection_duration_seconds_count",
        &[("listener", "opaque"), ("direction", "inbound")],
        1.0,
    );
    for result in ["http1", "http2", "tls", "other", "timeout"] {
        assert_eq!(detections(&proxy, "opaque", result), 0.0, "{result}");
    }
}

#[test]
fn without_a_fallback_what_is_not_http_is_closed() {
    let web = Upstream::start_named("web", Behaviour::Echo);
    let opaque = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&config(&web, opaque.addr()));
    let strict = proxy.listener("strict");

    for (what, first) in [("binary", BINARY), ("TLS", CLIENT_HELLO)] {
        let mut conn = raw::connect(strict);
        conn.write_all(first).unwrap();
        assert!(
            closed_without_a_byte(&mut conn, PROMPTLY),
            "{what}: still open after {PROMPTLY:?}"
        );
    }
    // A silent client is closed once the detect timeout has passed, not before.
    let start = Instant::now();
    let mut silent = raw::connect(strict);
    assert!(
        !closed_without_a_byte(&mut silent, DETECT - Duration::from_millis(50)),
        "closed before the detect timeout"
    );
    assert!(
        closed_without_a_byte(&mut silent, PROMPTLY),
        "still open after {PROMPTLY:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    wait_detections(&proxy, "strict", "opaque", 1.0);
    wait_detections(&proxy, "strict", "tls", 1.0);
    wait_detections(&proxy, "strict", "timeout", 1.0);
    assert_eq!(opaque.connections(), 0);
    let inbound = [("listener", "strict"), ("direction", "inbound")];
    let tcp = proxy.metric("remora_tcp_connection_duration_seconds_count", &inbound);
    assert!(
        tcp.is_none_or(|n| n == 0.0),
        "TCP connections recorded: {tcp:?}"
    );
}

#[tokio::test]
async fn every_outcome_is_counted_exactly_and_every_tcp_connection_timed() {
    let web = Upstream::start_named("web", Behaviour::Echo);
    let opaque = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&config(&web, opaque.addr()));
    let auto = proxy.listener("auto");

    for _ in 0..2 {
        Client::connect(auto, Proto::Http1)
            .await
            .get("/")
            .await
            .echo();
    }
    for _ in 0..3 {
        Client::connect(auto, Proto::H2c)
            .await
            .get("/")
            .await
            .echo();
    }
    assert_eq!(round_trip(auto, CLIENT_HELLO), CLIENT_HELLO);
    for _ in 0..2 {
        assert_eq!(round_trip(auto, BINARY), BINARY);
    }
    // Silent until detection gave up, then a tunnel like any other.
    let mut silent = raw::connect(auto);
    wait_detections(&proxy, "auto", "timeout", 1.0);
    silent.write_all(b"late").unwrap();
    silent.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    silent.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"late");
    // Connected and closed without a byte.
    for _ in 0..2 {
        drop(raw::connect(auto));
    }

    for (result, want) in [
        ("http1", 2.0),
        ("http2", 3.0),
        ("tls", 1.0),
        ("opaque", 2.0),
        ("timeout", 1.0),
        ("closed", 2.0),
    ] {
        wait_detections(&proxy, "auto", result, want);
    }
    // Each connection counted once, under one outcome.
    let total = proxy
        .scrape()
        .sum("remora_protocol_detections_total", &[("listener", "auto")]);
    assert_eq!(total, 11.0);
    assert_eq!(detections(&proxy, "strict", "http1"), 0.0);

    // Every connection that was not HTTP went to the fallback: the TLS one, the binary ones,
    // the silent one, and the two that closed at once too (so the upstream sees their
    // connect-and-close, as it would without the proxy). Each got one duration when it ended.
    let forwarded = 1 + 2 + 1 + 2;
    wait_for("the connections at the fallback", PROMPTLY, || {
        (opaque.connections() == forwarded).then_some(())
    });
    let inbound = [("listener", "auto"), ("direction", "inbound")];
    proxy.wait_metric(
        "remora_tcp_connection_duration_seconds_count",
        &inbound,
        forwarded as f64,
    );
    // The bucket of +Inf holds them all too.
    let inf = [
        ("listener", "auto"),
        ("direction", "inbound"),
        ("le", "+Inf"),
    ];
    proxy.wait_metric(
        "remora_tcp_connection_duration_seconds_bucket",
        &inf,
        forwarded as f64,
    );
}

#[test]
fn a_tcp_listener_times_its_connections_in_seconds() {
    let echo = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    cluster: backend
clusters:
  - name: backend
    endpoints: [{{ address: "{}" }}]
"#,
        echo.addr()
    ));
    // Open for some 300 ms.
    let mut conn = raw::connect(proxy.listener("db"));
    conn.write_all(b"hold").unwrap();
    let mut back = [0u8; 4];
    conn.read_exact(&mut back).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    conn.shutdown(Shutdown::Write).unwrap();
    assert_eq!(conn.read(&mut back).unwrap(), 0);

    let db = [("listener", "db"), ("direction", "inbound")];
    proxy.wait_metric("remora_tcp_connection_duration_seconds_count", &db, 1.0);
    let m = proxy.scrape();
    let sum = m
        .get("remora_tcp_connection_duration_seconds_sum", &db)
        .unwrap();
    assert!((0.3..5.0).contains(&sum), "lasted {sum} s");
    let bucket = |le| {
        m.get(
            "remora_tcp_connection_duration_seconds_bucket",
            &[("listener", "db"), ("direction", "inbound"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.25"), Some(0.0));
    assert_eq!(bucket("+Inf"), Some(1.0));
}
