//! Strict parsing: bad input never reaches the upstream.
//!
//! Each test puts a proxy in front of an upstream that records every byte it reads
//! ([`RawServer::recording`]) and sends what a well-behaved client or server never would. A
//! refused request gets its status (and `x-remora-error` where the proxy answers rather than
//! hyper's parser), its connection is closed where the rest of the byte stream cannot be
//! trusted, and the upstream sees no connection and no byte of it. Rooms:
//! - [`requests`]: malformed HTTP/1.1 request heads, framing and limits;
//! - [`timeouts`]: heads and bodies trickled too slowly;
//! - [`responses`]: upstream responses with invalid framing;
//! - [`h2`]: HTTP/2 limits and floods, frame by frame.

mod h2;
mod requests;
mod responses;
mod timeouts;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use remora_tests::ProxyProcess;
use remora_tests::raw::{self, RawResponse, Received};

/// A proxy whose listener `main` sends everything to `upstream` (HTTP/1.1), with `limits` (a
/// YAML flow mapping, `{}` for the defaults).
fn proxy(upstream: SocketAddr, limits: &str) -> ProxyProcess {
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
    endpoints: [{{ address: "{upstream}" }}]
"#
    ))
}

/// Writes `request` on a new connection and reads one response; returns it with the
/// connection, to see what follows.
fn send(addr: SocketAddr, request: &[u8]) -> std::io::Result<(RawResponse, TcpStream)> {
    let mut conn = raw::connect(addr);
    if let Err(e) = conn.write_all(request)
        && !matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset)
    {
        return Err(e);
    }
    let resp = RawResponse::read_from(&mut conn, request.starts_with(b"HEAD "))?;
    Ok((resp, conn))
}

/// Reads from `conn` for up to `wait`: true if the peer closed it (EOF or reset) in that time.
/// Data is a failure: nothing may follow a response that ends the exchange.
fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// How a refused request must be answered.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    status: u16,
    /// `x-remora-error`, when the proxy answers; `None` when hyper's parser refuses the head
    /// itself, with a bare status.
    reason: Option<&'static str>,
    /// The connection must be closed after the response.
    closes: bool,
}

const BAD_REQUEST: Refusal = Refusal {
    status: 400,
    reason: Some("bad-request"),
    closes: true,
};

/// Refused by hyper's HTTP/1 parser: a bare 400, connection closed.
const UNPARSABLE: Refusal = Refusal {
    status: 400,
    reason: None,
    closes: true,
};

/// Sends each `(name, request, refusal)` on its own connection and returns a description of
/// every case that was not refused as it should be, or that reached the upstream.
fn check_refusals(
    addr: SocketAddr,
    upstream: &raw::RawServer,
    received: &Received,
    cases: &[(&str, Vec<u8>, Refusal)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, request, want) in cases {
        let (got, mut conn) = match send(addr, request) {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{name}: no response: {e}"));
                continue;
            }
        };
        let mut wrong = Vec::new();
        if got.status != want.status {
            wrong.push(format!("status {} (want {})", got.status, want.status));
        }
        if let Some(reason) = want.reason
            && got.header("x-remora-error") != Some(reason)
        {
            wrong.push(format!(
                "x-remora-error {:?} (want {reason:?})",
                got.header("x-remora-error")
            ));
        }
        if want.closes && !closed_within(&mut conn, Duration::from_secs(1)) {
            wrong.push("connection left open".into());
        }
        if upstream.connections() != 0 || !received.is_empty() {
            wrong.push(format!(
                "reached the upstream ({} connections, bytes {:?})",
                upstream.connections(),
                received.text()
            ));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{name}: {}; response {} {:?} {:?}",
                wrong.join(", "),
                got.status,
                got.headers,
                got.text()
            ));
        }
    }
    failures
}

/// A valid request after the refused ones: it gets through, and it is all the upstream ever
/// received (a refused request forwarded late would show up here), over `connections`
/// upstream connections in all.
fn assert_only_the_control_request_arrived(
    addr: SocketAddr,
    upstream: &raw::RawServer,
    received: &Received,
    connections: usize,
) {
    let (resp, _) =
        send(addr, b"GET /control HTTP/1.1\r\nHost: x\r\n\r\n").expect("the control request");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.text(), "ok");
    let text = received.text();
    assert!(text.starts_with("GET /control HTTP/1.1\r\n"), "{text:?}");
    assert_eq!(text.matches("HTTP/1.1\r\n").count(), 1, "{text:?}");
    assert_eq!(upstream.connections(), connections);
}

/// The proxy never panicked (a panic in a connection task is caught by tokio and only shows on
/// stderr).
fn assert_no_panic(proxy: &ProxyProcess) {
    let stderr = proxy.stderr().text();
    assert!(
        !stderr.contains("panicked"),
        "the proxy panicked:\n{stderr}"
    );
}
