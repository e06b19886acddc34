//! HTTP/2 (h2c, prior knowledge) frame by frame: the limits the server announces and enforces,
//! malformed requests, and floods of cheap frames.
//!
//! What the flood tests assert is what h2 0.4.20 (the version in `Cargo.lock`, under hyper
//! 1.12) does; each test's doc comment records it. In every case the proxy's memory stays
//! within a few hundred KiB of where it was, a fresh client is served afterwards on both
//! protocols, and nothing panics.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{assert_no_panic, proxy};
use remora_tests::process::RssSampler;
use remora_tests::raw::{OK_REPLY, Received};
use remora_tests::raw_h2::{
    Flooded, Frame, FrameLog, GoAway, H2Conn, Seen, Stopped, code, kind, literal_field,
    request_block, setting,
};
use remora_tests::{Proto, ProxyProcess, RawServer, wait_for};

#[test]
fn the_server_settings_announce_the_configured_limits() {
    let (upstream, _) = RawServer::recording(OK_REPLY);
    for (limits, streams, header_list) in [
        ("{}", 100, 2 * 60 * 1024),
        (
            "{ max_concurrent_streams: 7, max_request_header_bytes: 8KiB }",
            7,
            2 * 8 * 1024,
        ),
    ] {
        let proxy = proxy(upstream.addr(), limits);
        let conn = H2Conn::handshake(proxy.listener("main")).expect("h2c handshake");
        assert_eq!(
            conn.setting(setting::MAX_CONCURRENT_STREAMS),
            Some(streams),
            "{limits}: {:?}",
            conn.server_settings
        );
        // hyper's ceiling is twice the configured head size (see `remora_proxy::http::builder`).
        assert_eq!(
            conn.setting(setting::MAX_HEADER_LIST_SIZE),
            Some(header_list),
            "{limits}: {:?}",
            conn.server_settings
        );
    }
}

fn get(stream: u32) -> Frame {
    Frame::headers(stream, request_block("GET", "/", &[]), true, true)
}

/// A POST whose body is still to come: the stream stays open on the client's side.
fn open_post(stream: u32) -> Frame {
    Frame::headers(stream, request_block("POST", "/upload", &[]), false, true)
}

/// Three streams over the limit, opened in one write: h2 counts streams from the moment their
/// HEADERS arrive, so exactly the last three are refused, and the others go upstream.
#[test]
fn streams_over_the_concurrency_limit_are_refused() {
    // Holds every request it gets: the streams stay open.
    let upstream = RawServer::start(|mut s| {
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    for (limits, limit) in [("{}", 100u32), ("{ max_concurrent_streams: 7 }", 7)] {
        let before = upstream.connections();
        let proxy = proxy(upstream.addr(), limits);
        let mut conn = H2Conn::handshake(proxy.listener("main")).unwrap();
        let log = conn.log_frames();
        let streams: Vec<Frame> = (0..limit + 3).map(|i| get(2 * i + 1)).collect();
        conn.send(&streams).unwrap();
        let seen = log
            .wait(Duration::from_secs(5), |s| s.resets.len() >= 3)
            .unwrap_or_else(|| panic!("{limits}: 3 streams refused; saw {:?}", log.snapshot()));
        let extra: Vec<(u32, u32)> = (limit..limit + 3)
            .map(|i| (2 * i + 1, code::REFUSED_STREAM))
            .collect();
        assert_eq!(seen.resets, extra, "{limits}");
        assert!(seen.goaway.is_none(), "{limits}: {seen:?}");
        wait_for(
            "the allowed streams upstream",
            Duration::from_secs(5),
            || (upstream.connections() - before == limit as usize).then_some(()),
        );
        assert_no_panic(&proxy);
    }
}

/// Requests HTTP/2 calls malformed (RFC 9113 section 8.2 and 8.3) are reset (or the whole
/// connection is, for a broken field) by h2 before hyper hands them to the proxy.
#[test]
fn malformed_h2_requests_are_refused_and_never_reach_the_upstream() {
    let (upstream, received) = RawServer::recording(OK_REPLY);
    let proxy = proxy(upstream.addr(), "{}");
    let post_with = |cl: &[(&str, &str)], body: &[u8]| {
        vec![
            Frame::headers(1, request_block("POST", "/", cl), false, true),
            Frame::data(1, body.to_vec(), true),
        ]
    };
    let get_with = |field: (&str, &str)| {
        vec![Frame::headers(
            1,
            request_block("GET", "/", &[field]),
            true,
            true,
        )]
    };
    let stream_error = |s: &Seen| s.resets == [(1, code::PROTOCOL_ERROR)] && s.goaway.is_none();
    let connection_error = |s: &Seen| {
        s.goaway
            .as_ref()
            .is_some_and(|g| g.code == code::PROTOCOL_ERROR)
    };
    type Check = fn(&Seen) -> bool;
    let cases: Vec<(&str, Vec<Frame>, Check)> = vec![
        (
            "connection: keep-alive",
            get_with(("connection", "keep-alive")),
            stream_error,
        ),
        (
            "transfer-encoding: chunked",
            post_with(
                &[("transfer-encoding", "chunked")],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            stream_error,
        ),
        ("te: gzip", get_with(("te", "gzip")), stream_error),
        (
            "two content-lengths",
            post_with(
                &[("content-length", "5"), ("content-length", "6")],
                b"hello",
            ),
            stream_error,
        ),
        (
            "content-length +5",
            post_with(&[("content-length", "+5")], b"hello"),
            stream_error,
        ),
        (
            "an uppercase field name",
            get_with(("X-Upper", "1")),
            connection_error,
        ),
        (
            "NUL in a value",
            get_with(("x-a", "a\0b")),
            connection_error,
        ),
        (
            "CR LF in a value",
            get_with(("x-a", "a\r\nx-b: c")),
            connection_error,
        ),
    ];
    let mut failures = Vec::new();
    for (name, frames, check) in cases {
        let (connections, bytes) = (upstream.connections(), received.bytes().len());
        let mut conn = H2Conn::handshake(proxy.listener("main")).unwrap();
        let log = conn.log_frames();
        conn.send(&frames).unwrap();
        let seen = log.wait(Duration::from_secs(5), |s| {
            check(s) || !s.answered.is_empty()
        });
        let seen = seen.unwrap_or_else(|| log.snapshot());
        let new_connections = upstream.connections() - connections;
        let new_bytes = received.bytes().split_off(bytes);
        if !check(&seen) || new_connections != 0 || !new_bytes.is_empty() {
            failures.push(format!(
                "{name}: resets {:?} goaway {:?} answered {:?}; upstream: {new_connections} \
                 connections, {:?}",
                seen.resets,
                seen.goaway,
                seen.answered,
                String::from_utf8_lossy(&new_bytes)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_no_panic(&proxy);
}

/// h2 checks a stream's body against its content-length only as DATA arrives, even when the
/// DATA came in the same read as the HEADERS; if hyper has accepted the stream in between, the
/// proxy connects upstream before the body fails (no byte is sent there). Whether it has
/// varies from run to run, so each case is tried ten times.
#[test]
fn an_h2_body_not_matching_its_content_length_opens_no_upstream_connection() {
    let (upstream, received) = RawServer::recording(OK_REPLY);
    let proxy = proxy(upstream.addr(), "{}");
    let mut opened = Vec::new();
    for body in [&b"hell"[..], b"hello!"] {
        for _ in 0..10 {
            let before = upstream.connections();
            let mut conn = H2Conn::handshake(proxy.listener("main")).unwrap();
            let log = conn.log_frames();
            conn.send(&[
                Frame::headers(
                    1,
                    request_block("POST", "/", &[("content-length", "5")]),
                    false,
                    true,
                ),
                Frame::data(1, body.to_vec(), true),
            ])
            .unwrap();
            let seen = log
                .wait(Duration::from_secs(5), |s| !s.resets.is_empty())
                .expect("a reset");
            assert_eq!(seen.resets, [(1, code::PROTOCOL_ERROR)]);
            assert!(received.is_empty(), "{:?}", received.text());
            if upstream.connections() != before {
                opened.push(body.len());
            }
        }
    }
    assert!(
        opened.is_empty(),
        "upstream connections opened for bodies of these lengths (content-length 5): {opened:?}"
    );
}

/// h2 0.4.20 accepts a request without `:path` (and without `:authority`), and one with
/// `:path: *` for a method other than OPTIONS; RFC 9113 section 8.3.1 calls both malformed.
/// The proxy refuses them itself (400, `bad-request`): they must never reach the upstream,
/// whether refused by a reset or by an error response.
#[test]
fn h2_requests_without_a_usable_path_never_reach_the_upstream() {
    let (upstream, received) = RawServer::recording(OK_REPLY);
    let proxy = proxy(upstream.addr(), "{}");
    let mut no_path = Vec::new();
    literal_field(&mut no_path, ":method", "GET");
    literal_field(&mut no_path, ":scheme", "http");
    let mut failures = Vec::new();
    for (name, block) in [
        ("no :path", no_path),
        (":path * on a GET", request_block("GET", "*", &[])),
    ] {
        let mut conn = H2Conn::handshake(proxy.listener("main")).unwrap();
        let log = conn.log_frames();
        conn.send(&[Frame::headers(1, block, true, true)]).unwrap();
        let seen = log
            .wait(Duration::from_secs(5), |s| {
                !s.resets.is_empty() || !s.answered.is_empty()
            })
            .unwrap_or_else(|| log.snapshot());
        if !received.is_empty() || (seen.resets.is_empty() && seen.answered.is_empty()) {
            failures.push(format!(
                "{name}: resets {:?}, answered {:?}; the upstream read {:?}",
                seen.resets,
                seen.answered,
                received.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Budget for a flood: RSS growth of the proxy, and time for the server to react.
const RSS_GROWTH_LIMIT_KIB: u64 = 20 * 1024;
const REACTION: Duration = Duration::from_secs(5);

/// A proxy to flood, with its memory watched from the start of the flood.
struct Flood {
    /// First, so that it stops before the proxy is killed.
    sampler: Option<RssSampler>,
    baseline_kib: u64,
    proxy: ProxyProcess,
    /// Kept running: it answers the requests that go upstream.
    _upstream: RawServer,
    received: Received,
}

impl Flood {
    async fn start() -> Flood {
        let (upstream, received) = RawServer::recording(OK_REPLY);
        let proxy = proxy(upstream.addr(), "{}");
        // One request on each protocol first, so the baseline includes what first use
        // allocates.
        assert_serves(proxy.listener("main")).await;
        let baseline_kib = proxy.rss_kib();
        let sampler = Some(proxy.rss_sampler());
        Flood {
            _upstream: upstream,
            received,
            proxy,
            baseline_kib,
            sampler,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.proxy.listener("main")
    }

    /// Memory stayed bounded, the proxy still serves new clients and it never panicked.
    async fn finish(mut self) {
        let peak = self.sampler.take().expect("sampling").stop();
        let growth = peak.saturating_sub(self.baseline_kib);
        assert!(
            growth < RSS_GROWTH_LIMIT_KIB,
            "RSS grew by {growth} KiB during the flood (from {} KiB)",
            self.baseline_kib
        );
        assert_serves(self.addr()).await;
        assert_no_panic(&self.proxy);
    }
}

async fn assert_serves(addr: SocketAddr) {
    for proto in Proto::ALL {
        let reply = remora_tests::client::get(addr, proto, "/fresh").await;
        assert_eq!(reply.status, 200, "{proto:?}: {}", reply.text());
        assert_eq!(reply.text(), "ok", "{proto:?}");
    }
}

/// Opens a connection, sends `prelude`, then writes `frames` in batches while a [`FrameLog`]
/// reads, until they run out or the server reacts; then waits up to [`REACTION`] for `until`.
fn flood(
    addr: SocketAddr,
    prelude: &[Frame],
    frames: impl IntoIterator<Item = Frame>,
    until: impl Fn(&Seen) -> bool,
) -> (Flooded, Seen) {
    let mut conn = H2Conn::handshake(addr).expect("h2c handshake");
    let log: FrameLog = conn.log_frames();
    conn.send(prelude).unwrap();
    let flooded = conn.flood(frames, 256, Some(&log));
    let seen = log.wait(REACTION, until).unwrap_or_else(|| log.snapshot());
    (flooded, seen)
}

fn goaway_and_close(s: &Seen) -> bool {
    s.goaway.is_some() && s.closed
}

/// The GOAWAY of a flood that h2 stops, checked: ENHANCE_YOUR_CALM with h2's reason, then the
/// end of the connection.
fn assert_calmed(seen: &Seen, flooded: &Flooded, debug: &str) -> GoAway {
    let goaway = seen
        .goaway
        .clone()
        .unwrap_or_else(|| panic!("no GOAWAY after {flooded:?}: {seen:?}"));
    assert_eq!(goaway.code, code::ENHANCE_YOUR_CALM, "{goaway:?}");
    assert_eq!(goaway.debug, debug);
    assert!(seen.closed, "the connection stayed open after {goaway:?}");
    goaway
}

/// Observed: HEADERS + RST_STREAM pairs written in batches arrive faster than hyper accepts
/// streams, so h2 counts them as remotely reset before accept; at its 21st (the limit is 20)
/// it sends GOAWAY ENHANCE_YOUR_CALM `too_many_resets` (last stream 41) and closes. None of
/// those streams reached the upstream.
#[tokio::test]
async fn a_rapid_reset_flood_is_answered_with_goaway() {
    let f = Flood::start().await;
    let requests_before = f.received.text().matches("GET /").count();
    let frames =
        (0..10_000u32).flat_map(|i| [get(2 * i + 1), Frame::rst_stream(2 * i + 1, code::CANCEL)]);
    let (flooded, seen) = flood(f.addr(), &[], frames, goaway_and_close);
    let goaway = assert_calmed(&seen, &flooded, "too_many_resets");
    // Streams up to `last_stream` were looked at: a few dozen of the 10 000.
    assert!(goaway.last_stream < 200, "{goaway:?}");
    let requests = f.received.text().matches("GET /").count() - requests_before;
    assert!(requests <= 100, "{requests} reset streams went upstream");
    f.finish().await;
}

/// The same pairs paced so that each stream is accepted (its request is already upstream)
/// before its reset arrives. Observed: h2 only limits resets of streams not yet accepted, so
/// there is no GOAWAY; each reset cancels the proxied request and its upstream connection is
/// closed, so the work in flight never exceeds one stream. The cost per stream is that of an
/// ordinary request, at the client's pace.
#[tokio::test]
async fn rapid_reset_paced_to_each_accept_costs_one_cancelled_request_per_stream() {
    let f = Flood::start().await;
    let mut conn = H2Conn::handshake(f.addr()).unwrap();
    let log = conn.log_frames();
    let posts = || f.received.text().matches("POST /upload ").count();
    let streams = 100;
    for i in 0..streams {
        let id = 2 * i as u32 + 1;
        conn.send(&[open_post(id)]).unwrap();
        // The request head is upstream: the stream has been accepted.
        let deadline = Instant::now() + REACTION;
        while posts() < i + 1 {
            assert!(Instant::now() < deadline, "stream {id} never went upstream");
            std::thread::sleep(Duration::from_micros(200));
        }
        conn.send(&[Frame::rst_stream(id, code::CANCEL)]).unwrap();
    }
    // A PING answered means every frame before it was processed.
    conn.send(&[Frame::ping(*b"barrier!")]).unwrap();
    let seen = log
        .wait(REACTION, |s| s.count(kind::PING) == 1 || s.goaway.is_some())
        .unwrap();
    assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    assert_eq!(posts(), streams);
    // Every cancelled request's upstream connection is closed, never pooled half-used.
    wait_for("no upstream connection open", REACTION, || {
        let open = f
            .proxy
            .scrape()
            .get("remora_upstream_connections_open", &[("cluster", "app")]);
        (open == Some(0.0)).then_some(())
    });
    f.finish().await;
}

/// Observed: a HEADERS without END_HEADERS, then CONTINUATION frames of a header value that
/// never ends. h2 allows a header block max(5, 1.25 x MAX_HEADER_LIST_SIZE / MAX_FRAME_SIZE)
/// CONTINUATION frames (8 here) and answers the next with GOAWAY ENHANCE_YOUR_CALM
/// `too_many_continuations` (last stream 0: the stream never opened), then closes.
#[tokio::test]
async fn a_continuation_flood_is_answered_with_goaway() {
    let f = Flood::start().await;
    // `x-big`, a literal whose announced length is 1 MiB: the block is never complete.
    let mut start = Vec::new();
    literal_field(&mut start, ":method", "GET");
    start.extend_from_slice(&[0x00, 0x05]);
    start.extend_from_slice(b"x-big");
    start.extend_from_slice(&[0x7f, 0x81, 0xff, 0x3f]);
    let prelude = [Frame::headers(1, start, true, false)];
    let frames = (0..10_000).map(|_| Frame::continuation(1, vec![b'a'; 1024], false));
    let (flooded, seen) = flood(f.addr(), &prelude, frames, goaway_and_close);
    let goaway = assert_calmed(&seen, &flooded, "too_many_continuations");
    assert_eq!(goaway.last_stream, 0);
    f.finish().await;
}

/// Observed: no GOAWAY and no limit. h2 answers every PING with its ACK before it reads the
/// next frame (it holds at most one pending), so a client that reads gets 100 000 ACKs for
/// 100 000 PINGs, in well under a second, and the proxy holds nothing; a client that does not
/// read is held back by TCP (see the test below).
#[tokio::test]
async fn a_ping_flood_is_answered_in_lockstep() {
    let f = Flood::start().await;
    let n = 100_000;
    let frames = (0..n as u64).map(|i| Frame::ping(i.to_be_bytes()));
    let (flooded, seen) = flood(f.addr(), &[], frames, |s| {
        s.count(kind::PING) >= n || s.goaway.is_some() || s.closed
    });
    assert_eq!(flooded.sent, n, "{flooded:?}");
    assert_eq!(seen.count(kind::PING), n, "{seen:?}");
    assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    f.finish().await;
}

/// Observed: like PING, no GOAWAY and no limit: each SETTINGS is applied and acknowledged
/// before the next frame is read, so 100 000 SETTINGS get 100 000 ACKs.
#[tokio::test]
async fn a_settings_flood_is_answered_in_lockstep() {
    let f = Flood::start().await;
    let n = 100_000;
    let frames = (0..n).map(|_| Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]));
    // Plus the server's own SETTINGS at the start.
    let (flooded, seen) = flood(f.addr(), &[], frames, |s| {
        s.count(kind::SETTINGS) > n || s.goaway.is_some() || s.closed
    });
    assert_eq!(flooded.sent, n, "{flooded:?}");
    assert_eq!(seen.count(kind::SETTINGS), n + 1, "{seen:?}");
    assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    f.finish().await;
}

/// Observed: a client that floods PINGs or SETTINGS and never reads the answers fills the
/// socket buffers (a few MB of frames on loopback) and then cannot write any more: h2 stops
/// reading while its one pending answer cannot be written. The proxy's memory does not move.
#[tokio::test]
async fn ping_and_settings_floods_from_a_client_that_never_reads_are_held_back() {
    let f = Flood::start().await;
    for name in ["PING", "SETTINGS"] {
        let frame = |i: u64| match name {
            "PING" => Frame::ping(i.to_be_bytes()),
            _ => Frame::settings(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]),
        };
        let mut conn = H2Conn::handshake(f.addr()).unwrap();
        // A write that cannot finish for this long means the server stopped reading.
        conn.socket()
            .set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        // 3 million frames are 45 to 51 MB, far more than the socket buffers hold.
        let flooded = conn.flood((0..3_000_000).map(frame), 1024, None);
        match &flooded.stopped {
            Some(Stopped::WriteFailed(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => panic!("{name}: the writes were never held back: {flooded:?}"),
        }
    }
    f.finish().await;
}

/// Observed: a stream opened with HEADERS, then empty DATA frames (which cost no flow-control
/// window). h2 allows 100 empty non-final DATA frames per connection and answers the 101st
/// with GOAWAY ENHANCE_YOUR_CALM `too_many_data_frames` (last stream 1), then closes. A PING
/// after the 100th is still answered, so the bound is exact.
#[tokio::test]
async fn an_empty_data_flood_is_answered_with_goaway_at_the_101st_frame() {
    let f = Flood::start().await;
    let mut conn = H2Conn::handshake(f.addr()).unwrap();
    let log = conn.log_frames();
    let mut frames = vec![open_post(1)];
    frames.extend((0..100).map(|_| Frame::data(1, Vec::new(), false)));
    frames.push(Frame::ping(*b"barrier!"));
    conn.send(&frames).unwrap();
    let seen = log
        .wait(REACTION, |s| s.count(kind::PING) == 1 || s.goaway.is_some())
        .unwrap();
    assert!(seen.goaway.is_none(), "100 empty DATA frames: {seen:?}");

    let rest = (0..100_000).map(|_| Frame::data(1, Vec::new(), false));
    let flooded = conn.flood(rest, 256, Some(&log));
    let seen = log
        .wait(REACTION, goaway_and_close)
        .unwrap_or_else(|| log.snapshot());
    let goaway = assert_calmed(&seen, &flooded, "too_many_data_frames");
    assert_eq!(goaway.last_stream, 1);
    f.finish().await;
}
