//! Local rate limits: token buckets on a route, on a listener (every request it takes), and on
//! a TCP listener (every connection). Past the limit a request gets 429 with `Retry-After`
//! and `x-remora-error: rate-limited` and never reaches the upstream; a connection is closed.
//! Rates of one a minute make "past the burst" exact: no token comes back while a test runs.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use remora_tests::client::{Reply, full, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, RawServer, Upstream, raw};

use super::{attempts, cluster, proxy_config, route};

fn limited(proxy: &ProxyProcess, listener: &str, route: &str) -> Option<f64> {
    proxy.metric(
        "remora_rate_limited_total",
        &[("listener", listener), ("route", route)],
    )
}

/// A 429 from the proxy's rate limit, asking the client to come back in `retry_after` seconds
/// (within `range`).
fn assert_limited(reply: &Reply, range: std::ops::RangeInclusive<u64>) {
    assert_eq!(reply.status, 429, "{reply:?}");
    assert_eq!(reply.remora_error(), Some("rate-limited"));
    assert_eq!(attempts(reply), None, "never sent upstream");
    let after: u64 = reply
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {reply:?}"))
        .parse()
        .unwrap();
    assert!(
        range.contains(&after),
        "Retry-After {after}, want {range:?}"
    );
}

/// `rate_limit: { rate: 1/m, burst: 5 }` on one route: five requests pass, the next are
/// refused with `Retry-After: 60` (the next token is a minute away), gRPC calls with
/// RESOURCE_EXHAUSTED; a route without a limit on the same listener is unaffected.
#[tokio::test]
async fn a_route_limit_refuses_requests_past_its_burst() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "limited",
                Some("/limited"),
                "app",
                "rate_limit: { rate: 1/m, burst: 5 }",
            ),
            route("free", None, "app", ""),
        ],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    for i in 0..5 {
        let reply = client.get(&format!("/limited/{i}")).await;
        assert_eq!(reply.status, 200, "request {i} is within the burst");
    }
    for i in 5..8 {
        assert_limited(&client.get(&format!("/limited/{i}")).await, 59..=60);
    }
    let call = client
        .fetch(
            request("POST", "/limited/grpc.Svc/Call")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(full(vec![0u8; 5]))
                .unwrap(),
        )
        .await;
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(call.header("grpc-status"), Some("8"), "{call:?}");
    assert_eq!(call.remora_error(), Some("rate-limited"));
    for i in 0..10 {
        assert_eq!(client.get(&format!("/free/{i}")).await.status, 200);
    }
    assert_eq!(upstream.requests(), 5 + 10);
    assert_eq!(limited(&proxy, "main", "limited"), Some(4.0));
    assert_eq!(limited(&proxy, "main", "free").unwrap_or(0.0), 0.0);
}

/// `rate: 5/s, burst: 1`: one request passes, then one every 200 ms. Polled every 10 ms for a
/// second, requests pass at that rate: the first refill no sooner than 200 ms after the first
/// token was taken, and over the second no more than the burst plus five.
#[tokio::test]
async fn a_route_limit_refills_at_its_rate() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[route(
            "limited",
            None,
            "app",
            "rate_limit: { rate: 5/s, burst: 1 }",
        )],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let start = Instant::now();
    assert_eq!(client.get("/first").await.status, 200);
    let first_done = Instant::now();
    assert_limited(&client.get("/second").await, 1..=1);

    let mut passed = vec![];
    let mut refused = 1;
    while start.elapsed() < Duration::from_secs(1) {
        let sent = Instant::now();
        let reply = client.get("/poll").await;
        match reply.status.as_u16() {
            200 => passed.push((sent, Instant::now())),
            _ => {
                assert_limited(&reply, 1..=1);
                refused += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let span = start.elapsed().as_secs_f64();
    eprintln!(
        "{} passed and {refused} refused in {span:.3}s after the first",
        passed.len()
    );
    let (refill_sent, refill_done) = *passed.first().expect("no token came back in a second");
    assert!(
        refill_done - start >= Duration::from_millis(200),
        "a token came back after {:?}",
        refill_done - start
    );
    assert!(
        refill_sent - first_done < Duration::from_millis(200 + 200),
        "the first refill was seen only {:?} after",
        refill_sent - first_done
    );
    // Tokens in [start, end]: the burst (spent on /first) plus 5 a second.
    assert!(passed.len() as f64 <= 5.0 * span + 0.001, "{passed:?}");
    assert!(passed.len() >= 3, "{} passed", passed.len());
    assert_eq!(upstream.requests(), 1 + passed.len());
    assert_eq!(limited(&proxy, "main", "limited"), Some(refused as f64));
}

/// A listener's own limit counts every request it takes, whatever the route; it is counted
/// with route "".
#[tokio::test]
async fn a_listener_limit_counts_the_requests_of_every_route() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "rate_limit: { rate: 1/m, burst: 3 }",
        &[
            route("a", Some("/a"), "app", ""),
            route("b", Some("/b"), "app", ""),
        ],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let addr = proxy.listener("main");
    let mut h1 = Client::connect(addr, Proto::Http1).await;
    let mut h2 = Client::connect(addr, Proto::H2c).await;

    assert_eq!(h1.get("/a/1").await.status, 200);
    assert_eq!(h2.get("/b/1").await.status, 200);
    assert_eq!(h1.get("/a/2").await.status, 200);
    assert_limited(&h2.get("/b/2").await, 59..=60);
    assert_limited(&h1.get("/a/3").await, 59..=60);
    // A new connection is no way around it.
    let mut fresh = Client::connect(addr, Proto::Http1).await;
    assert_limited(&fresh.get("/b/3").await, 59..=60);

    assert_eq!(upstream.requests(), 3);
    assert_eq!(limited(&proxy, "main", ""), Some(3.0));
}

/// On a TCP listener the limit counts connections: past the burst, a connection is closed at
/// once, without reaching the upstream.
#[test]
fn a_tcp_listener_limit_closes_connections_past_it() {
    let echo = RawServer::tcp_echo();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: db
    address: 127.0.0.1:0
    protocol: tcp
    cluster: app
    rate_limit: {{ rate: 1/m, burst: 2 }}
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        echo.addr()
    ));
    let echoes = |conn: &mut std::net::TcpStream| {
        conn.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    };
    let mut first = raw::connect(proxy.listener("db"));
    echoes(&mut first);
    let mut second = raw::connect(proxy.listener("db"));
    echoes(&mut second);

    let mut third = raw::connect(proxy.listener("db"));
    let _ = third.write_all(b"ping");
    let mut got = Vec::new();
    let _ = third.read_to_end(&mut got);
    assert!(got.is_empty(), "the third connection got {got:?}");
    assert_eq!(echo.connections(), 2);
    assert_eq!(limited(&proxy, "db", ""), Some(1.0));
    // The first two are not affected.
    echoes(&mut first);
    echoes(&mut second);
}
