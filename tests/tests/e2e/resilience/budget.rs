//! The retry budget: retries may add at most `ratio` of a cluster's requests plus
//! `min_per_second` × `window`. What it is for: with every upstream failing, retries must not
//! multiply the load. A refused retry returns the last attempt's result, marked
//! `x-remora-retry-budget-exhausted: true` and counted.

use std::time::{Duration, Instant};

use remora_tests::client::{self, Reply};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use super::{STATE_TIMEOUT, attempts, config};

const EXHAUSTED: &str = "x-remora-retry-budget-exhausted";

fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    proxy.metric(name, &[("cluster", "app")]).unwrap_or(0.0)
}

/// The storm: every upstream answers 503 and the cluster's policy retries 5xx up to 3
/// attempts, which unchecked would triple the load. 1,000 requests, 32 at a time: the load the
/// upstreams see stays within 1.2 × the offered load plus the budget's minimum
/// (`min_per_second` 5 × 10 s window = 50), and the budget is spent, not merely refused.
/// Every reply is the upstream's 503 with its attempt count; those whose retry was refused say
/// so, as many as the metric counts.
#[tokio::test]
async fn the_budget_stops_a_retry_storm() {
    const OFFERED: usize = 1000;
    const MINIMUM: usize = 5 * 10;
    let ups = [
        Upstream::start(Behaviour::reply(503, &[])),
        Upstream::start(Behaviour::reply(503, &[])),
    ];
    let proxy = ProxyProcess::start(&config(
        &[ups[0].addr(), ups[1].addr()],
        "",
        "
        retries:
          max_attempts: 3
          retry_on: [5xx]
          backoff: { base_interval: 1ms, max_interval: 2ms }
        retry_budget: { ratio: 20%, min_per_second: 5, window: 10s }
        circuit_breakers: { max_retries: 10000 }
        ",
    ));

    let requests = (0..OFFERED)
        .map(|i| client::get_request(&format!("/storm/{i}")))
        .collect();
    let started = Instant::now();
    let replies = client::fetch_all(proxy.listener("main"), 2, 16, requests).await;
    let took = started.elapsed();

    let load: usize = ups.iter().map(Upstream::requests).sum();
    let exhausted = replies
        .iter()
        .filter(|r| r.header(EXHAUSTED) == Some("true"))
        .count();
    let attempts_sum: u32 = replies.iter().map(|r| attempts(r).unwrap_or(0)).sum();
    eprintln!(
        "storm: {OFFERED} offered, {load} reached the upstreams, {exhausted} refused a retry, \
         in {took:?}"
    );
    for r in &replies {
        assert_eq!(r.status, 503, "{r:?}");
        assert!(matches!(attempts(r), Some(1..=3)), "{r:?}");
    }
    let bound = 1.2 * OFFERED as f64 + MINIMUM as f64;
    assert!(
        load as f64 <= bound,
        "{load} upstream requests for {OFFERED} offered: over the budget's {bound}"
    );
    let retries = load - OFFERED;
    assert!(
        retries >= OFFERED / 5,
        "only {retries} retries: the budget allows {bound} - {OFFERED}"
    );
    // What the clients were told agrees with what the upstreams saw and the proxy counted.
    assert_eq!(attempts_sum as usize, load);
    assert!(exhausted > 0);
    proxy.wait_metric(
        "remora_upstream_retries_total",
        &[("cluster", "app")],
        retries as f64,
    );
    proxy.wait_metric(
        "remora_retry_budget_exhausted_total",
        &[("cluster", "app")],
        exhausted as f64,
    );
}

/// With `ratio: 0%` only the minimum is left: `min_per_second` 1 over a 10 s window is 10
/// retries. One request after another, each failing once: the first 10 are retried and
/// succeed; the next 5 get the failed attempt's 503 back, marked as budget-exhausted.
#[tokio::test]
async fn the_minimum_is_ten_retries_and_then_the_failure_is_returned_and_marked() {
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::reply(503, &[]),
        Behaviour::Echo,
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 2, retry_on: [5xx] }",
        "retry_budget: { ratio: 0%, min_per_second: 1, window: 10s }",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let mut replies: Vec<Reply> = Vec::new();
    for i in 0..15 {
        replies.push(client.get(&format!("/b/{i}")).await);
    }
    for (i, r) in replies.iter().enumerate() {
        if i < 10 {
            assert_eq!(r.status, 200, "request {i}: {}", r.text());
            assert_eq!(attempts(r), Some(2), "request {i}");
            assert_eq!(r.header(EXHAUSTED), None, "request {i}");
        } else {
            assert_eq!(r.status, 503, "request {i}: {}", r.text());
            assert_eq!(attempts(r), Some(1), "request {i}");
            assert_eq!(r.header(EXHAUSTED), Some("true"), "request {i}");
            assert_eq!(r.remora_error(), None, "the upstream's own answer");
        }
    }
    assert_eq!(upstream.requests(), 25);
    assert_eq!(metric(&proxy, "remora_upstream_retries_total"), 10.0);
    assert_eq!(metric(&proxy, "remora_retry_budget_exhausted_total"), 5.0);
}

/// The window slides: with `min_per_second: 2` over a 1 s window, two retries spend the
/// budget; retries come back once they have left the window (counted in tenths of it, so
/// between 0.9 and 1 s later), and not before.
#[tokio::test]
async fn spent_retries_leave_the_window_and_the_budget_comes_back() {
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::reply(503, &[]),
        Behaviour::Echo,
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 2, retry_on: [5xx] }",
        "retry_budget: { ratio: 0%, min_per_second: 2, window: 1s }",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    // Sent before the first retry happened: the earliest the budget can come back is 0.9 s
    // after this.
    let spent_from = Instant::now();
    for i in 0..2 {
        let r = client.get(&format!("/spend/{i}")).await;
        assert_eq!(
            (r.status.as_u16(), attempts(&r)),
            (200, Some(2)),
            "{}",
            r.text()
        );
    }
    let refused = client.get("/refused").await;
    assert_eq!(refused.header(EXHAUSTED), Some("true"));

    let mut refusals = 1;
    let back = loop {
        let sent = Instant::now();
        let r = client.get("/again").await;
        if r.status == 200 {
            assert_eq!(attempts(&r), Some(2));
            break sent;
        }
        assert_eq!(r.header(EXHAUSTED), Some("true"), "{r:?}");
        refusals += 1;
        assert!(
            spent_from.elapsed() < STATE_TIMEOUT,
            "the budget never came back"
        );
        // Each refused request still costs the upstream an attempt: pace them.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = back - spent_from;
    eprintln!("budget back after {after:?}, {refusals} refusals meanwhile");
    assert!(
        after >= Duration::from_millis(880),
        "retries allowed again after {after:?}"
    );
    assert!(after < Duration::from_millis(2500), "{after:?}");
    assert_eq!(
        metric(&proxy, "remora_retry_budget_exhausted_total"),
        refusals as f64
    );
}
