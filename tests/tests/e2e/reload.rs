//! Hot reload in standalone mode: the proxy watches its `--config` file and applies valid
//! changes without dropping a request; invalid ones are refused, logged, and counted.
//!
//! A change is read once it has stayed the same for 100 ms (twice), so each reload takes a few
//! hundred milliseconds; tests wait for the reload counters rather than for time.

use std::time::{Duration, Instant};

use remora_tests::client::{self, background};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, wait_for};

mod files;
mod listeners;
mod load;

/// How long a test waits for one reload to be applied or rejected: a few hundred milliseconds
/// normally, far longer on a loaded machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the reload metrics say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reloads {
    pub applied: f64,
    pub rejected: f64,
    /// `remora_config_last_reload_success`.
    pub last_ok: f64,
}

pub fn reloads(proxy: &ProxyProcess) -> Reloads {
    let m = proxy.scrape();
    let count = |result| {
        m.get("remora_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0)
    };
    Reloads {
        applied: count("applied"),
        rejected: count("rejected"),
        last_ok: m
            .get("remora_config_last_reload_success", &[])
            .expect("remora_config_last_reload_success is always there"),
    }
}

/// Waits until the counters reach `applied` and `rejected`; panics if they do not, or if
/// either goes past its target (a half-written file applied, a change counted twice).
pub fn wait_reloads(proxy: &ProxyProcess, applied: u32, rejected: u32) -> Reloads {
    let (applied, rejected) = (f64::from(applied), f64::from(rejected));
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let now = reloads(proxy);
        assert!(
            now.applied <= applied && now.rejected <= rejected,
            "reloads went past applied={applied} rejected={rejected}: {now:?}"
        );
        if now.applied == applied && now.rejected == rejected {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "reloads are {now:?} after {RELOAD_TIMEOUT:?}, want applied={applied} \
             rejected={rejected}; stderr:\n{}",
            proxy.stderr().text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP listener `main` whose route `all` goes to cluster `target`, of clusters `a` and `b`
/// (one endpoint each); admin on, access log off.
fn two_clusters(a: &Upstream, b: &Upstream, target: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: all
        cluster: {target}
clusters:
  - name: a
    endpoints: [{{ address: "{}" }}]
  - name: b
    endpoints: [{{ address: "{}" }}]
"#,
        a.addr(),
        b.addr()
    )
}

#[tokio::test]
async fn a_valid_change_routes_new_requests_to_another_upstream() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let slow_a = Upstream::start_named("slow-a", Behaviour::Echo.delayed(Duration::from_secs(1)));
    let b = Upstream::start_named("b", Behaviour::Echo);
    // Also a route `slow` to a cluster of its own, which the new config drops.
    let first = two_clusters(&a, &b, "a").replace(
        "routes:\n",
        "routes:\n      - { name: slow, match: { path: { prefix: /slow } }, cluster: slow }\n",
    ) + &format!(
        "  - name: slow\n    endpoints: [{{ address: \"{}\" }}]\n",
        slow_a.addr()
    );
    let proxy = ProxyProcess::start(&first);
    let main = proxy.listener("main");
    let mut h1 = Client::connect(main, Proto::Http1).await;
    let mut h2 = Client::connect(main, Proto::H2c).await;
    assert_eq!(h1.get("/").await.echo().upstream(), "a");
    assert_eq!(h2.get("/").await.echo().upstream(), "a");
    assert_eq!(
        reloads(&proxy),
        Reloads {
            applied: 0.0,
            rejected: 0.0,
            last_ok: 1.0
        }
    );

    // A request in flight when the config changes, whose cluster the new config removes.
    let mut slow_client = Client::connect(main, Proto::H2c).await;
    let in_flight = background().spawn(async move { slow_client.get("/slow").await });
    wait_for("the slow request upstream", RELOAD_TIMEOUT, || {
        (slow_a.requests() == 1).then_some(())
    });

    proxy.write_config(&two_clusters(&a, &b, "b"));
    let after = wait_reloads(&proxy, 1, 0);
    assert_eq!(after.last_ok, 1.0);

    // New requests, on the connections opened before the change too, see the new route.
    assert_eq!(h1.get("/").await.echo().upstream(), "b");
    assert_eq!(h2.get("/").await.echo().upstream(), "b");
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "b"
    );
    // The slow route is gone now...
    assert_eq!(h1.get("/slow").await.echo().upstream(), "b");
    // ...but the request that started under it finishes on the old config.
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.echo().upstream(), "slow-a");
    assert_eq!(reply.echo().path(), "/slow");
    // The listener kept its socket: a new one on port 0 would have another port.
    let addrs = proxy.read_addrs_file();
    assert_eq!(addrs.listeners, vec![("main".to_owned(), main)]);
}

#[tokio::test]
async fn an_unchanged_cluster_keeps_its_pooled_connections_across_a_reload() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let config = two_clusters(&a, &b, "a");
    let proxy = ProxyProcess::start(&config);
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for _ in 0..3 {
        client.get("/").await.echo();
    }
    let opened = [("cluster", "a")];
    proxy.wait_metric("remora_upstream_connections_total", &opened, 1.0);

    // Only the route changes: a response header, and a path it matches.
    let changed = config.replace(
        "        cluster: a\n",
        "        cluster: a\n        match: { path: { prefix: / } }\n        \
         response_headers: { set: { x-config: two } }\n",
    );
    assert_ne!(changed, config);
    proxy.write_config(&changed);
    wait_reloads(&proxy, 1, 0);
    for _ in 0..3 {
        let reply = client.get("/").await;
        assert_eq!(reply.header("x-config"), Some("two"));
        reply.echo();
    }
    assert_eq!(a.connections(), 1, "the pooled connection was reused");
    proxy.wait_metric("remora_upstream_connections_total", &opened, 1.0);
}

/// A config with two errors, and the line of each.
const BROKEN: &str = "admin: { address: 127.0.0.1:0 }
access_log: { enabled: false }
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: all
        cluster: nowhere
clusters:
  - name: a
    connect_timeout: 5 parsecs
    endpoints: [{ address: \"127.0.0.1:9\" }]
";

#[tokio::test]
async fn an_invalid_change_is_refused_logged_and_the_old_config_keeps_serving() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    let main = proxy.listener("main");
    let mut client = Client::connect(main, Proto::Http1).await;
    assert_eq!(client.get("/").await.echo().upstream(), "a");

    proxy.write_config(BROKEN);
    let now = wait_reloads(&proxy, 0, 1);
    assert_eq!(now.last_ok, 0.0);

    // Every problem is logged as `file:line:col: path: message`, as the validator reports it.
    let file = proxy.config_file().display().to_string();
    let expected = remora_config::load_str(&file, BROKEN).expect_err("BROKEN is invalid");
    assert!(expected.len() >= 2, "{expected}");
    for d in &expected {
        let line = d.to_string();
        proxy
            .stderr()
            .wait_for_line(RELOAD_TIMEOUT, |l| l.contains(&line));
    }
    for (path, text) in [
        ("listeners[0].routes[0].cluster", "cluster: nowhere"),
        ("clusters[0].connect_timeout", "connect_timeout: 5 parsecs"),
    ] {
        let line_no = BROKEN.lines().position(|l| l.contains(text)).unwrap() + 1;
        let prefix = format!("{file}:{line_no}:");
        let logged = proxy.stderr().wait_for_line(RELOAD_TIMEOUT, |l| {
            l.contains(&prefix) && l.contains(&format!(": {path}: "))
        });
        let col = logged.split(&prefix).nth(1).unwrap().split(':').next();
        assert!(
            col.is_some_and(|c| c.parse::<u32>().is_ok_and(|c| c > 0)),
            "no column in {logged:?}"
        );
    }

    // The old routes keep serving, on the old connection and on new ones.
    assert_eq!(client.get("/").await.echo().upstream(), "a");
    assert_eq!(
        client::get(main, Proto::H2c, "/").await.echo().upstream(),
        "a"
    );

    // A later valid change is applied and sets the gauge back.
    proxy.write_config(&two_clusters(&a, &b, "b"));
    let now = wait_reloads(&proxy, 1, 1);
    assert_eq!(now.last_ok, 1.0);
    assert_eq!(client.get("/").await.echo().upstream(), "b");
}

#[tokio::test]
async fn identical_content_is_not_a_reload() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let config = two_clusters(&a, &b, "a");
    let proxy = ProxyProcess::start(&config);
    proxy.write_config(&config);
    // Nothing to wait for: give the watcher several settle periods to (wrongly) count it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(reloads(&proxy).applied + reloads(&proxy).rejected, 0.0);
    // A real change after it is counted once.
    proxy.write_config(&two_clusters(&a, &b, "b"));
    wait_reloads(&proxy, 1, 0);
}

#[test]
fn the_addrs_file_keeps_the_admin_address_after_a_reload() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    let file = proxy.dir().join("addrs.json");
    let written = || std::fs::metadata(&file).and_then(|m| m.modified()).unwrap();
    let first = written();
    assert_eq!(proxy.read_addrs_file().admin, Some(proxy.admin()));
    proxy.write_config(&two_clusters(&a, &b, "b"));
    wait_reloads(&proxy, 1, 0);
    wait_for("the addrs file to be rewritten", RELOAD_TIMEOUT, || {
        (written() != first).then_some(())
    });
    let after = proxy.read_addrs_file();
    assert_eq!(after.admin, Some(proxy.admin()), "{after:?}");
}

#[tokio::test]
async fn an_access_log_that_cannot_be_opened_rejects_the_reload() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    let unopenable = proxy.dir().join("no-such-dir").join("access.log");
    let config = two_clusters(&a, &b, "b").replace(
        "access_log: { enabled: false }",
        &format!(
            "access_log: {{ enabled: true, path: \"{}\" }}",
            unopenable.display()
        ),
    );
    proxy.write_config(&config);
    // Counted one way or the other.
    wait_for("the reload to be counted", RELOAD_TIMEOUT, || {
        let r = reloads(&proxy);
        (r.applied + r.rejected == 1.0).then_some(())
    });
    assert_eq!(
        reloads(&proxy),
        Reloads {
            applied: 0.0,
            rejected: 1.0,
            last_ok: 0.0
        },
        "like a listener that cannot be bound, an access log that cannot be opened is refused"
    );
    let effective = proxy.admin_get("/config").text();
    assert!(!effective.contains("no-such-dir"), "{effective}");
    let main = proxy.listener("main");
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "a"
    );
}
