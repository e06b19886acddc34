//! 100 reloads, alternately valid and invalid, under continuous HTTP/1.1 and h2c traffic with
//! bodies streaming across many of them: no request fails, no stream is reset, every body
//! arrives whole, each reload is counted once, and the proxy ends with the file descriptors
//! and (within a tolerance) the memory it started with.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use remora_tests::load::{self, Exchange, Load, Report};
use remora_tests::{Client, Proto, ProxyProcess, Upstream, wait_for};

use super::{RELOAD_TIMEOUT, wait_reloads};

const RELOADS: u32 = 100;

/// A slow exchange lasts `64 * 100 ms`, about 6.4 s: some twenty reloads.
const SLOW_DOWNLOAD: Exchange = Exchange::SlowDownload {
    len: 1 << 20,
    chunk: 16 * 1024,
    every: Duration::from_millis(100),
};
const SLOW_UPLOAD: Exchange = Exchange::SlowUpload {
    len: 512 * 1024,
    chunk: 8 * 1024,
    every: Duration::from_millis(100),
};

/// How much the proxy's resident memory may have grown once the load is over and its
/// connections are closed. Nothing per reload should stay: a config is a few KiB, and a leaked
/// connection would show in the file descriptors first. What does stay is allocator slack: glibc
/// keeps freed memory in its arenas (one per thread that allocated: main, worker, blocking
/// threads that read the file), sized by the peak of ~15 connections' buffers and HTTP/2
/// windows during the load. 8 MiB covers that with room; a leak of the buffers of one connection
/// per reload (50 x 2 x 64 KiB and more) would not fit.
const RSS_TOLERANCE_KIB: u64 = 8 * 1024;

/// The config of generation `generation`: every response says which generation served it.
/// `/via-h2` always goes to the HTTP/2 cluster (so its single connection exists throughout);
/// everything else to `target`. The HTTP/1.1 cluster's connect timeout is `connect_timeout`:
/// changing it replaces that cluster, pools and all.
fn config(upstream: SocketAddr, generation: u32, target: &str, connect_timeout: &str) -> String {
    format!(
        r#"# generation {generation}
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: via-h2
        match: {{ path: {{ prefix: /via-h2 }} }}
        cluster: h2
      - name: all
        cluster: {target}
        timeout: 60s
        response_headers: {{ set: {{ x-config-generation: "{generation}" }} }}
clusters:
  - name: h1
    protocol: http1
    connect_timeout: {connect_timeout}
    idle_timeout: 1s
    endpoints: [{{ address: "{upstream}" }}]
  - name: h2
    protocol: http2
    endpoints: [{{ address: "{upstream}" }}]
"#
    )
}

/// Reload `i` (0-based): even ones are valid, odd ones invalid in one of five ways.
fn reload_config(i: u32, upstream: SocketAddr, busy: SocketAddr) -> (String, bool) {
    let valid = i / 2;
    let target = if valid.is_multiple_of(2) { "h2" } else { "h1" };
    let timeout = if (valid / 2).is_multiple_of(2) {
        "1s"
    } else {
        "2s"
    };
    let good = config(upstream, i, target, timeout);
    if i.is_multiple_of(2) {
        return (good, true);
    }
    let bad = match (i / 2) % 5 {
        0 => good
            .replace("cluster: h1\n", "cluster: missing\n")
            .replace("cluster: h2\n", "cluster: missing\n"),
        1 => format!("{good}listeners: [unclosed\n"),
        2 => good.replace("idle_timeout: 1s", "idle_timeout: 1 parsec"),
        3 => good.replace("    routes:\n", "    rooutes:\n"),
        // Valid as a file, but its new listener cannot be bound.
        _ => good.replace(
            "clusters:\n",
            &format!(
                "  - name: busy\n    address: {busy}\n    routes: [{{ name: r, cluster: h1 }}]\n\
                 clusters:\n"
            ),
        ),
    };
    (bad, false)
}

/// Starts the traffic: keep-alive HTTP/1.1 connections and one h2c connection with concurrent
/// streams, quick exchanges and slow ones.
async fn start_load(addr: SocketAddr) -> Load {
    let mut load = Load::new(Duration::from_millis(5));
    load.http1(addr, 3, Exchange::Get).await;
    load.http1(addr, 1, Exchange::Post(16 * 1024)).await;
    load.http1(addr, 1, SLOW_DOWNLOAD).await;
    let h2 = Client::connect(addr, Proto::H2c).await;
    load.h2c_on(&h2, 6, Exchange::Get);
    load.h2c_on(&h2, 2, Exchange::Post(16 * 1024));
    load.h2c_on(&h2, 1, SLOW_DOWNLOAD);
    load.h2c_on(&h2, 1, SLOW_UPLOAD);
    load
}

fn assert_clean(what: &str, report: &Report) {
    eprintln!("{what}:\n{report}");
    assert_eq!(report.failed(), 0, "{what}: failed exchanges:\n{report}");
    assert!(report.errors.is_empty(), "{what}:\n{report}");
}

/// Waits until the proxy holds no downstream connection and no pooled HTTP/1.1 connection
/// (reaped after the 1 s idle timeout, within the 5 s reap interval); the HTTP/2 cluster keeps
/// its one connection.
fn settle(proxy: &ProxyProcess) {
    wait_for("connections to close", Duration::from_secs(30), || {
        let m = proxy.scrape();
        let down = m.sum(
            "remora_downstream_connections_open",
            &[("listener", "main")],
        );
        let h1 = m.sum("remora_upstream_connections_open", &[("cluster", "h1")]);
        let h2 = m.sum("remora_upstream_connections_open", &[("cluster", "h2")]);
        (down == 0.0 && h1 == 0.0 && h2 == 1.0).then_some(())
    });
}

#[tokio::test]
async fn a_hundred_reloads_under_load_fail_nothing_and_leak_nothing() {
    let upstream = Upstream::start_named("app", load::upstream_behaviour());
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let proxy = ProxyProcess::start(&config(upstream.addr(), 0, "h1", "1s"));
    let main = proxy.listener("main");

    // Warm up with the same traffic, so that buffers, pools and the HTTP/2 connection exist
    // before the baseline is taken.
    let mut checker = Client::connect(main, Proto::Http1).await;
    assert_eq!(checker.get("/via-h2").await.status, 200);
    let warmup = start_load(main).await;
    wait_for("warm-up traffic", Duration::from_secs(30), || {
        let r = warmup.report();
        (r.completed() >= 500).then_some(())
    });
    assert_clean("warm-up", &warmup.stop(Duration::from_secs(30)).await);
    drop(checker);
    settle(&proxy);
    let fds = proxy.open_fds();
    let rss = proxy.rss_kib();
    eprintln!("baseline: {fds} fds, {rss} KiB RSS");

    let load = start_load(main).await;
    let mut checker = Client::connect(main, Proto::Http1).await;
    let started = Instant::now();
    let (mut applied, mut rejected) = (0, 0);
    for i in 0..RELOADS {
        let (yaml, valid) = reload_config(i, upstream.addr(), busy_addr);
        proxy.write_config(&yaml);
        match valid {
            true => applied += 1,
            false => rejected += 1,
        }
        // Observed before the next write, so that no change hides another.
        wait_reloads(&proxy, applied, rejected);
        if valid {
            // New requests see the new config at once.
            let reply = checker.get("/").await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                reply.header("x-config-generation"),
                Some(i.to_string().as_str())
            );
        }
    }
    let took = started.elapsed();
    let during = load.report();
    let report = load.stop(Duration::from_secs(60)).await;
    eprintln!(
        "{RELOADS} reloads in {took:?}; {} exchanges",
        report.completed()
    );
    assert_clean("under reloads", &report);
    assert!(
        report.completed() > during.completed(),
        "the loops stopped early:\n{report}"
    );
    // The slow exchanges each spanned some twenty reloads; at least a few of each completed.
    for slow in ["SlowDownload", "SlowUpload"] {
        assert!(
            report.completed_of(slow) >= 3,
            "too few {slow} completed:\n{report}"
        );
    }
    // About 20 s here (each reload waits two 100 ms settle periods), also with both cores busy.
    assert!(
        took < Duration::from_secs(60),
        "{RELOADS} reloads took {took:?}"
    );
    let totals = wait_reloads(&proxy, RELOADS / 2, RELOADS / 2);
    assert_eq!(totals.last_ok, 0.0, "the last change was invalid");
    let m = proxy.scrape();
    assert_eq!(m.sum("remora_proxy_errors_total", &[]), 0.0);
    assert_eq!(
        m.sum("remora_requests_total", &[("status_class", "5xx")]),
        0.0
    );
    // The HTTP/2 cluster never changed: all 50 applied reloads reused it, and its one
    // connection, opened during the warm-up.
    assert_eq!(
        m.get("remora_upstream_connections_total", &[("cluster", "h2")]),
        Some(1.0)
    );

    // Everything the load opened is closed again.
    drop(checker);
    settle(&proxy);
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    let mut last = proxy.open_fds();
    // Fewer is fine (a pooled connection open at the baseline may have been reaped since);
    // more would be a leak.
    while last > fds {
        assert!(
            Instant::now() < deadline,
            "the proxy has {last} file descriptors open, {fds} before the load: {:?}",
            std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
        last = proxy.open_fds();
    }
    let rss_after = proxy.rss_kib();
    eprintln!("after: {last} fds, {rss_after} KiB RSS (baseline {rss} KiB)");
    assert!(
        rss_after <= rss + RSS_TOLERANCE_KIB,
        "RSS grew from {rss} KiB to {rss_after} KiB"
    );
    drop(busy);
}
