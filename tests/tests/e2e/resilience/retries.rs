//! Retries: which failures are tried again (retry_on, methods, bodies), how many times, where
//! (another endpoint), after how long (backoff, `Retry-After`, gRPC pushback), and within which
//! time (per-try timeout, route timeout, deadlines forwarded and received).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use remora_tests::client::{self, empty, full, pattern, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, free_addr, upstream};

use super::{attempts, cluster, config, http_date, proxy_config, route, timed, unix_now};

/// Retries on 5xx up to `max` attempts, with a backoff short enough not to matter.
fn on_5xx(max: u32) -> String {
    format!(
        "retries: {{ max_attempts: {max}, retry_on: [5xx], \
         backoff: {{ base_interval: 1ms, max_interval: 2ms }} }}"
    )
}

fn retries_total(proxy: &ProxyProcess, cluster: &str) -> f64 {
    proxy
        .metric("remora_upstream_retries_total", &[("cluster", cluster)])
        .unwrap_or(0.0)
}

/// An upstream that fails each request's first two attempts recovers on the third; one that
/// fails three runs the request out of attempts, and the client gets the last upstream answer.
/// Every attempt is counted in `x-remora-attempts` and in the upstream's own request count, and
/// every attempt of a request carries the same `x-request-id`.
#[tokio::test]
async fn a_request_is_retried_until_it_succeeds_or_runs_out_of_attempts() {
    let fail = || Behaviour::reply(503, &[]);
    let twice = Upstream::start_named(
        "twice",
        Behaviour::first_attempts(2, fail(), Behaviour::Echo),
    );
    let thrice = Upstream::start_named(
        "thrice",
        Behaviour::first_attempts(3, fail(), Behaviour::Echo),
    );
    let proxy = ProxyProcess::start(&proxy_config(
        true,
        "",
        &[
            route("twice", Some("/twice"), "twice", &on_5xx(3)),
            route("thrice", Some("/thrice"), "thrice", &on_5xx(3)),
        ],
        &[
            cluster("twice", &[twice.addr()], ""),
            cluster("thrice", &[thrice.addr()], ""),
        ],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let ok = client.get("/twice").await;
    assert_eq!(ok.echo().upstream(), "twice");
    assert_eq!(attempts(&ok), Some(3));
    assert_eq!(twice.requests(), 3);
    let ids: Vec<_> = twice
        .heads()
        .iter()
        .map(|h| h.headers["x-request-id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    let failed = client.get("/thrice").await;
    assert_eq!(failed.status, 503);
    assert_eq!(
        failed.text(),
        "status 503 from thrice after 0 body bytes\n",
        "the client gets the last attempt's own answer"
    );
    assert_eq!(failed.remora_error(), None);
    assert_eq!(attempts(&failed), Some(3));
    assert_eq!(thrice.requests(), 3);

    assert_eq!(retries_total(&proxy, "twice"), 2.0);
    assert_eq!(retries_total(&proxy, "thrice"), 2.0);
    // The access log says the same, and names the endpoint that gave the answer.
    let lines = proxy.stdout().wait_for_lines(2, Duration::from_secs(10));
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (log, path, status, up) in [
        (&logs[0], "/twice", 200, &twice),
        (&logs[1], "/thrice", 503, &thrice),
    ] {
        assert_eq!(log["path"], path, "{log}");
        assert_eq!(log["status"], status, "{log}");
        assert_eq!(log["attempts"], 3, "{log}");
        assert_eq!(log["upstream"], up.addr().to_string(), "{log}");
    }
}

/// Round robin over a failing and a healthy endpoint: whenever the first attempt lands on the
/// failing one, the retry goes to the other, so every request succeeds in at most two attempts
/// and the failing endpoint sees exactly one attempt per retried request.
#[tokio::test]
async fn a_retry_goes_to_the_other_endpoint() {
    let bad = Upstream::start_named("bad", Behaviour::reply(503, &[]));
    let good = Upstream::start_named("good", Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&[bad.addr(), good.addr()], &on_5xx(3), ""));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let mut retried = 0;
    for i in 0..20 {
        let reply = client.get(&format!("/r/{i}")).await;
        assert_eq!(reply.echo().upstream(), "good", "request {i}");
        match attempts(&reply) {
            Some(1) => {}
            Some(2) => retried += 1,
            other => panic!("request {i} took {other:?} attempts"),
        }
    }
    assert!(retried > 0, "round robin starts on the first endpoint");
    assert_eq!(bad.requests(), retried);
    assert_eq!(good.requests(), 20);
    proxy.wait_metric(
        "remora_upstream_retries_total",
        &[("cluster", "app")],
        retried as f64,
    );
}

/// Consistent hashing sends a key to the same endpoint every time; a retry must still leave
/// the endpoint that just failed when the cluster has another (issue 5: "a retry avoids the
/// endpoint that just failed, when another is available"). 40 keys over a failing and a
/// healthy endpoint: about half hash to the failing one, and their retries must go to the
/// healthy one.
#[tokio::test]
async fn a_retry_leaves_the_failed_endpoint_under_consistent_hashing() {
    let mut problems = Vec::new();
    for policy in ["ring_hash", "maglev"] {
        let bad = Upstream::start_named("bad", Behaviour::reply(503, &[]));
        let good = Upstream::start_named("good", Behaviour::Echo);
        let proxy = ProxyProcess::start(&config(
            &[bad.addr(), good.addr()],
            &on_5xx(2),
            &format!("load_balancer: {{ policy: {policy}, hash_on: [{{ header: x-key }}] }}"),
        ));
        let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
        let mut failed = Vec::new();
        for k in 0..40 {
            let req = request("GET", "/")
                .header("x-key", format!("key-{k}"))
                .body(empty())
                .unwrap();
            let reply = client.fetch(req).await;
            if reply.status != 200 {
                failed.push((k, reply.status.as_u16(), attempts(&reply)));
            }
        }
        assert!(
            bad.requests() > 0,
            "{policy}: no key hashed to the failing endpoint"
        );
        if !failed.is_empty() {
            problems.push(format!(
                "{policy}: {} of 40 keys failed although a healthy endpoint was there; the \
                 failing endpoint got {} attempts, the healthy one {}; (key, status, attempts): \
                 {failed:?}",
                failed.len(),
                bad.requests(),
                good.requests(),
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A connection that dies before the response is a `reset`: retried (on the other endpoint)
/// where `retry_on` has it, and not under the default policy, which only retries failures
/// where nothing was sent.
#[tokio::test]
async fn a_reset_is_retried_only_where_retry_on_has_it() {
    let dying = Upstream::start_named("dying", Behaviour::abort_after_body());
    let good = Upstream::start_named("good", Behaviour::Echo);
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "reset",
                Some("/reset"),
                "pair",
                "retries: { max_attempts: 2, retry_on: [reset] }",
            ),
            route("default", Some("/default"), "lone", ""),
        ],
        &[
            cluster("pair", &[dying.addr(), good.addr()], ""),
            cluster("lone", &[dying.addr()], ""),
        ],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let retried = client.get("/reset").await;
    assert_eq!(retried.echo().upstream(), "good");
    assert_eq!(attempts(&retried), Some(2));
    assert_eq!(dying.requests(), 1);

    let not_retried = client.get("/default").await;
    assert_eq!(not_retried.status, 502, "{}", not_retried.text());
    assert_eq!(not_retried.remora_error(), Some("upstream-reset"));
    assert_eq!(attempts(&not_retried), Some(1));
    assert_eq!(dying.requests(), 2);
    assert_eq!(good.requests(), 1);
}

/// The issue's own test: a POST whose body reached an upstream that then died may have done
/// its work, so it is not retried (one upstream request, 502, one attempt), even under a
/// policy that retries resets. A GET under the same policy is retried, and so is the POST on
/// a route that opts in with `retry_non_idempotent`.
#[tokio::test]
async fn a_post_whose_body_reached_a_dying_upstream_is_not_retried() {
    let dying = Upstream::start_named("dying", Behaviour::abort_after_body());
    let policy = "max_attempts: 3, retry_on: [connect-failure, reset, 5xx]";
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "strict",
                Some("/strict"),
                "app",
                &format!("retries: {{ {policy} }}"),
            ),
            route(
                "optin",
                Some("/optin"),
                "app",
                &format!("retries: {{ {policy}, retry_non_idempotent: true }}"),
            ),
        ],
        &[cluster("app", &[dying.addr()], "")],
    ));
    let addr = proxy.listener("main");
    let post = |path: &str| request("POST", path).body(full(vec![b'x'; 1000])).unwrap();

    for proto in Proto::ALL {
        let before = dying.requests();
        let mut client = Client::connect(addr, proto).await;
        let reply = client.fetch(post("/strict/order")).await;
        assert_eq!(reply.status, 502, "{proto:?}: {}", reply.text());
        assert_eq!(reply.remora_error(), Some("upstream-reset"), "{proto:?}");
        assert_eq!(attempts(&reply), Some(1), "{proto:?}");
        assert_eq!(dying.requests(), before + 1, "{proto:?}: sent once");

        let get = client.get("/strict/order").await;
        assert_eq!(get.status, 502, "{proto:?}");
        assert_eq!(attempts(&get), Some(3), "{proto:?}: a GET is retried");
        assert_eq!(dying.requests(), before + 4, "{proto:?}");

        let opted_in = client.fetch(post("/optin/order")).await;
        assert_eq!(opted_in.status, 502, "{proto:?}");
        assert_eq!(
            attempts(&opted_in),
            Some(3),
            "{proto:?}: the route opted in"
        );
        assert_eq!(dying.requests(), before + 7, "{proto:?}");
    }
    // Every body arrived whole: the upstream read it before dying (checked by abort_after_body
    // draining it), and the proxy counted the retries of the GETs and the opted-in POSTs only.
    assert_eq!(
        proxy.metric("remora_upstream_retries_total", &[("cluster", "app")]),
        Some(8.0)
    );
}

/// A connect failure means nothing was sent, so even a POST is retried, on the other endpoint,
/// under the default policy; its body arrives whole. That holds for a body far past the
/// buffer limit too: none of it had left, so the proxy still holds all of it.
#[tokio::test]
async fn a_post_that_could_not_connect_is_retried_on_another_endpoint() {
    let dead = free_addr();
    let good = Upstream::start_named("good", Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&[dead, good.addr()], "", ""));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    for len in [10_240u64, 1 << 20] {
        let reply = client
            .fetch(request("POST", "/orders").body(pattern(len)).unwrap())
            .await;
        let echo = reply.echo();
        assert_eq!(echo.upstream(), "good");
        assert_eq!(attempts(&reply), Some(2), "{len} bytes");
        assert_eq!(echo.body_bytes(), len);
        assert!(echo.body_is_pattern(), "{len} bytes arrived intact");
    }
    assert_eq!(good.requests(), 2);
}

/// A body is replayed only when the proxy kept all of it: at the buffer limit (16 KiB here) it
/// is retried and the upstream gets the same bytes again; one byte past it, the first
/// attempt's 503 goes back to the client, after the upstream read the whole body once. For
/// each client protocol and each upstream protocol.
#[tokio::test]
async fn a_body_within_the_buffer_limit_is_replayed_and_a_longer_one_is_not() {
    const LIMIT: u64 = 16 * 1024;
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::reply(503, &[]),
        Behaviour::Echo,
    ));
    let retries = "retries: { max_attempts: 2, retry_on: [5xx], buffer_limit: 16KiB }";
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("h1", Some("/http1"), "http1", retries),
            route("h2", Some("/http2"), "http2", retries),
        ],
        &[
            cluster("http1", &[upstream.addr()], ""),
            cluster("http2", &[upstream.addr()], "protocol: http2"),
        ],
    ));

    for proto in Proto::ALL {
        for upstream_protocol in ["http1", "http2"] {
            let case = format!("{proto:?} to {upstream_protocol}");
            let path = format!("/{upstream_protocol}/doc");
            let mut client = Client::connect(proxy.listener("main"), proto).await;
            let before = upstream.requests();
            let kept = client
                .fetch(request("PUT", &path).body(pattern(LIMIT)).unwrap())
                .await;
            assert_eq!(attempts(&kept), Some(2), "{case}: {kept:?}");
            let echo = kept.echo();
            assert_eq!(echo.body_bytes(), LIMIT, "{case}");
            assert!(echo.body_is_pattern(), "{case}: the same bytes again");
            assert_eq!(upstream.requests(), before + 2, "{case}");

            let too_long = client
                .fetch(request("PUT", &path).body(pattern(LIMIT + 1)).unwrap())
                .await;
            assert_eq!(too_long.status, 503, "{case}");
            assert_eq!(attempts(&too_long), Some(1), "{case}");
            assert_eq!(
                too_long.text(),
                format!(
                    "status 503 from {} after {} body bytes\n",
                    upstream.name(),
                    LIMIT + 1
                ),
                "{case}: the one attempt got the whole body"
            );
            assert_eq!(upstream.requests(), before + 3, "{case}");
        }
    }
}

/// `Retry-After` replaces the backoff: `1` delays the retry by a second, an HTTP date by the
/// time until then, and a value past `max_retry_after` is cut to it. The three run at once.
#[tokio::test]
async fn retry_after_paces_the_retry_and_max_retry_after_caps_it() {
    let after = |value: &str| {
        Upstream::start(Behaviour::first_attempts(
            1,
            Behaviour::reply(503, &[("retry-after", value)]),
            Behaviour::Echo,
        ))
    };
    let one_second = after("1");
    let thirty_seconds = after("30");
    // Two seconds from now, truncated to the second: the wait is between 1 and 2 s.
    let date = after(&http_date(unix_now() + 2));
    let routes = [
        ("seconds", &one_second, "10s"),
        ("capped", &thirty_seconds, "300ms"),
        ("date", &date, "10s"),
    ];
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &routes.map(|(name, _, cap)| {
            route(
                name,
                Some(&format!("/{name}")),
                name,
                &format!("retries: {{ max_attempts: 2, retry_on: [5xx], max_retry_after: {cap} }}"),
            )
        }),
        &routes.map(|(name, up, _)| cluster(name, &[up.addr()], "")),
    ));
    let addr = proxy.listener("main");
    let send = |path: &'static str| timed(client::get(addr, Proto::Http1, path));

    let ((seconds, waited_s), (capped, waited_c), (date_reply, waited_d)) =
        tokio::join!(send("/seconds"), send("/capped"), send("/date"));
    eprintln!("Retry-After 1: {waited_s:?}; 30 capped at 300ms: {waited_c:?}; date: {waited_d:?}");

    for reply in [&seconds, &capped, &date_reply] {
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(attempts(reply), Some(2));
    }
    assert!(
        waited_s >= Duration::from_millis(900) && waited_s < Duration::from_millis(2500),
        "Retry-After: 1 answered after {waited_s:?}"
    );
    assert!(
        waited_c >= Duration::from_millis(290) && waited_c < Duration::from_millis(2000),
        "Retry-After: 30 capped at 300ms answered after {waited_c:?}"
    );
    assert!(
        waited_d >= Duration::from_millis(900) && waited_d < Duration::from_millis(3500),
        "Retry-After as a date 1-2 s ahead answered after {waited_d:?}"
    );
}

/// A trailers-only response with a `grpc-status` of its own, after reading the request (see
/// `a_small_body_is_retried_even_when_the_upstream_did_not_read_it` for why it reads first).
fn grpc_status(code: u32, pushback: Option<&'static str>) -> Behaviour {
    Behaviour::custom(move |req, _| async move {
        upstream::drain(req.into_body())
            .await
            .map_err(std::io::Error::other)?;
        let mut resp = upstream::text(200, "");
        let h = resp.headers_mut();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("grpc-status", code.into());
        if let Some(ms) = pushback {
            h.insert("grpc-retry-pushback-ms", ms.parse().unwrap());
        }
        Ok(resp)
    })
}

fn grpc_call(path: &str) -> http::Request<client::ReqBody> {
    request("POST", path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(vec![0u8, 0, 0, 0, 0]))
        .unwrap()
}

/// A gRPC call retried on a gRPC status (UNAVAILABLE, from a trailers-only response) waits for
/// the upstream's `grpc-retry-pushback-ms`; a negative pushback means "do not retry". The
/// attempts carry `grpc-timeout` instead of `x-remora-deadline-ms`. (Every gRPC call is a
/// POST, so this route opts in to retrying non-idempotent requests; see the next test.)
#[tokio::test]
async fn grpc_statuses_are_retried_after_the_upstreams_pushback() {
    let pushback = Upstream::start_named(
        "pushback",
        Behaviour::first_attempts(1, grpc_status(14, Some("400")), Behaviour::Echo),
    );
    let refuse = Upstream::start_named("refuse", grpc_status(14, Some("-1")));
    let policy =
        "retries: { max_attempts: 3, retry_on: [unavailable], retry_non_idempotent: true }";
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("pushback", Some("/pb.Svc/"), "pushback", policy),
            route("refuse", Some("/refuse.Svc/"), "refuse", policy),
        ],
        &[
            cluster("pushback", &[pushback.addr()], "protocol: http2"),
            cluster("refuse", &[refuse.addr()], "protocol: http2"),
        ],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    let (reply, waited) = timed(client.fetch(grpc_call("/pb.Svc/Call"))).await;
    assert_eq!(attempts(&reply), Some(2), "{reply:?}");
    let echo = reply.echo();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(2000),
        "pushback of 400 ms, answered after {waited:?}"
    );
    assert!(echo.header("grpc-timeout").is_some(), "{:?}", echo.0);
    assert_eq!(echo.header("x-remora-deadline-ms"), None);
    assert_eq!(pushback.requests(), 2);

    let refused = client.fetch(grpc_call("/refuse.Svc/Call")).await;
    assert_eq!(refused.header("grpc-status"), Some("14"));
    assert_eq!(attempts(&refused), Some(1));
    assert_eq!(refuse.requests(), 1);
}

/// The `greeter` route of `config/examples/retries.yaml`, as written there ("gRPC: retry the
/// statuses that mean try again"): `retry_on: [connect-failure, refused-stream, unavailable,
/// resource-exhausted]`, no `retry_non_idempotent`. A call answered UNAVAILABLE once should
/// succeed on its second attempt.
#[tokio::test]
async fn grpc_unavailable_is_retried_as_the_example_config_promises() {
    let flaky = Upstream::start_named(
        "flaky",
        Behaviour::first_attempts(1, grpc_status(14, None), Behaviour::Echo),
    );
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[route(
            "greeter",
            Some("/helloworld.Greeter/"),
            "greeter",
            "retries: { retry_on: [connect-failure, refused-stream, unavailable, resource-exhausted] }",
        )],
        &[cluster("greeter", &[flaky.addr()], "protocol: http2")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    let reply = client
        .fetch(grpc_call("/helloworld.Greeter/SayHello"))
        .await;
    assert_eq!(
        (
            reply.header("grpc-status"),
            attempts(&reply),
            flaky.requests()
        ),
        (None, Some(2), 2),
        "UNAVAILABLE once, then success on the retry: {reply:?}"
    );
    assert_eq!(reply.echo().upstream(), "flaky");
}

/// Each attempt tells the upstream how long it has (`x-remora-deadline-ms`): the route timeout,
/// or the per-try timeout when shorter, or what a previous hop left the request when that is
/// shorter still. And the proxy keeps a previous hop's deadline itself: past it, 504.
#[tokio::test]
async fn deadlines_are_forwarded_and_a_callers_deadline_is_kept() {
    let echo = Upstream::start(Behaviour::Echo);
    let hang = Upstream::start(Behaviour::Echo.delayed(Duration::from_secs(30)));
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("route", Some("/route"), "echo", "timeout: 2s"),
            route(
                "per-try",
                Some("/per-try"),
                "echo",
                "timeout: 2s\nretries: { per_try_timeout: 500ms }",
            ),
            route("hang", Some("/hang"), "hang", "timeout: 10s"),
        ],
        &[
            cluster("echo", &[echo.addr()], ""),
            cluster("hang", &[hang.addr()], ""),
        ],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let deadline = |reply: &client::Reply| -> u64 {
        let echo = reply.echo();
        let v = echo
            .header("x-remora-deadline-ms")
            .unwrap_or_else(|| panic!("no deadline forwarded: {:?}", echo.0));
        v.parse().unwrap()
    };

    let route_ms = deadline(&client.get("/route").await);
    assert!((1000..=2000).contains(&route_ms), "{route_ms}");
    let per_try_ms = deadline(&client.get("/per-try").await);
    assert!((250..=500).contains(&per_try_ms), "{per_try_ms}");
    let from_caller = client
        .fetch(
            request("GET", "/route")
                .header("x-remora-deadline-ms", "800")
                .body(empty())
                .unwrap(),
        )
        .await;
    let caller_ms = deadline(&from_caller);
    assert!((400..=800).contains(&caller_ms), "{caller_ms}");

    let (late, waited) = timed(
        client.fetch(
            request("GET", "/hang")
                .header("x-remora-deadline-ms", "300")
                .body(empty())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(late.status, 504, "{}", late.text());
    assert_eq!(late.remora_error(), Some("upstream-timeout"));
    assert_eq!(attempts(&late), Some(1));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1300),
        "a 300 ms deadline answered after {waited:?}"
    );
    let forwarded: u64 = hang.heads()[0].headers["x-remora-deadline-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(forwarded <= 300, "{forwarded}");
}

/// An attempt without a response head within `per_try_timeout` is abandoned; with timeouts in
/// `retry_on` (gateway-error) the retry goes to the other endpoint and succeeds, in about the
/// per-try timeout. Without them the client gets 504 at the per-try timeout.
#[tokio::test]
async fn per_try_timeout_abandons_a_hanging_endpoint_for_the_other() {
    let hang = Upstream::start_named("hang", Behaviour::Echo.delayed(Duration::from_secs(30)));
    let good = Upstream::start_named("good", Behaviour::Echo);
    let per_try = "per_try_timeout: 300ms, backoff: { base_interval: 1ms, max_interval: 1ms }";
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "gateway",
                Some("/gateway"),
                "app",
                &format!("retries: {{ max_attempts: 2, retry_on: [gateway-error], {per_try} }}"),
            ),
            route(
                "reset-only",
                Some("/reset-only"),
                "app",
                &format!("retries: {{ max_attempts: 2, retry_on: [reset], {per_try} }}"),
            ),
        ],
        &[cluster("app", &[hang.addr(), good.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let (reply, waited) = timed(client.get("/gateway")).await;
    eprintln!("hung first attempt, answered after {waited:?}");
    assert_eq!(reply.echo().upstream(), "good");
    assert_eq!(attempts(&reply), Some(2));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(800),
        "per_try_timeout 300ms, answered after {waited:?}"
    );
    assert_eq!((hang.requests(), good.requests()), (1, 1));

    // Round robin: this one starts on the hanging endpoint again.
    let (timed_out, waited) = timed(client.get("/reset-only")).await;
    assert_eq!(timed_out.status, 504, "{}", timed_out.text());
    assert_eq!(timed_out.remora_error(), Some("upstream-timeout"));
    assert_eq!(attempts(&timed_out), Some(1));
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
    assert_eq!((hang.requests(), good.requests()), (2, 1));
}

/// The route timeout covers all attempts together, and no retry starts that could not get at
/// least half its per-try timeout before it: with 300 ms per try and a 1 s route timeout, the
/// attempts end at 0.3, 0.6 and 0.9 s, and a fourth would have under 0.1 s, so the client gets
/// 504 after three. With a 500 ms route timeout the second attempt is cut short by it.
#[tokio::test]
async fn the_route_timeout_covers_every_attempt() {
    let hang = || Upstream::start(Behaviour::Echo.delayed(Duration::from_secs(30)));
    let ups = [hang(), hang()];
    let retries = "retries: { max_attempts: 5, retry_on: [gateway-error], per_try_timeout: 300ms, \
                   backoff: { base_interval: 1ms, max_interval: 1ms } }";
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route(
                "long",
                Some("/long"),
                "app",
                &format!("timeout: 1s\n{retries}"),
            ),
            route(
                "short",
                Some("/short"),
                "app",
                &format!("timeout: 500ms\n{retries}"),
            ),
        ],
        &[cluster("app", &[ups[0].addr(), ups[1].addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let sent = || ups.iter().map(Upstream::requests).sum::<usize>();

    let (long, waited) = timed(client.get("/long")).await;
    eprintln!("1s route timeout: {waited:?}");
    assert_eq!(long.status, 504, "{}", long.text());
    assert_eq!(long.remora_error(), Some("upstream-timeout"));
    assert_eq!(attempts(&long), Some(3));
    assert_eq!(sent(), 3);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(1400),
        "{waited:?}"
    );

    let (short, waited) = timed(client.get("/short")).await;
    eprintln!("500ms route timeout: {waited:?}");
    assert_eq!(short.status, 504, "{}", short.text());
    assert_eq!(attempts(&short), Some(2));
    assert_eq!(sent(), 5);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_millis(900),
        "{waited:?}"
    );
}

/// A route's `retries` replaces its cluster's whole: fields it leaves out take the defaults
/// (`retry_on: [connect-failure, refused-stream]`), not the cluster's values. A route without
/// `retries` uses the cluster's.
#[tokio::test]
async fn a_route_policy_replaces_the_cluster_policy() {
    let upstream = Upstream::start(Behaviour::first_attempts(
        2,
        Behaviour::reply(503, &[]),
        Behaviour::Echo,
    ));
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("own", Some("/own"), "app", "retries: { max_attempts: 3 }"),
            route("inherits", None, "app", ""),
        ],
        &[cluster(
            "app",
            &[upstream.addr()],
            "retries: { max_attempts: 3, retry_on: [5xx] }",
        )],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let inherited = client.get("/inherits").await;
    assert_eq!(inherited.status, 200);
    assert_eq!(attempts(&inherited), Some(3), "the cluster's 5xx retries");
    let own = client.get("/own").await;
    assert_eq!(own.status, 503);
    assert_eq!(attempts(&own), Some(1), "the route's policy has no 5xx");
    assert_eq!(upstream.requests(), 4);
}

/// Which statuses each condition retries: `5xx` all of them, `gateway-error` only 502-504,
/// `retriable-status-codes` exactly the listed ones (409 here). The upstream fails each
/// request's first attempt with the status at the end of its path.
#[tokio::test]
async fn retry_on_chooses_which_statuses_are_retried() {
    let status_from_path = Behaviour::custom(|req, info| async move {
        let code = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Ok(upstream::text(code, &info.name))
    });
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        status_from_path,
        Behaviour::Echo,
    ));
    let policy = |on: &str| {
        // The config refuses a code list without the condition that reads it.
        let codes = match on {
            "retriable-status-codes" => ", retriable_status_codes: [409]",
            _ => "",
        };
        format!("retries: {{ max_attempts: 2, retry_on: [{on}]{codes} }}")
    };
    let proxy = ProxyProcess::start(&proxy_config(
        false,
        "",
        &[
            route("5xx", Some("/5xx"), "app", &policy("5xx")),
            route("gateway", Some("/gateway"), "app", &policy("gateway-error")),
            route(
                "codes",
                Some("/codes"),
                "app",
                &policy("retriable-status-codes"),
            ),
        ],
        &[cluster("app", &[upstream.addr()], "")],
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;

    let table = [
        ("5xx", [(500, true), (502, true), (409, false)]),
        ("gateway", [(500, false), (503, true), (409, false)]),
        ("codes", [(500, false), (502, false), (409, true)]),
    ];
    for (route, cases) in table {
        for (code, retried) in cases {
            let reply = client.get(&format!("/{route}/{code}")).await;
            let want = match retried {
                true => (200, Some(2)),
                false => (code, Some(1)),
            };
            assert_eq!(
                (reply.status.as_u16(), attempts(&reply)),
                want,
                "{route} on {code}"
            );
        }
    }
}

/// Full jitter, seen from the upstream: each of 100 concurrent requests fails twice, with a
/// backoff base of 100 ms. The gap before the first retry is uniform in [0, 100 ms] and before
/// the second in [0, 200 ms] (the cap doubles), plus the proxy's own few milliseconds. Checked:
/// no gap above its cap (plus slack for a loaded machine); the means within 5 standard errors
/// of 50 and 100 ms (plus up to 20 ms of overhead); the spread of a uniform draw (a fixed
/// backoff would have none); gaps near zero (full jitter starts at 0, not at half the cap);
/// and second gaps past the first cap.
#[tokio::test]
async fn backoff_is_jittered_over_the_whole_doubling_interval() {
    const N: usize = 100;
    type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;
    let arrivals: Arrivals = Arc::default();
    let upstream = {
        let arrivals = arrivals.clone();
        Upstream::start(Behaviour::custom(move |req, _| {
            let id = req.headers()["x-request-id"].to_str().unwrap().to_owned();
            let attempt = {
                let mut a = arrivals.lock().unwrap();
                let times = a.entry(id).or_default();
                times.push(Instant::now());
                times.len()
            };
            async move {
                Ok(match attempt {
                    1 | 2 => upstream::text(503, "again\n"),
                    _ => upstream::text(200, "done\n"),
                })
            }
        }))
    };
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 3, retry_on: [5xx], \
         backoff: { base_interval: 100ms, max_interval: 1s } }",
        "retry_budget: { min_per_second: 10000 }\ncircuit_breakers: { max_retries: 10000 }",
    ));

    let requests = (0..N)
        .map(|i| client::get_request(&format!("/j/{i}")))
        .collect();
    let replies = client::fetch_all(proxy.listener("main"), 2, 50, requests).await;
    for r in &replies {
        assert_eq!((r.status.as_u16(), attempts(r)), (200, Some(3)), "{r:?}");
    }

    let arrivals = arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), N);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (mut first, mut second): (Vec<f64>, Vec<f64>) = arrivals
        .values()
        .map(|t| (ms(t[1] - t[0]), ms(t[2] - t[1])))
        .unzip();
    first.sort_by(f64::total_cmp);
    second.sort_by(f64::total_cmp);
    let stats = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        (mean, sd)
    };
    let ((m1, sd1), (m2, sd2)) = (stats(&first), stats(&second));
    eprintln!(
        "first gap: mean {m1:.1} sd {sd1:.1} min {:.1} max {:.1}; \
         second gap: mean {m2:.1} sd {sd2:.1} min {:.1} max {:.1} (ms)",
        first[0],
        first[N - 1],
        second[0],
        second[N - 1]
    );
    // Caps, with 60 ms for the proxy's own time under load.
    assert!(first[N - 1] <= 100.0 + 60.0, "first gaps {first:?}");
    assert!(second[N - 1] <= 200.0 + 60.0, "second gaps {second:?}");
    // Uniform on [0, c]: mean c/2, sd c/sqrt(12); the mean of 100 draws has sd c/34.6.
    let within = |mean: f64, cap: f64| {
        let se = cap / 12f64.sqrt() / (N as f64).sqrt();
        mean >= cap / 2.0 - 5.0 * se && mean <= cap / 2.0 + 5.0 * se + 20.0
    };
    assert!(within(m1, 100.0), "first gap mean {m1:.1} ms: {first:?}");
    assert!(within(m2, 200.0), "second gap mean {m2:.1} ms: {second:?}");
    // A uniform draw's spread is 29 and 58 ms; a fixed delay's would be the noise alone.
    assert!(sd1 > 15.0 && sd2 > 30.0, "sd {sd1:.1} and {sd2:.1} ms");
    // P(no first gap under 25 ms) = 0.75^100; P(no second gap over 120 ms) = 0.6^100.
    assert!(first[0] < 25.0, "first gaps {first:?}");
    assert!(second[N - 1] > 120.0, "second gaps {second:?}");
}

/// A `Retry-After` that reaches past the route timeout is not waited for: no retry starts that
/// cannot finish in time, so the client gets the 503 at once instead of a 504 later.
#[tokio::test]
async fn a_retry_after_past_the_route_timeout_is_not_waited_for() {
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::reply(503, &[("retry-after", "5")]),
        Behaviour::Echo,
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "timeout: 1s\nretries: { max_attempts: 2, retry_on: [5xx], max_retry_after: 10s }",
        "",
    ));
    let (reply, waited) = timed(client::get(proxy.listener("main"), Proto::Http1, "/")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.remora_error(), None, "the upstream's own 503");
    assert_eq!(attempts(&reply), Some(1));
    assert!(
        waited < Duration::from_millis(500),
        "answered after {waited:?}"
    );
    assert_eq!(upstream.requests(), 1);
}

/// A caller whose deadline has already passed (`x-remora-deadline-ms: 0`) gets 504 without the
/// upstream being tried; `x-remora-attempts` is only for responses that had an attempt (the
/// README's access log: "`attempts` how many were sent ... 0 when none was").
#[tokio::test]
async fn a_request_whose_deadline_has_passed_is_not_sent() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&config(&[upstream.addr()], "", ""));
    let reply = client::fetch(
        proxy.listener("main"),
        Proto::Http1,
        request("GET", "/")
            .header("x-remora-deadline-ms", "0")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.remora_error(), Some("upstream-timeout"));
    assert_eq!(upstream.requests(), 0);
    assert_eq!(attempts(&reply), None, "{reply:?}");
}

/// A small body is within the buffer limit however the upstream treats it: a server that
/// sheds load often answers 503 (or UNAVAILABLE) from the head alone, without reading the body.
/// 400 PUTs with 5-byte bodies, 32 at a time, to an HTTP/2 upstream that answers each one so
/// once: every one should be retried and succeed. The budget and the retries limit are set
/// out of the way.
#[tokio::test]
async fn a_small_body_is_retried_even_when_the_upstream_did_not_read_it() {
    const N: usize = 400;
    let upstream = Upstream::start(Behaviour::first_attempts(
        1,
        Behaviour::Status(503),
        Behaviour::Echo,
    ));
    let proxy = ProxyProcess::start(&config(
        &[upstream.addr()],
        "retries: { max_attempts: 2, retry_on: [5xx] }",
        "protocol: http2\nretry_budget: { min_per_second: 100000 }\n\
         circuit_breakers: { max_retries: 10000 }",
    ));
    let requests = (0..N)
        .map(|i| {
            request("PUT", &format!("/small/{i}"))
                .body(full(vec![b'x'; 5]))
                .unwrap()
        })
        .collect();
    let replies = client::fetch_all(proxy.listener("main"), 2, 16, requests).await;

    let mut not_retried = Vec::new();
    for r in &replies {
        assert_eq!(r.header("x-remora-retry-budget-exhausted"), None);
        match attempts(r) {
            Some(2) => assert_eq!(r.echo().body_bytes(), 5, "{r:?}"),
            _ => not_retried.push(r),
        }
    }
    assert!(
        not_retried.is_empty(),
        "{} of {N} not retried, e.g. {:?}",
        not_retried.len(),
        not_retried[0]
    );
    assert_eq!(upstream.requests(), 2 * N);
}
