//! TCP listeners: bytes forwarded both ways, unchanged, to an endpoint of the cluster.

use std::io::{Read, Write};
use std::net::Shutdown;

use remora_tests::body::{PatternCheck, pattern_bytes};
use remora_tests::{ProxyProcess, RawServer, free_addr, raw};

fn config(endpoint: std::net::SocketAddr) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    cluster: backend
clusters:
  - name: backend
    endpoints: [{{ address: "{endpoint}" }}]
"#
    )
}

#[test]
fn a_tcp_listener_forwards_bytes_both_ways() {
    const BULK: usize = 1 << 20;
    let echo = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&config(echo.addr()));
    let mut conn = raw::connect(proxy.listener("db"));

    conn.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");

    // A megabyte each way at once: written on a thread while this one reads it back.
    let mut writer = conn.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        writer.write_all(&pattern_bytes(BULK)).unwrap();
        // Half-close: the echo server sees the end and closes its side, and so the proxy ours.
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut check = PatternCheck::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        check.feed(&buf[..n]);
    }
    sending.join().unwrap();
    assert_eq!(check.len(), BULK as u64);
    assert!(check.ok(), "corrupted at {:?}", check.first_mismatch());
    assert_eq!(echo.connections(), 1);

    let total = (5 + BULK) as f64;
    let listener = [("listener", "db"), ("direction", "inbound")];
    let cluster = [("cluster", "backend")];
    proxy.wait_metric("remora_downstream_received_bytes_total", &listener, total);
    proxy.wait_metric("remora_downstream_sent_bytes_total", &listener, total);
    proxy.wait_metric("remora_upstream_sent_bytes_total", &cluster, total);
    proxy.wait_metric("remora_upstream_received_bytes_total", &cluster, total);
    proxy.wait_metric("remora_downstream_connections_total", &listener, 1.0);
    proxy.wait_metric("remora_upstream_connections_total", &cluster, 1.0);
    // Both sides closed: nothing left open.
    proxy.wait_metric("remora_downstream_connections_open", &listener, 0.0);
    proxy.wait_metric("remora_upstream_connections_open", &cluster, 0.0);
}

#[test]
fn a_tcp_connection_to_a_dead_endpoint_is_closed() {
    let proxy = ProxyProcess::start(&config(free_addr()));
    let mut conn = raw::connect(proxy.listener("db"));
    let mut buf = [0u8; 16];
    // Closed (or reset) without a byte.
    let got = conn.read(&mut buf);
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    proxy.wait_metric(
        "remora_upstream_connect_errors_total",
        &[("cluster", "backend")],
        1.0,
    );
}
