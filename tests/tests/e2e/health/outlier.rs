//! Outlier detection on real requests: consecutive 5xx and gateway failures eject an endpoint
//! for `base_ejection_time` times the number of ejections; `max_ejection_percent` bounds how
//! many are out at once; `require_health_check_to_return` holds one out until a check passes.
//! The shortest ejection the config allows is 1 s, so these tests take a few seconds.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, eventually, free_addr};

use super::{STATE_TIMEOUT, checked_upstream, status, wait_state};
use crate::balancing::{app_config, endpoint_labels, named_upstreams};

/// How much later than its end an ejection may be seen to end: `/clusters` is polled every few
/// milliseconds, but a loaded machine can stall a poll.
const LATE: Duration = Duration::from_millis(1500);

/// Sends `GET path` one at a time until `failures` answers were `status` (the others must be
/// 200); returns the instant just before the last one was sent, which is before the proxy
/// ejected anything.
async fn fail_until(client: &mut Client, path: &str, status: u16, failures: usize) -> Instant {
    let mut seen = 0;
    for _ in 0..100 {
        let sent = Instant::now();
        let reply = client.get(path).await;
        if reply.status == status {
            seen += 1;
            if seen == failures {
                return sent;
            }
        } else {
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    }
    panic!("only {seen} answers of {status} in 100 requests");
}

/// Sends requests for up to `for_at_most` (at most 30); all must be answered by a good
/// upstream. Returns how many were sent.
async fn all_good(client: &mut Client, for_at_most: Duration) -> usize {
    let start = Instant::now();
    let mut sent = 0;
    while sent < 30 && start.elapsed() < for_at_most {
        let reply = client.get(&format!("/good/{sent}")).await;
        assert_eq!(reply.status, 200, "request {sent} while ejected: {reply:?}");
        sent += 1;
    }
    sent
}

/// Waits until the endpoint is back; returns when that was seen.
async fn wait_back(proxy: &ProxyProcess, addr: std::net::SocketAddr) -> Instant {
    wait_state(proxy, "app", addr, "healthy").await;
    Instant::now()
}

/// An endpoint answering 500: exactly `consecutive_5xx` requests reach it, then it is out for
/// `base_ejection_time` (no traffic; `/clusters` says ejected, why, and the time left; the
/// metrics count it), and the second time for twice as long. Observed: back after 1.001 s and
/// 2.004 s.
#[tokio::test]
async fn consecutive_5xx_eject_and_each_ejection_lasts_longer() {
    let ups = named_upstreams(&["good-1", "good-2"]);
    let bad = Upstream::start_named("bad", Behaviour::Status(500));
    let proxy = ProxyProcess::start(&app_config(
        &[ups[0].addr(), ups[1].addr(), bad.addr()],
        "
        outlier_detection:
          consecutive_5xx: 3
          base_ejection_time: 1s
          max_ejection_time: 10s
          max_ejection_percent: 50%
        ",
    ));
    let labels_addr = bad.addr().to_string();
    let labels = endpoint_labels("app", &labels_addr);
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    for (round, base) in [(1u64, Duration::from_secs(1)), (2, Duration::from_secs(2))] {
        let before = fail_until(&mut client, "/fail", 500, 3).await;
        assert_eq!(
            bad.requests(),
            3 * round as usize,
            "exactly 3 reach it each time"
        );
        let page = proxy.clusters();
        let ep = page.endpoint("app", bad.addr());
        assert_eq!(ep.state(), "ejected");
        assert!(ep.ejected());
        assert_eq!(ep.ejection_reason(), Some("consecutive-5xx"));
        assert_eq!(ep.times_ejected(), round);
        let remaining = ep.remaining_ms().expect("remaining time while ejected");
        // Just ejected: nearly all of it left, and more than the previous ejection lasted.
        let full = base.as_millis() as u64;
        assert!(
            remaining <= full && remaining > full - 1000,
            "round {round}: {remaining} ms left of {full}"
        );
        let metrics = proxy.scrape();
        assert_eq!(metrics.get("remora_endpoint_ejected", &labels), Some(1.0));
        assert_eq!(
            metrics.get("remora_endpoint_ejections_total", &labels),
            Some(round as f64)
        );

        let sent = all_good(&mut client, base / 2).await;
        assert!(sent > 0);
        assert_eq!(
            bad.requests(),
            3 * round as usize,
            "no traffic while ejected"
        );

        let back = wait_back(&proxy, bad.addr()).await;
        let out = back - before;
        eprintln!("ejection {round}: out for {out:?} (configured {base:?})");
        assert!(out >= base, "round {round}: back after {out:?}");
        assert!(out < base + LATE, "round {round}: back only after {out:?}");
        // The task that ends ejections clears the gauge and the counters; only then does a
        // new run of failures count from zero.
        proxy.wait_metric("remora_endpoint_ejected", &labels, 0.0);
    }
}

/// Nothing listens at one endpoint: after `consecutive_gateway_failure` connect failures it is
/// ejected. No client sees them: each connect failure is retried on the live endpoint (the
/// default retry policy), which serves every request.
#[tokio::test]
async fn connect_failures_eject_a_dead_endpoint() {
    let good = Upstream::start_named("good", Behaviour::name());
    let dead = free_addr();
    let proxy = ProxyProcess::start(&app_config(
        &[good.addr(), dead],
        "
        outlier_detection:
          consecutive_gateway_failure: 2
          consecutive_5xx: 10
          base_ejection_time: 10s
        ",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let mut failed = Vec::new();
    for i in 0..20 {
        let reply = client.get(&format!("/{i}")).await;
        if reply.status != 200 {
            failed.push((
                reply.status.as_u16(),
                reply.remora_error().map(str::to_owned),
            ));
        }
    }
    // Two connect failures, retried, then the dead endpoint is out (the default
    // max_ejection_percent, 10% of 2 endpoints, rounds to none, but one may always be ejected).
    assert_eq!(failed, []);
    let page = proxy.clusters();
    let ep = page.endpoint("app", dead);
    assert_eq!(ep.state(), "ejected");
    assert_eq!(ep.ejection_reason(), Some("consecutive-gateway-failure"));
    assert_eq!(good.requests(), 20);
    proxy.wait_metric("remora_upstream_retries_total", &[("cluster", "app")], 2.0);
    let dead_addr = dead.to_string();
    let labels = endpoint_labels("app", &dead_addr);
    assert_eq!(
        proxy.metric("remora_endpoint_ejections_total", &labels),
        Some(1.0)
    );
}

/// Four endpoints all answering 500, in three clusters that allow 25%, 50% and 10% of them
/// ejected: one, two, and (10% of 4 rounds to none) still one.
#[tokio::test]
async fn max_ejection_percent_bounds_how_many_are_out() {
    let ups: Vec<Upstream> = (0..4)
        .map(|i| Upstream::start_named(&format!("e{i}"), Behaviour::Status(500)))
        .collect();
    let endpoints: Vec<String> = ups
        .iter()
        .map(|u| format!("{{ address: \"{}\" }}", u.addr()))
        .collect();
    let endpoints = endpoints.join(", ");
    let cluster = |name: &str, percent: &str| {
        format!(
            "  - name: {name}\n    endpoints: [{endpoints}]\n    outlier_detection: \
             {{ consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: {percent} }}\n"
        )
    };
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - {{ name: p25, match: {{ path: {{ prefix: /p25 }} }}, cluster: p25 }}
      - {{ name: p50, match: {{ path: {{ prefix: /p50 }} }}, cluster: p50 }}
      - {{ name: p10, match: {{ path: {{ prefix: /p10 }} }}, cluster: p10 }}
clusters:
{}{}{}"#,
        cluster("p25", "25%"),
        cluster("p50", "50%"),
        cluster("p10", "10%")
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for (name, most) in [("p25", 1), ("p50", 2), ("p10", 1)] {
        for i in 0..40 {
            assert_eq!(client.get(&format!("/{name}/{i}")).await.status, 500);
        }
        let page = proxy.clusters();
        let ejected: Vec<String> = page
            .endpoints(name)
            .iter()
            .filter(|e| e.state() == "ejected")
            .map(|e| e.0["address"].to_string())
            .collect();
        assert_eq!(ejected.len(), most, "{name}: {ejected:?}");
        let total = proxy
            .scrape()
            .sum("remora_endpoint_ejections_total", &[("cluster", name)]);
        assert_eq!(total, most as f64, "{name}");
    }
    // The refusals are logged.
    proxy.stderr().wait_for_line(STATE_TIMEOUT, |l| {
        l.contains("endpoint not ejected") && l.contains("p10")
    });
}

/// With `require_health_check_to_return`, an ejected endpoint whose time is up stays out
/// (`awaiting_health_check`, nothing left of its time) until a check passes.
#[tokio::test]
async fn an_ejected_endpoint_can_be_made_to_wait_for_a_passing_check() {
    let good = Upstream::start_named("good", Behaviour::name());
    let health = status(503);
    let flaky = checked_upstream("flaky", &health);
    let proxy = ProxyProcess::start(&app_config(
        &[good.addr(), flaky.addr()],
        "
        health_check:
          http: { path: /healthz }
          interval: 100ms
          timeout: 90ms
          # Failing checks alone never take it out: only the ejection does.
          unhealthy_threshold: 100
        outlier_detection:
          consecutive_5xx: 1
          base_ejection_time: 1s
          require_health_check_to_return: true
        ",
    ));
    // Its checks fail, but 100 of them would be needed to mark it unhealthy: it serves. It
    // answers 503 on /healthz only, so that path through the proxy makes it fail a request.
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let before = fail_until(&mut client, "/healthz", 503, 1).await;
    let page = proxy.clusters();
    assert_eq!(page.endpoint("app", flaky.addr()).state(), "ejected");
    // Its second is up, and it is still out, waiting for a check.
    let waiting = eventually("the ejection time to end", STATE_TIMEOUT, || {
        let page = proxy.clusters();
        let waiting =
            page.endpoint("app", flaky.addr()).0["outlier"]["awaiting_health_check"] == true;
        waiting.then_some(page)
    })
    .await;
    assert!(before.elapsed() >= Duration::from_secs(1));
    let ep = waiting.endpoint("app", flaky.addr());
    assert_eq!(ep.state(), "ejected", "{:#}", ep.0);
    assert_eq!(ep.remaining_ms(), Some(0));
    assert!(all_good(&mut client, Duration::from_millis(300)).await > 0);
    let work = |u: &Upstream| {
        let heads = u.heads();
        heads
            .iter()
            .filter(|h| h.uri.path().starts_with("/good"))
            .count()
    };
    assert_eq!(work(&flaky), 0, "no traffic while it waits");

    health.store(200, Ordering::Relaxed);
    wait_state(&proxy, "app", flaky.addr(), "healthy").await;
    let page = proxy.clusters();
    assert_eq!(
        page.endpoint("app", flaky.addr()).0["outlier"]["awaiting_health_check"],
        false
    );
}
