//! Upstream responses with invalid framing. The client gets a 502 the proxy made, never a
//! response read one of two ways; and the upstream connection, whose byte stream can no longer
//! be trusted, is never used again.

use super::{assert_no_panic, proxy};
use remora_tests::raw::{self, RawResponse};
use remora_tests::{RawServer, wait_for};
use std::time::Duration;

/// Sends two requests, each on its own client connection, through a proxy in front of an
/// upstream that answers every request with `reply`; checks each response with `check`, then
/// that the second request went on a second upstream connection.
fn assert_answer_and_no_reuse(reply: &'static [u8], check: impl Fn(&RawResponse)) {
    let (upstream, received) = RawServer::recording(reply);
    let proxy = proxy(upstream.addr(), "{}");
    for i in 1..=2 {
        let request = format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        let resp = raw::exchange(proxy.listener("main"), request.as_bytes()).expect("a response");
        check(&resp);
        // The upstream saw request i, on connection i.
        wait_for("the request upstream", Duration::from_secs(2), || {
            received
                .text()
                .contains(&format!("GET /{i} "))
                .then_some(())
        });
        assert_eq!(
            upstream.connections(),
            i,
            "request {i} went on a reused upstream connection"
        );
    }
    assert_no_panic(&proxy);
}

fn assert_bad_response(resp: &RawResponse) {
    assert_eq!(resp.status, 502, "{:?} {}", resp.headers, resp.text());
    assert_eq!(
        resp.header("x-remora-error"),
        Some("upstream-bad-response"),
        "{:?}",
        resp.headers
    );
}

#[test]
fn content_length_with_transfer_encoding_from_the_upstream_is_502() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        assert_bad_response,
    );
}

#[test]
fn two_different_content_lengths_from_the_upstream_are_502() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        assert_bad_response,
    );
}

#[test]
fn two_equal_content_lengths_from_the_upstream_are_502() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        assert_bad_response,
    );
}

#[test]
fn a_bad_chunk_size_arriving_with_the_upstream_head_is_502() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        assert_bad_response,
    );
}

/// The extra bytes look like a second response: on a reused connection they would answer the
/// next request (response desync).
#[test]
fn bytes_past_the_content_length_are_dropped_with_the_connection() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil",
        |resp| {
            assert_eq!(resp.status, 200, "{:?} {}", resp.headers, resp.text());
            assert_eq!(resp.header("x-remora-error"), None);
            assert_eq!(resp.text(), "ok");
        },
    );
}

#[test]
fn garbage_past_the_content_length_is_dropped_with_the_connection() {
    assert_answer_and_no_reuse(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\0\0garbage\r\n\r\n",
        |resp| {
            assert_eq!(resp.status, 200, "{:?} {}", resp.headers, resp.text());
            assert_eq!(resp.text(), "ok");
        },
    );
}
