//! Hedging: an idempotent request without a body that has not been answered after
//! `hedge_after` is sent to a second endpoint as well, and the first response wins.

use std::time::{Duration, Instant};

use remora_tests::client::{full, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use crate::balancing::app_config;

/// Two endpoints, one that takes `slow` to answer: round robin sends every other request to it.
fn hedging_proxy(fast: &Upstream, slow: &Upstream, hedge_after: &str) -> ProxyProcess {
    ProxyProcess::start(&app_config(
        &[slow.addr(), fast.addr()],
        &format!(
            "
            retries:
              max_attempts: 2
              retry_on: [connect-failure, gateway-error]
              hedge_after: {hedge_after}
            "
        ),
    ))
}

#[tokio::test]
async fn a_slow_get_is_answered_by_the_hedge_to_the_other_endpoint() {
    let fast = Upstream::start_named("fast", Behaviour::name());
    let slow = Upstream::start_named("slow", Behaviour::name().delayed(Duration::from_secs(3)));
    let proxy = hedging_proxy(&fast, &slow, "100ms");
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let mut hedged = 0;
    for i in 0..6 {
        let started = Instant::now();
        let reply = client.get(&format!("/{i}")).await;
        let took = started.elapsed();
        assert_eq!(reply.status, 200);
        // Every answer comes from the fast endpoint, never after the slow one's 3s.
        assert_eq!(reply.text(), "fast");
        assert!(took < Duration::from_secs(2), "request {i} took {took:?}");
        match reply.header("x-remora-attempts") {
            Some("1") => {}
            Some("2") => {
                // Hedged: not before hedge_after.
                assert!(took >= Duration::from_millis(100), "hedged after {took:?}");
                hedged += 1;
            }
            other => panic!("x-remora-attempts: {other:?}"),
        }
    }
    // Each request first sent to the slow endpoint was hedged, and only those: round robin
    // starts there, and a hedge's own pick moves it along, so most (here all) first attempts
    // land on it.
    assert!(hedged >= 3, "{hedged} of 6 hedged");
    assert_eq!(slow.requests(), hedged);
    assert_eq!(fast.requests(), 6);
    proxy.wait_metric(
        "remora_upstream_hedges_total",
        &[("cluster", "app")],
        hedged as f64,
    );
}

#[tokio::test]
async fn a_post_or_a_request_with_a_body_is_never_hedged() {
    let fast = Upstream::start_named("fast", Behaviour::name());
    let slow = Upstream::start_named(
        "slow",
        Behaviour::name().delayed(Duration::from_millis(600)),
    );
    let proxy = hedging_proxy(&fast, &slow, "50ms");
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let mut from_slow = 0;
    for (i, method) in ["POST", "PUT", "POST", "PUT"].iter().enumerate() {
        let req = request(method, &format!("/{i}"))
            .body(full("payload"))
            .unwrap();
        let reply = client.fetch(req).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-remora-attempts"), Some("1"), "{method}");
        if reply.text() == "slow" {
            from_slow += 1;
        }
    }
    assert_eq!(from_slow, 2, "half the requests wait for the slow endpoint");
    assert_eq!(fast.requests() + slow.requests(), 4);
    assert_eq!(
        proxy.metric("remora_upstream_hedges_total", &[("cluster", "app")]),
        Some(0.0)
    );
}
