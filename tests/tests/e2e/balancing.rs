//! Where requests go: the weighted split between a route's backends (random per request), and
//! the round-robin between a cluster's endpoints (a fixed smooth schedule, so exact counts).
//! The other policies and what `/clusters` says about balancing are in `balancing/`.

use std::net::SocketAddr;
use std::time::Duration;

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, client, eventually};

use crate::request_labels;

mod affinity;
mod hashing;
mod introspection;
mod least_request;
mod panic;

/// A config with one HTTP listener `main` whose route `all` sends everything to cluster `app`:
/// these endpoints, and the cluster `settings`, YAML such as `load_balancer: {...}` (several
/// lines are dedented by their common indentation, so a test can indent them as its code).
/// Admin on, access log off.
pub fn app_config(endpoints: &[SocketAddr], settings: &str) -> String {
    let weighted: Vec<(SocketAddr, u32)> = endpoints.iter().map(|&a| (a, 1)).collect();
    weighted_config(&weighted, settings)
}

/// [`app_config`] with a weight per endpoint.
pub fn weighted_config(endpoints: &[(SocketAddr, u32)], settings: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(a, w)| format!("{{ address: \"{a}\", weight: {w} }}"))
        .collect();
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{}]
{}"#,
        endpoints.join(", "),
        indent(settings, 4)
    )
}

/// `yaml` dedented by the common indentation of its non-blank lines, then indented by
/// `by` spaces; blank lines dropped.
pub fn indent(yaml: &str, by: usize) -> String {
    let lines: Vec<&str> = yaml.lines().filter(|l| !l.trim().is_empty()).collect();
    let common = lines
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| format!("{:by$}{}\n", "", l[common..].trim_end()))
        .collect()
}

/// Starts upstreams answering with their names ([`Behaviour::name`]).
pub fn named_upstreams(names: &[&str]) -> Vec<Upstream> {
    names
        .iter()
        .map(|n| Upstream::start_named(n, Behaviour::name()))
        .collect()
}

/// The labels of one endpoint's series (`remora_endpoint_*`).
pub fn endpoint_labels<'a>(cluster: &'a str, endpoint: &'a str) -> [(&'static str, &'a str); 2] {
    [("cluster", cluster), ("endpoint", endpoint)]
}

/// Sends `n` requests over one HTTP/1.1 connection, checking each is answered by an upstream.
async fn send_many(proxy: &ProxyProcess, n: usize) -> Vec<String> {
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let mut served_by = Vec::with_capacity(n);
    for i in 0..n {
        let reply = client.get(&format!("/req/{i}")).await;
        served_by.push(reply.echo().upstream().to_owned());
    }
    served_by
}

#[tokio::test]
async fn a_weighted_split_sends_each_backend_its_share() {
    const N: usize = 2000;
    const P_A: f64 = 0.8;
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: split
        backends: [{{ cluster: a, weight: 80 }}, {{ cluster: b, weight: 20 }}]
clusters:
  - name: a
    endpoints: [{{ address: "{}" }}]
  - name: b
    endpoints: [{{ address: "{}" }}]
"#,
        a.addr(),
        b.addr()
    ));

    send_many(&proxy, N).await;

    let (to_a, to_b) = (a.requests(), b.requests());
    assert_eq!(to_a + to_b, N);
    // Each request independently goes to `a` with probability 0.8, so the count is binomial:
    // mean 1600, standard deviation sqrt(N p (1-p)) = 17.9. A tolerance of 4.5 standard
    // deviations (±80) fails a correct split about once in 150,000 runs, and catches a split
    // off by 6 points 98% of the time (74/26: mean 1480, sd 19.6) and by 10 points always;
    // swapped or equal weights are 30+ standard deviations out.
    let mean = N as f64 * P_A;
    let tolerance = 4.5 * (N as f64 * P_A * (1.0 - P_A)).sqrt();
    assert!(
        (to_a as f64 - mean).abs() <= tolerance,
        "a got {to_a} of {N}, want {mean} ± {tolerance:.0}"
    );
    // The per-backend request counters agree with what the upstreams saw.
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "split", "a", "2xx"),
        to_a as f64,
    );
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "split", "b", "2xx"),
        to_b as f64,
    );
}

fn one_cluster(endpoints: &[(&Upstream, u32)]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|(u, w)| format!("{{ address: \"{}\", weight: {w} }}", u.addr()))
        .collect();
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{}]
"#,
        endpoints.join(", ")
    )
}

#[tokio::test]
async fn round_robin_gives_equal_endpoints_exactly_equal_counts() {
    let ups: Vec<Upstream> = ["e0", "e1", "e2"]
        .iter()
        .map(|n| Upstream::start_named(n, Behaviour::Echo))
        .collect();
    let proxy = ProxyProcess::start(&one_cluster(&[(&ups[0], 1), (&ups[1], 1), (&ups[2], 1)]));

    let served_by = send_many(&proxy, 300).await;

    for u in &ups {
        assert_eq!(u.requests(), 100, "{}", u.name());
    }
    // In turn, not in bursts.
    assert_eq!(&served_by[..6], ["e0", "e1", "e2", "e0", "e1", "e2"]);
}

#[tokio::test]
async fn endpoint_weights_set_exact_shares_and_weight_zero_gets_nothing() {
    let heavy = Upstream::start_named("heavy", Behaviour::Echo);
    let light = Upstream::start_named("light", Behaviour::Echo);
    let drained = Upstream::start_named("drained", Behaviour::Echo);
    let proxy = ProxyProcess::start(&one_cluster(&[(&heavy, 3), (&light, 1), (&drained, 0)]));

    let served_by = send_many(&proxy, 400).await;

    assert_eq!(heavy.requests(), 300);
    assert_eq!(light.requests(), 100);
    assert_eq!(drained.requests(), 0);
    // Smooth: the light endpoint's turns are spread out, never two heavy bursts back to back
    // longer than the ratio needs.
    let longest_heavy_run = served_by
        .chunk_by(|x, y| x == y)
        .filter(|run| run[0] == "heavy")
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(longest_heavy_run <= 3, "{served_by:?}");
}

/// With several worker threads, connections land on different workers, each with its own
/// upstream pools; the endpoint schedule is shared, so the counts stay exact.
#[tokio::test]
async fn several_workers_share_one_round_robin_schedule() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
runtime: {{ workers: 3 }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}, {{ address: "{}" }}]
"#,
        a.addr(),
        b.addr()
    ));
    // Many concurrent connections, so more than one worker accepts some of them.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let addr = proxy.listener("main");
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(addr, Proto::Http1).await;
            for i in 0..25 {
                assert_eq!(client.get(&format!("/w/{i}")).await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!((a.requests(), b.requests()), (150, 150));
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "all", "app", "2xx"),
        300.0,
    );
}

/// Weights 5:3:2 under 24 requests at a time over h2c: the schedule is shared by every request,
/// so 1,000 requests are exactly 500, 300 and 200, and the proxy's pick counters (metrics and
/// `/clusters`) agree with what the upstreams received.
#[tokio::test]
async fn weights_stay_exact_under_concurrency_and_every_pick_is_counted() {
    let ups = named_upstreams(&["w5", "w3", "w2"]);
    let proxy = ProxyProcess::start(&one_cluster(&[(&ups[0], 5), (&ups[1], 3), (&ups[2], 2)]));

    let requests = (0..1000)
        .map(|i| client::get_request(&format!("/c/{i}")))
        .collect();
    let replies = client::fetch_all(proxy.listener("main"), 3, 8, requests).await;

    assert!(replies.iter().all(|r| r.status == 200));
    let counts: Vec<usize> = ups.iter().map(Upstream::requests).collect();
    assert_eq!(counts, [500, 300, 200]);
    // A request stops counting as in flight when its response body has ended, which the
    // proxy notes a moment after the client has read it.
    let clusters = eventually("no request in flight", Duration::from_secs(5), || {
        let c = proxy.clusters();
        c.endpoints("app")
            .iter()
            .all(|e| e.in_flight() == 0)
            .then_some(c)
    })
    .await;
    let metrics = proxy.scrape();
    for (u, want) in ups.iter().zip([500u64, 300, 200]) {
        let addr = u.addr().to_string();
        let picks = metrics.get(
            "remora_endpoint_picks_total",
            &endpoint_labels("app", &addr),
        );
        assert_eq!(picks, Some(want as f64), "{}", u.name());
        let ep = clusters.endpoint("app", u.addr());
        assert_eq!((ep.picks(), ep.in_flight()), (want, 0), "{}", u.name());
    }
}
