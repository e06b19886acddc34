//! HTTP health checks: an endpoint whose check path starts failing is taken out after exactly
//! `unhealthy_threshold` failed checks and comes back after exactly `healthy_threshold` passes.
//!
//! To see the thresholds exactly, the upstream itself notes, as each check arrives, what state
//! `/clusters` gives it: the proxy handles a check's answer completely before it sends the
//! next one, so the state then is the one the previous checks made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use remora_tests::upstream::text;
use remora_tests::{Behaviour, Client, Clusters, Proto, ProxyProcess, Upstream, eventually, raw};

use super::{STATE_TIMEOUT, wait_state};
use crate::balancing::{app_config, endpoint_labels};

/// One check as the upstream saw it.
#[derive(Debug, Clone)]
struct Check {
    status: u16,
    /// The endpoint's state on `/clusters` when the check arrived; `None` before the test
    /// told the upstream where the admin listener is.
    state_before: Option<String>,
}

/// The upstream under test: `/healthz` answers 503 while `failing` is set, 200 otherwise, and
/// logs each check; other requests get 200 and the upstream's name.
struct Scripted {
    upstream: Upstream,
    failing: Arc<AtomicBool>,
    admin: Arc<OnceLock<std::net::SocketAddr>>,
    log: Arc<Mutex<Vec<Check>>>,
}

impl Scripted {
    fn start() -> Scripted {
        let failing = Arc::new(AtomicBool::new(false));
        let admin = Arc::new(OnceLock::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let behaviour = {
            let (failing, admin, log) = (failing.clone(), admin.clone(), log.clone());
            Behaviour::custom(move |req, info| {
                let is_check = req.uri().path() == "/healthz";
                let status = if is_check && failing.load(Ordering::SeqCst) {
                    503
                } else {
                    200
                };
                let (admin, log) = (admin.get().copied(), log.clone());
                async move {
                    if !is_check {
                        return Ok(text(200, &info.name));
                    }
                    let me = info.addr;
                    let state_before = match admin {
                        // Blocking I/O, off the upstream's one thread.
                        Some(admin) => tokio::task::spawn_blocking(move || {
                            let page = raw::get(admin, "/clusters").expect("GET /clusters");
                            let page = Clusters::parse(&page.text());
                            Some(page.endpoint("app", me).state().to_owned())
                        })
                        .await
                        .expect("admin query"),
                        None => None,
                    };
                    log.lock().unwrap().push(Check {
                        status,
                        state_before,
                    });
                    Ok(match status {
                        200 => text(200, &info.name),
                        s => text(s, "failing on purpose\n"),
                    })
                }
            })
        };
        Scripted {
            upstream: Upstream::start_named("scripted", behaviour),
            failing,
            admin,
            log,
        }
    }

    fn log(&self) -> Vec<Check> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the upstream has seen `n` checks in all.
    async fn wait_checks(&self, n: usize) {
        eventually(&format!("{n} checks"), STATE_TIMEOUT, || {
            (self.log.lock().unwrap().len() >= n).then_some(())
        })
        .await;
    }
}

/// Sends `n` requests; how many the scripted upstream answered.
async fn to_scripted(proxy: &ProxyProcess, n: usize) -> usize {
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let mut count = 0;
    for i in 0..n {
        let reply = client.get(&format!("/work/{i}")).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        count += usize::from(reply.text() == "scripted");
    }
    count
}

#[tokio::test]
async fn a_failing_http_check_takes_an_endpoint_out_and_passing_ones_bring_it_back() {
    let scripted = Scripted::start();
    let steady = Upstream::start_named("steady", Behaviour::name());
    let proxy = ProxyProcess::start(&app_config(
        &[scripted.upstream.addr(), steady.addr()],
        "
        health_check:
          http: { path: /healthz, host: checks.local, expected_statuses: [200] }
          interval: 200ms
          jitter: 0%
          timeout: 180ms
          unhealthy_threshold: 3
          healthy_threshold: 2
        ",
    ));
    scripted.admin.set(proxy.admin()).unwrap();
    let checks_before = scripted.log().len();
    scripted.wait_checks(checks_before + 1).await;
    assert_eq!(to_scripted(&proxy, 10).await, 5, "both endpoints serve");

    scripted.failing.store(true, Ordering::SeqCst);
    let addr = scripted.upstream.addr();
    wait_state(&proxy, "app", addr, "unhealthy").await;
    let page = proxy.clusters();
    let ep = page.endpoint("app", addr);
    assert_eq!(ep.last_failure_reason(), Some("status"), "{:#}", ep.0);
    assert!(
        ep.last_failure_detail().is_some_and(|d| d.contains("503")),
        "{:#}",
        ep.0
    );
    assert!(ep.0["health"]["active_checks"].as_bool().unwrap());
    let addr_text = addr.to_string();
    let labels = endpoint_labels("app", &addr_text);
    assert_eq!(proxy.metric("remora_endpoint_healthy", &labels), Some(0.0));
    let steady_addr = steady.addr().to_string();
    let steady_labels = endpoint_labels("app", &steady_addr);
    assert_eq!(
        proxy.metric("remora_endpoint_healthy", &steady_labels),
        Some(1.0)
    );

    // No traffic while it is out.
    assert_eq!(to_scripted(&proxy, 20).await, 0);

    scripted.failing.store(false, Ordering::SeqCst);
    wait_state(&proxy, "app", addr, "healthy").await;
    // The check after the one that brought it back shows it healthy.
    let upto = scripted.log().len() + 1;
    scripted.wait_checks(upto).await;
    let log = scripted.log();

    // The states as each check arrived: the third failure flips it, the second pass flips it
    // back, never earlier or later.
    let first_fail = log.iter().position(|c| c.status == 503).unwrap();
    let first_pass = first_fail
        + log[first_fail..]
            .iter()
            .position(|c| c.status == 200)
            .unwrap();
    let states: Vec<(u16, &str)> = log[first_fail..]
        .iter()
        .map(|c| (c.status, c.state_before.as_deref().unwrap_or("?")))
        .collect();
    let failures = first_pass - first_fail;
    assert!(failures >= 3, "{states:?}");
    let state_after = |n: usize| log[n + 1].state_before.as_deref();
    assert_eq!(
        log[first_fail].state_before.as_deref(),
        Some("healthy"),
        "{states:?}"
    );
    for n in first_fail..first_fail + 2 {
        assert_eq!(
            state_after(n),
            Some("healthy"),
            "after check {n}: {states:?}"
        );
    }
    for n in first_fail + 2..first_pass + 1 {
        assert_eq!(
            state_after(n),
            Some("unhealthy"),
            "after check {n}: {states:?}"
        );
    }
    assert_eq!(state_after(first_pass + 1), Some("healthy"), "{states:?}");
    assert!(
        log[first_pass..].iter().all(|c| c.status == 200),
        "{states:?}"
    );

    // Every failed check counted, by reason.
    let mut reason = labels.to_vec();
    reason.push(("reason", "status"));
    proxy.wait_metric(
        "remora_health_check_failures_total",
        &reason,
        failures as f64,
    );
    assert_eq!(proxy.metric("remora_endpoint_healthy", &labels), Some(1.0));
    eprintln!("http check: {failures} failures then 2 passes: {states:?}");

    // Every check asked for the path with the configured Host.
    let heads = scripted.upstream.heads();
    let checks: Vec<_> = heads
        .iter()
        .filter(|h| h.uri.path() == "/healthz")
        .collect();
    assert!(checks.len() >= scripted.log().len());
    for head in checks {
        assert_eq!(head.method, "GET");
        assert_eq!(head.headers["host"], "checks.local");
        assert_eq!(head.headers["user-agent"], "remora-health-check");
    }

    // Back in the rotation.
    assert_eq!(to_scripted(&proxy, 10).await, 5);
}
