//! Where requests go: the weighted split between a route's backends (random per request), and
//! the round-robin between a cluster's endpoints (a fixed smooth schedule, so exact counts).

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use crate::request_labels;

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
