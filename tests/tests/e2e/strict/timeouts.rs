//! Clients too slow to be real: a head trickled a byte at a time (slowloris) and a body that
//! stops halfway. Neither may hold the proxy, or reach the upstream as a complete request.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{assert_no_panic, closed_within, proxy};
use remora_tests::raw::{self, OK_REPLY, RawResponse};
use remora_tests::{RawServer, wait_for};

/// The header-read and body timeouts of these tests.
const TIMEOUT: Duration = Duration::from_millis(300);

/// How long after the timeout the proxy may take to act: its check runs twice per header-read
/// timeout, so it fires within 1.5x of it; the rest is slack for a loaded machine.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(1);

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off_within_a_second() {
    let (upstream, received) = RawServer::recording(OK_REPLY);
    let proxy = proxy(upstream.addr(), "{ header_read_timeout: 300ms }");
    let mut conn = raw::connect(proxy.listener("main"));
    // At 100 ms a byte this head takes 6 s to send; the proxy must not wait for it.
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(25)
    );
    let started = Instant::now();
    let mut sent = 0;
    let cut_off = loop {
        if conn.write_all(&head.as_bytes()[sent..=sent]).is_err() {
            break started.elapsed();
        }
        sent += 1;
        assert!(sent < head.len(), "the whole head went through");
        if closed_within(&mut conn, Duration::from_millis(100)) {
            break started.elapsed();
        }
    };
    assert!(
        cut_off >= TIMEOUT && cut_off < CUT_OFF_WITHIN,
        "cut off after {cut_off:?} ({sent} bytes) for a {TIMEOUT:?} header timeout"
    );
    assert_eq!(upstream.connections(), 0);
    assert!(received.is_empty(), "{:?}", received.text());
    assert_no_panic(&proxy);
}

#[test]
fn a_body_that_stops_halfway_is_408_within_a_second_and_closes_the_connection() {
    let (upstream, received) = RawServer::recording(OK_REPLY);
    let proxy = proxy(upstream.addr(), "{ request_body_timeout: 300ms }");
    let mut conn = raw::connect(proxy.listener("main"));
    let started = Instant::now();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf.")
        .unwrap();
    let resp = RawResponse::read_from(&mut conn, false).expect("a response to the stalled body");
    let waited = started.elapsed();
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert_eq!(resp.header("x-remora-error"), Some("request-body-timeout"));
    assert!(
        waited >= TIMEOUT && waited < CUT_OFF_WITHIN,
        "answered after {waited:?} for a {TIMEOUT:?} body timeout"
    );
    assert!(
        closed_within(&mut conn, Duration::from_secs(1)),
        "the connection stayed open after the 408"
    );

    // The upstream got the head and the half that came, never a complete request, and its
    // connection is closed rather than left mid-request.
    let text = received.text();
    assert!(text.starts_with("POST /upload HTTP/1.1\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\nhalf."), "{text:?}");
    assert_eq!(upstream.connections(), 1);
    wait_for(
        "the upstream connection to close",
        Duration::from_secs(2),
        || upstream_closed(&proxy).then_some(()),
    );
    assert_no_panic(&proxy);
}

/// Whether the proxy holds no upstream connection open (the cluster's gauge is 0).
fn upstream_closed(proxy: &remora_tests::ProxyProcess) -> bool {
    proxy
        .scrape()
        .get("remora_upstream_connections_open", &[("cluster", "app")])
        .is_none_or(|v| v == 0.0)
}
