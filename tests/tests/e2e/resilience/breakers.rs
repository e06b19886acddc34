//! Circuit breakers: the four per-cluster limits at their caps (requests, connections with
//! pending requests, retries; connections on a TCP listener), each failing fast with its own
//! reason and showing on the gauges; and the consecutive-failure breaker opening, probing with
//! one trial at a time, and closing again.
//!
//! Slow upstreams are gated ([`Gate`]): requests park there until the test opens the gate, so
//! a limit is held for exactly as long as the test needs it.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use remora_tests::client::Reply;
use remora_tests::upstream::text;
use remora_tests::{
    Behaviour, Client, Gate, Proto, ProxyProcess, RawServer, Upstream, eventually, raw,
};

use super::{STATE_TIMEOUT, attempts, config};

fn labels(resource: &str) -> [(&'static str, &str); 2] {
    [("cluster", "app"), ("resource", resource)]
}

fn used(proxy: &ProxyProcess, resource: &str) -> Option<f64> {
    proxy.metric("remora_circuit_breaker_used", &labels(resource))
}

/// Sends `GET path` on a connection of its own, in the background; the reply comes out of the
/// handle.
fn send(proxy: &ProxyProcess, path: &str) -> tokio::task::JoinHandle<Reply> {
    let (addr, path) = (proxy.listener("main"), path.to_owned());
    tokio::spawn(async move { Client::connect(addr, Proto::Http1).await.get(&path).await })
}

/// `max_requests: 2` with two requests parked at a slow upstream: a third fails at once with
/// 503 `overflow-requests` without reaching it (and without an attempt). The gauges show 2 of 2
/// in use, the overflow is counted, and once the two finish the cluster takes requests again.
#[tokio::test]
async fn max_requests_fails_the_request_past_the_limit_fast() {
    let gate = Gate::new();
    let upstream = Upstream::start(Behaviour::Echo.after(&gate));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "",
        "circuit_breakers: { max_requests: 2 }",
    ));

    let parked = [send(&proxy, "/slow/1"), send(&proxy, "/slow/2")];
    eventually("two requests at the upstream", STATE_TIMEOUT, || {
        (upstream.requests() == 2).then_some(())
    })
    .await;
    assert_eq!(used(&proxy, "requests"), Some(2.0));
    assert_eq!(
        proxy.metric("remora_circuit_breaker_max", &labels("requests")),
        Some(2.0)
    );

    let started = Instant::now();
    // The limits left at their defaults show too.
    for (resource, max) in [
        ("connections", 1024.0),
        ("pending_requests", 1024.0),
        ("retries", 64.0),
    ] {
        assert_eq!(
            proxy.metric("remora_circuit_breaker_max", &labels(resource)),
            Some(max),
            "{resource}"
        );
    }
    let over = send(&proxy, "/over").await.unwrap();
    assert_eq!(over.status, 503, "{}", over.text());
    assert_eq!(over.remora_error(), Some("overflow-requests"));
    assert_eq!(attempts(&over), None, "nothing was attempted");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "fast, not queued"
    );
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        proxy.metric(
            "remora_circuit_breaker_overflows_total",
            &labels("requests")
        ),
        Some(1.0)
    );

    gate.open();
    for p in parked {
        assert_eq!(p.await.unwrap().status, 200);
    }
    proxy.wait_metric("remora_circuit_breaker_used", &labels("requests"), 0.0);
    assert_eq!(send(&proxy, "/after").await.unwrap().status, 200);
}

/// `max_connections: 1`, `max_pending_requests: 1` (the least the config allows) over
/// HTTP/1.1: the first request holds the one connection, the second waits as a pending
/// request, the third fails with 503 `overflow-pending-requests`. When the first finishes, the
/// second goes out on the same connection.
#[tokio::test]
async fn at_max_connections_a_request_waits_as_pending_until_the_pending_limit() {
    let gate = Gate::new();
    let upstream = Upstream::start(Behaviour::Echo.after(&gate));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "",
        "circuit_breakers: { max_connections: 1, max_pending_requests: 1 }",
    ));

    let first = send(&proxy, "/first");
    eventually("the first request at the upstream", STATE_TIMEOUT, || {
        (upstream.requests() == 1).then_some(())
    })
    .await;
    assert_eq!(used(&proxy, "connections"), Some(1.0));
    let second = send(&proxy, "/second");
    eventually("a pending request", STATE_TIMEOUT, || {
        (used(&proxy, "pending_requests") == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(upstream.requests(), 1, "the second waits in the proxy");

    let third = send(&proxy, "/third").await.unwrap();
    assert_eq!(third.status, 503, "{}", third.text());
    assert_eq!(third.remora_error(), Some("overflow-pending-requests"));
    assert_eq!(
        proxy.metric(
            "remora_circuit_breaker_overflows_total",
            &labels("pending_requests")
        ),
        Some(1.0)
    );

    gate.open();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.echo().path(), "/first");
    assert_eq!(second.echo().path(), "/second");
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.connections(), 1, "never more than one connection");
    proxy.wait_metric(
        "remora_circuit_breaker_used",
        &labels("pending_requests"),
        0.0,
    );
    assert_eq!(
        proxy.metric("remora_circuit_breaker_max", &labels("connections")),
        Some(1.0)
    );
}

/// `max_retries: 1` with one retry parked at the upstream: another request's failed first
/// attempt is not retried; the client gets that attempt's own 503 after one attempt (not a
/// proxy 503 `overflow-retries`), and the overflow is counted. Once the parked retry finishes,
/// retries go through again.
#[tokio::test]
async fn max_retries_caps_the_retries_in_flight() {
    let gate = Gate::new();
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::reply(503, &[]),
        Behaviour::Echo.after(&gate),
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 2, retry_on: [5xx] }",
        "circuit_breakers: { max_retries: 1 }",
    ));

    let parked = send(&proxy, "/parked");
    eventually("a retry at the upstream", STATE_TIMEOUT, || {
        (upstream.requests() == 2).then_some(())
    })
    .await;
    assert_eq!(used(&proxy, "retries"), Some(1.0));

    let refused = send(&proxy, "/refused").await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    // As docs/request-flow.md has it: "else overflow counted, last result returned".
    assert!(
        refused.text().starts_with("status 503 from"),
        "the upstream's own answer: {refused:?}"
    );
    assert_eq!(attempts(&refused), Some(1));
    assert_eq!(upstream.requests(), 3, "its first attempt only");
    assert_eq!(
        proxy.metric("remora_circuit_breaker_overflows_total", &labels("retries")),
        Some(1.0)
    );

    gate.open();
    let parked = parked.await.unwrap();
    assert_eq!(parked.status, 200);
    assert_eq!(attempts(&parked), Some(2));
    proxy.wait_metric("remora_circuit_breaker_used", &labels("retries"), 0.0);
    let later = send(&proxy, "/later").await.unwrap();
    assert_eq!((later.status.as_u16(), attempts(&later)), (200, Some(2)));
    assert_eq!(
        proxy.metric("remora_upstream_retries_total", &[("cluster", "app")]),
        Some(2.0)
    );
}

/// On a TCP listener the connection limit is the cluster's `max_connections`: with one
/// connection open, a second is closed at once without reaching the upstream, and counted.
#[test]
fn a_tcp_connection_past_max_connections_is_closed() {
    let echo = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    cluster: app
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
    circuit_breakers: {{ max_connections: 1 }}
"#,
        echo.addr()
    ));
    let mut first = raw::connect(proxy.listener("db"));
    std::io::Write::write_all(&mut first, b"ping").unwrap();
    let mut buf = [0u8; 4];
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    let mut second = raw::connect(proxy.listener("db"));
    let _ = std::io::Write::write_all(&mut second, b"ping");
    let mut rest = Vec::new();
    let closed = second.read_to_end(&mut rest);
    assert!(
        closed.is_ok_and(|n| n == 0) || rest.is_empty(),
        "the second connection got {rest:?}"
    );
    assert_eq!(echo.connections(), 1);
    assert_eq!(
        proxy.metric(
            "remora_circuit_breaker_overflows_total",
            &labels("connections")
        ),
        Some(1.0)
    );
    // The first is unaffected.
    std::io::Write::write_all(&mut first, b"pong").unwrap();
    first.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

/// An upstream answering with the status in `status`, which the test changes as it goes.
fn switchable(status: &Arc<AtomicU16>) -> Upstream {
    let status = status.clone();
    Upstream::start(Behaviour::custom(move |_, _| {
        let code = status.load(Ordering::Relaxed);
        async move { Ok(text(code, "switchable\n")) }
    }))
}

fn state(proxy: &ProxyProcess) -> Option<f64> {
    proxy.metric("remora_circuit_breaker_state", &[("cluster", "app")])
}

/// Sends requests one after another until one reaches the upstream (is not answered
/// `circuit-open` by the proxy); returns it with the instants just before it was sent and
/// after it was answered.
async fn until_admitted(client: &mut Client, rejected: &mut usize) -> (Reply, Instant, Instant) {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let sent = Instant::now();
        let reply = client.get("/probe").await;
        if reply.remora_error() != Some("circuit-open") {
            return (reply, sent, Instant::now());
        }
        assert_eq!(reply.status, 503);
        assert_eq!(attempts(&reply), None, "{reply:?}");
        *rejected += 1;
        assert!(
            Instant::now() < deadline,
            "the breaker never let a trial through"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `threshold: 3`, `base_open: 200ms`: three 500s in a row open the breaker (gauge 1), and
/// requests then fail with 503 `circuit-open` without reaching the upstream. The first opening
/// lasts between 100 and 200 ms (equal jitter); its trial fails, and the second opening lasts
/// between 200 and 400 ms; that trial succeeds and closes the breaker (gauge 0).
#[tokio::test]
async fn the_failure_breaker_opens_probes_and_closes() {
    let status = Arc::new(AtomicU16::new(500));
    let upstream = switchable(&status);
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "",
        "circuit_breakers: { consecutive_failures: { threshold: 3, base_open: 200ms, max_open: 2s } }",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    assert_eq!(state(&proxy), Some(0.0));

    let mut opened_after = Instant::now();
    let mut opened_by = Instant::now();
    for i in 0..3 {
        opened_after = Instant::now();
        let reply = client.get("/fail").await;
        opened_by = Instant::now();
        assert_eq!(reply.status, 500, "request {i}");
    }
    assert_eq!(state(&proxy), Some(1.0));
    let mut rejected = 0;
    let (trial, sent, answered) = until_admitted(&mut client, &mut rejected).await;
    assert_eq!(trial.status, 500, "the first trial fails");
    assert!(rejected > 0);
    assert_eq!(
        upstream.requests(),
        4,
        "only the trial reached the upstream"
    );
    let (least, most) = (answered - opened_after, sent - opened_by);
    eprintln!("first opening: trial between {most:?} and {least:?} after");
    assert!(least >= Duration::from_millis(100), "{least:?}");
    assert!(most < Duration::from_millis(200 + 300), "{most:?}");
    assert_eq!(
        state(&proxy),
        Some(1.0),
        "open again after the failed trial"
    );

    status.store(200, Ordering::Relaxed);
    let (opened_after, opened_by) = (sent, answered);
    let (trial, sent, answered) = until_admitted(&mut client, &mut rejected).await;
    assert_eq!(trial.status, 200, "the second trial succeeds");
    let (least, most) = (answered - opened_after, sent - opened_by);
    eprintln!("second opening: trial between {most:?} and {least:?} after");
    assert!(least >= Duration::from_millis(200), "{least:?}");
    assert!(most < Duration::from_millis(400 + 300), "{most:?}");
    assert_eq!(state(&proxy), Some(0.0), "closed");

    for _ in 0..5 {
        assert_eq!(client.get("/ok").await.status, 200);
    }
    assert_eq!(upstream.requests(), 5 + 5);
    assert_eq!(
        proxy.metric(
            "remora_proxy_errors_total",
            &[("listener", "main"), ("reason", "circuit-open")]
        ),
        Some(rejected as f64)
    );
}

/// Half-open lets one trial through at a time: while it is parked at the upstream the state is
/// 2 and every other request is rejected; its success closes the breaker.
#[tokio::test]
async fn half_open_admits_a_single_trial() {
    let gate = Gate::new();
    let upstream = Upstream::start(Behaviour::first(
        1,
        Behaviour::reply(500, &[]),
        Behaviour::Echo.after(&gate),
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "",
        "circuit_breakers: { consecutive_failures: { threshold: 1, base_open: 100ms } }",
    ));
    let addr = proxy.listener("main");
    let mut client = Client::connect(addr, Proto::Http1).await;
    assert_eq!(client.get("/fail").await.status, 500);
    assert_eq!(state(&proxy), Some(1.0));

    let trial = tokio::spawn(async move {
        let mut client = Client::connect(addr, Proto::Http1).await;
        until_admitted(&mut client, &mut 0).await.0
    });
    eventually("the trial at the upstream", STATE_TIMEOUT, || {
        (upstream.requests() == 2).then_some(())
    })
    .await;
    assert_eq!(state(&proxy), Some(2.0), "half-open");
    for _ in 0..3 {
        let other = client.get("/other").await;
        assert_eq!(other.remora_error(), Some("circuit-open"), "{other:?}");
    }
    assert_eq!(upstream.requests(), 2);

    gate.open();
    assert_eq!(trial.await.unwrap().status, 200);
    assert_eq!(state(&proxy), Some(0.0));
    assert_eq!(client.get("/after").await.status, 200);
}

/// Once the failure breaker is open, nothing more goes to the cluster, retries included: with
/// `threshold: 3` and a policy of up to 5 attempts on 5xx, a request against an upstream that
/// always fails opens the breaker at its third attempt, and its remaining retries must not be
/// sent (circuit-breaking.yaml: "this breaker stops traffic to the whole cluster").
#[tokio::test]
async fn an_open_breaker_stops_the_retries_of_a_request_in_flight() {
    let upstream = Upstream::start(Behaviour::reply(500, &[]));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 5, retry_on: [5xx], \
         backoff: { base_interval: 1ms, max_interval: 1ms } }",
        "circuit_breakers: { consecutive_failures: { threshold: 3, base_open: 10s, max_open: 20s } }",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let reply = client.get("/").await;
    assert_eq!(state(&proxy), Some(1.0), "open");
    assert!(reply.status.is_server_error(), "{reply:?}");
    assert_eq!(
        upstream.requests(),
        3,
        "attempts sent to an upstream whose breaker was open; reply {reply:?}"
    );
}
