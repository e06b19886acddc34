//! Fault injection: aborts and delays for a share of a route's requests (checked against the
//! binomial distribution), narrowed by headers, switched off by an expiry, asked for per
//! request by header where enabled, answered the gRPC way to gRPC calls, and marked in the
//! access log and the metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use remora_tests::client::{self, Reply, empty, full, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};
use serde_json::Value;

use super::{STATE_TIMEOUT, attempts, cluster, config, proxy_config, rfc3339, route, unix_now};

/// How long to wait for access-log lines.
const LOG_WAIT: Duration = Duration::from_secs(10);

fn injected(proxy: &ProxyProcess, route: &str, kind: &str) -> f64 {
    proxy
        .metric(
            "remora_faults_injected_total",
            &[("listener", "main"), ("route", route), ("kind", kind)],
        )
        .unwrap_or(0.0)
}

fn is_fault(reply: &Reply) -> bool {
    reply.remora_error() == Some("fault-injected")
}

/// `count` of `n` independent draws at probability `p` is within 5 standard deviations of the
/// mean: a correct share fails this about once in 1.7 million runs.
fn assert_binomial(what: &str, count: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let tolerance = 5.0 * (n as f64 * p * (1.0 - p)).sqrt();
    eprintln!("{what}: {count} of {n}, expected {mean} ± {tolerance:.0}");
    assert!(
        (count as f64 - mean).abs() <= tolerance,
        "{what}: {count} of {n}, want {mean} ± {tolerance:.0}"
    );
}

/// `abort: { http_status: 503, percent: 30% }` over 2,000 requests: the aborted share is
/// binomial (mean 600, sd 20.5, so ±102 at 5 sd; 25% or 35% would be 5 sd out). Aborted
/// requests carry `x-remora-error: fault-injected`, no attempt, and never reach the upstream;
/// the metric counts exactly them.
#[tokio::test]
async fn an_abort_percentage_holds_over_2000_requests() {
    const N: usize = 2000;
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "fault: { abort: { http_status: 503, percent: 30% } }",
        "",
    ));
    let requests = (0..N)
        .map(|i| client::get_request(&format!("/f/{i}")))
        .collect();
    let replies = client::fetch_all(proxy.listener("main"), 2, 16, requests).await;

    let mut aborted = 0;
    for r in &replies {
        if is_fault(r) {
            aborted += 1;
            assert_eq!(r.status, 503);
            assert_eq!(attempts(r), None, "{r:?}");
        } else {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(attempts(r), Some(1));
        }
    }
    assert_binomial("aborted", aborted, N, 0.3);
    assert_eq!(upstream.requests(), N - aborted);
    assert_eq!(injected(&proxy, "all", "abort"), aborted as f64);
    assert_eq!(injected(&proxy, "all", "delay"), 0.0);
}

/// `delay: { fixed: 100ms, percent: 20% }` over 500 requests, 50 at a time. Which requests
/// were delayed is read from the access log (`fault: "delay"`, by request id): their share is
/// binomial (mean 100, ±45 at 5 sd), each of them took at least 100 ms at the client and in
/// the log, and the others were not slowed. Every request reached the upstream once.
#[tokio::test]
async fn a_delay_percentage_holds_and_delayed_requests_wait() {
    const WORKERS: usize = 50;
    const EACH: usize = 10;
    const N: usize = WORKERS * EACH;
    const DELAY: Duration = Duration::from_millis(100);
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        true,
        "",
        &[route(
            "all",
            None,
            "app",
            "fault: { delay: { fixed: 100ms, percent: 20% } }",
        )],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let addr = proxy.listener("main");

    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr, Proto::Http1).await;
                let mut timings = Vec::new();
                for i in 0..EACH {
                    let id = format!("req-{w}-{i}");
                    let req = request("GET", "/d")
                        .header("x-request-id", &id)
                        .body(empty())
                        .unwrap();
                    let started = Instant::now();
                    let reply = client.fetch(req).await;
                    assert_eq!(reply.status, 200, "{reply:?}");
                    timings.push((id, started.elapsed()));
                }
                timings
            })
        })
        .collect();
    let mut elapsed = HashMap::new();
    for w in workers {
        elapsed.extend(w.await.unwrap());
    }

    let lines = proxy.stdout().wait_for_lines(N, LOG_WAIT);
    let mut delayed = 0;
    let mut undelayed = Vec::new();
    for line in &lines {
        let log: Value = serde_json::from_str(line).unwrap();
        let id = log["request_id"].as_str().unwrap();
        let took = elapsed[id];
        assert_eq!(log["attempts"], 1, "{line}");
        match log["fault"].as_str() {
            Some("delay") => {
                delayed += 1;
                assert!(took >= DELAY, "{id} delayed but answered in {took:?}");
                let logged = log["duration_ms"].as_f64().unwrap();
                assert!(logged >= 100.0, "{line}");
            }
            None => undelayed.push(took),
            Some(other) => panic!("fault {other:?}: {line}"),
        }
    }
    assert_binomial("delayed", delayed, N, 0.2);
    undelayed.sort();
    let median = undelayed[undelayed.len() / 2];
    assert!(median < DELAY / 2, "undelayed requests: median {median:?}");
    assert_eq!(upstream.requests(), N);
    proxy.wait_metric(
        "remora_faults_injected_total",
        &[("listener", "main"), ("route", "all"), ("kind", "delay")],
        delayed as f64,
    );
}

/// `delay: { min: 100ms, max: 300ms, percent: 100% }`: every request waits somewhere in the
/// range, and the waits are drawn, not fixed: of 20, some fall below 200 ms and some above
/// (all on one side has probability 2 × 2^-20).
#[tokio::test]
async fn a_delay_range_spreads_between_min_and_max() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "fault: { delay: { min: 100ms, max: 300ms, percent: 100% } }",
        "",
    ));
    let addr = proxy.listener("main");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = client::get(addr, Proto::Http1, &format!("/r/{i}")).await;
                assert_eq!(reply.status, 200);
                started.elapsed()
            })
        })
        .collect();
    let mut waits = Vec::new();
    for t in tasks {
        waits.push(t.await.unwrap());
    }
    waits.sort();
    eprintln!("waits: {waits:?}");
    assert!(waits[0] >= Duration::from_millis(100), "{waits:?}");
    assert!(waits[19] < Duration::from_millis(300 + 400), "{waits:?}");
    let middle = Duration::from_millis(200);
    assert!(waits[0] < middle && waits[19] > middle, "{waits:?}");
    assert_eq!(injected(&proxy, "all", "delay"), 20.0);
}

/// A fault with `headers` applies only to requests that carry them all.
#[tokio::test]
async fn a_fault_applies_only_to_requests_matching_its_headers() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        r#"
        fault:
          abort: { http_status: 503, percent: 100% }
          headers: [{ name: x-chaos, exact: "1" }]
        "#,
        "",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let with = |value: Option<&str>| {
        let mut b = request("GET", "/h");
        if let Some(v) = value {
            b = b.header("x-chaos", v);
        }
        b.body(empty()).unwrap()
    };

    let chaos = client.fetch(with(Some("1"))).await;
    assert_eq!(chaos.status, 503);
    assert!(is_fault(&chaos), "{chaos:?}");
    for value in [None, Some("2"), Some("10")] {
        let calm = client.fetch(with(value)).await;
        assert_eq!(calm.status, 200, "x-chaos: {value:?}: {calm:?}");
    }
    assert_eq!(upstream.requests(), 3);
    assert_eq!(injected(&proxy, "all", "abort"), 1.0);
}

/// A fault whose `expires` has passed does nothing; one with a later expiry applies; and one
/// set to expire two seconds from now applies until then and switches itself off at that
/// moment, without a reload.
#[tokio::test]
async fn a_fault_switches_itself_off_at_its_expiry() {
    let upstream = Upstream::start(Behaviour::name());
    let soon = unix_now() + 2;
    let abort = |expires: String| {
        format!("fault: {{ abort: {{ http_status: 503, percent: 100% }}, expires: {expires} }}")
    };
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("past", Some("/past"), "app", &abort(rfc3339(soon - 3600))),
            route("later", Some("/later"), "app", &abort(rfc3339(soon + 3600))),
            route("soon", Some("/soon"), "app", &abort(rfc3339(soon))),
        ],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    assert_eq!(client.get("/past").await.status, 200);
    assert!(is_fault(&client.get("/later").await));
    let first = client.get("/soon").await;
    assert!(is_fault(&first), "before its expiry: {first:?}");

    let wall = || SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let expiry = Duration::from_secs(soon);
    let deadline = Instant::now() + STATE_TIMEOUT;
    let mut last_fault = wall();
    let off_at = loop {
        let before = wall();
        let reply = client.get("/soon").await;
        if !is_fault(&reply) {
            assert_eq!(reply.status, 200);
            break before;
        }
        last_fault = before;
        assert!(Instant::now() < deadline, "the fault never switched off");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "expiry {expiry:?}: last fault sent at {last_fault:?}, first pass sent at {off_at:?}"
    );
    assert!(
        last_fault < expiry,
        "a fault was injected after its expiry, at {last_fault:?}"
    );
    assert!(
        off_at + Duration::from_millis(50) >= expiry,
        "switched off before its expiry: {off_at:?}"
    );
    assert!(off_at < expiry + Duration::from_millis(500), "{off_at:?}");
    assert!(
        is_fault(&client.get("/later").await),
        "the other fault stays on"
    );
    assert_eq!(injected(&proxy, "past", "abort"), 0.0);
}

/// With `header_triggered: true` a request asks for its own fault: `x-remora-fault-abort`,
/// `x-remora-fault-delay-ms`, or both (delayed, then aborted). Elsewhere those headers do
/// nothing. The access log marks each request's fault, and attempts only where the upstream
/// was tried.
#[tokio::test]
async fn header_triggered_faults_work_only_where_enabled() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        true,
        "",
        &[
            route(
                "on",
                Some("/on"),
                "app",
                "fault: { header_triggered: true }",
            ),
            route(
                "off",
                Some("/off"),
                "app",
                "fault: { abort: { http_status: 500, percent: 0% } }",
            ),
        ],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    // Each request has a path of its own, by which its access-log line is found.
    let ask = |path: &str, headers: &[(&str, &str)]| {
        let mut b = request("GET", path);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(empty()).unwrap()
    };
    const ABORT: (&str, &str) = ("x-remora-fault-abort", "418");
    const DELAY: (&str, &str) = ("x-remora-fault-delay-ms", "200");
    let timed = async |client: &mut Client, req| {
        let started = Instant::now();
        let reply = client.fetch(req).await;
        (reply, started.elapsed())
    };

    let (aborted, _) = timed(&mut client, ask("/on/abort", &[ABORT])).await;
    assert_eq!(aborted.status, 418);
    assert!(is_fault(&aborted));
    let (delayed, took) = timed(&mut client, ask("/on/delay", &[DELAY])).await;
    assert_eq!(delayed.status, 200);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let (both, took) = timed(&mut client, ask("/on/both", &[DELAY, ABORT])).await;
    assert_eq!(both.status, 418);
    assert!(took >= Duration::from_millis(200), "{took:?}");
    let (plain, _) = timed(&mut client, ask("/on/plain", &[])).await;
    assert_eq!(plain.status, 200);
    assert_eq!(upstream.requests(), 2, "the aborted ones never reached it");

    let (ignored, took) = timed(
        &mut client,
        ask("/off/both", &[ABORT, ("x-remora-fault-delay-ms", "1000")]),
    )
    .await;
    assert_eq!(ignored.status, 200, "{ignored:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(upstream.requests(), 3);

    let lines = proxy.stdout().wait_for_lines(5, LOG_WAIT);
    let logs: HashMap<String, Value> = lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["path"].as_str().unwrap().to_owned(), v)
        })
        .collect();
    let expect = [
        ("/on/abort", Value::from("abort"), 0),
        ("/on/delay", Value::from("delay"), 1),
        ("/on/both", Value::from("delay+abort"), 0),
        ("/on/plain", Value::Null, 1),
        ("/off/both", Value::Null, 1),
    ];
    for (path, fault, tries) in expect {
        let log = &logs[path];
        assert_eq!(log["fault"], fault, "{path}: {log}");
        assert_eq!(log["attempts"], tries, "{path}: {log}");
    }
    assert_eq!(logs["/on/abort"]["error"], "fault-injected");
    assert_eq!(injected(&proxy, "on", "abort"), 2.0);
    assert_eq!(injected(&proxy, "on", "delay"), 2.0);
    assert_eq!(injected(&proxy, "off", "abort"), 0.0);
}

fn grpc_call(path: &str, headers: &[(&str, &str)]) -> http::Request<client::ReqBody> {
    let mut b = request("POST", path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(full(vec![0u8, 0, 0, 0, 0])).unwrap()
}

/// gRPC calls are aborted the gRPC way: a trailers-only response (HTTP 200) carrying the
/// configured `grpc_status`, or the one a header asked for; other clients of the same route
/// get the HTTP status. Without a `grpc_status`, a gRPC call gets UNAVAILABLE (14), as
/// `docs/request-flow.md` says, whatever the `http_status`. (The schema's description of
/// `grpc_status`, "left out, they get `http_status`", says otherwise.)
#[tokio::test]
async fn a_grpc_call_is_aborted_with_the_configured_grpc_status() {
    let upstream = Upstream::start(Behaviour::name());
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "greeter",
                Some("/helloworld.Greeter/"),
                "app",
                "fault: { abort: { http_status: 503, grpc_status: 14, percent: 100% } }",
            ),
            route(
                "triggered",
                Some("/triggered.Svc/"),
                "app",
                "fault: { header_triggered: true }",
            ),
            route(
                "http-only",
                Some("/httponly.Svc/"),
                "app",
                "fault: { abort: { http_status: 403, percent: 100% } }",
            ),
        ],
        &[cluster("app", &[upstream.addr()], "protocol: http2")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    let call = client
        .fetch(grpc_call("/helloworld.Greeter/SayHello", &[]))
        .await;
    assert_eq!(call.status, 200, "{call:?}");
    assert_eq!(call.header("grpc-status"), Some("14"), "{call:?}");
    assert_eq!(call.header("content-type"), Some("application/grpc"));
    assert!(call.body.is_empty(), "trailers-only");
    assert!(is_fault(&call), "{call:?}");

    let plain = client.get("/helloworld.Greeter/SayHello").await;
    assert_eq!(plain.status, 503);
    assert!(is_fault(&plain));

    let asked = client
        .fetch(grpc_call(
            "/triggered.Svc/Call",
            &[("x-remora-fault-abort", "8")],
        ))
        .await;
    assert_eq!(asked.header("grpc-status"), Some("8"), "{asked:?}");

    let unset = client.fetch(grpc_call("/httponly.Svc/Call", &[])).await;
    assert_eq!(unset.status, 200, "{unset:?}");
    assert_eq!(unset.header("grpc-status"), Some("14"), "{unset:?}");
    assert!(is_fault(&unset), "{unset:?}");
    assert_eq!(client.get("/httponly.Svc/Call").await.status, 403);
    assert_eq!(upstream.requests(), 0);
}
