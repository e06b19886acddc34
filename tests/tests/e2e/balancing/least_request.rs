//! least_request: one endpoint of three answers ten times slower than the others. Under a
//! fixed concurrency its requests pile up in flight, so the power of two choices sends it far
//! less than the third round-robin would; with peak-EWMA its measured latency keeps it out
//! almost entirely.

use std::time::Duration;

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

use super::app_config;

/// Clients sending at once, each one request after another on its own connection.
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 50;
const TOTAL: usize = CLIENTS * PER_CLIENT;
const FAST: Duration = Duration::from_millis(10);
const SLOW: Duration = Duration::from_millis(100);

/// Runs the fixed load through a proxy with these cluster settings; returns the proxy and the
/// upstreams: two fast ones, then the slow one.
async fn run(settings: &str) -> (ProxyProcess, Vec<Upstream>) {
    let ups = vec![
        Upstream::start_named("fast-1", Behaviour::name().delayed(FAST)),
        Upstream::start_named("fast-2", Behaviour::name().delayed(FAST)),
        Upstream::start_named("slow", Behaviour::name().delayed(SLOW)),
    ];
    let addrs: Vec<_> = ups.iter().map(Upstream::addr).collect();
    let proxy = ProxyProcess::start(&app_config(&addrs, settings));
    let addr = proxy.listener("main");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr, Proto::Http1).await;
                for i in 0..PER_CLIENT {
                    let reply = client.get(&format!("/c{c}/{i}")).await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(ups.iter().map(Upstream::requests).sum::<usize>(), TOTAL);
    (proxy, ups)
}

fn slow_share(ups: &[Upstream]) -> f64 {
    ups[2].requests() as f64 / TOTAL as f64
}

/// Observed on a 2-core machine, alone or beside the whole suite: the slow endpoint gets 8 to
/// 10% of the 400 requests, where round-robin would give it 33%. A simulation of this closed
/// loop (8 clients, P2C on in-flight counts, 10 and 100 ms plus a millisecond of proxy time)
/// gives 8.5% on average and at most 10% over 200 seeds: P2C compares only two endpoints, and
/// with so few requests in flight the slow one often ties a fast one. Asserted: below 15%, and
/// above zero (slow is not dead: it wins whenever its queue is the shorter one).
#[tokio::test]
async fn least_request_sends_a_slow_endpoint_far_less_than_its_third() {
    let (proxy, ups) = run("load_balancer: { policy: least_request, choice_count: 2 }").await;

    let share = slow_share(&ups);
    let counts: Vec<usize> = ups.iter().map(Upstream::requests).collect();
    eprintln!("least_request: slow share {share:.3} {counts:?}");
    assert!(share < 0.15, "slow endpoint share {share:.3}: {counts:?}");
    assert!(ups[2].requests() > 0, "{counts:?}");
    // The fast ones split the rest about evenly.
    let (a, b) = (counts[0] as f64, counts[1] as f64);
    assert!((a - b).abs() < 0.25 * (a + b), "{counts:?}");
    let clusters = proxy.clusters();
    assert_eq!(clusters.cluster("app")["policy"], "least_request");
    // Without peak-EWMA no latency estimate is kept.
    assert_eq!(
        clusters.endpoint("app", ups[2].addr()).ewma_latency_ms(),
        None
    );
}

/// With peak-EWMA the load is (in flight + 1) × latency, so after its first answer the slow
/// endpoint costs ten times a fast one with the same queue and only wins against a fast one
/// with ten requests queued, more than the 8 clients can make. Observed: 2.0 to 2.5% (8 to 10
/// requests, all placed in its first 100 ms, while every estimate was still the default
/// 30 ms). Asserted: below 5%. `/clusters` shows the estimates (observed: fast about 28 ms,
/// still coming down from the default with the 10 s decay; slow about 100 ms).
#[tokio::test]
async fn peak_ewma_keeps_a_slow_endpoint_almost_out() {
    let (proxy, ups) = run("load_balancer: { policy: least_request, peak_ewma: true }").await;

    let share = slow_share(&ups);
    let counts: Vec<usize> = ups.iter().map(Upstream::requests).collect();
    eprintln!("peak_ewma: slow share {share:.3} {counts:?}");
    assert!(share < 0.05, "slow endpoint share {share:.3}: {counts:?}");
    let clusters = proxy.clusters();
    let ewma = |u: &Upstream| {
        clusters
            .endpoint("app", u.addr())
            .ewma_latency_ms()
            .expect("peak-EWMA keeps an estimate")
    };
    let (fast, slow) = (ewma(&ups[0]).max(ewma(&ups[1])), ewma(&ups[2]));
    eprintln!("peak_ewma: estimates fast {fast:.1} ms, slow {slow:.1} ms");
    // The slow endpoint's one measured peak (>= 100 ms) decays with the 10 s time constant
    // for the second or so the test runs.
    assert!(slow > 50.0, "slow estimate {slow} ms");
    assert!(slow > 2.0 * fast, "fast {fast} ms, slow {slow} ms");
}
