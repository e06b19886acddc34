//! DNS service discovery against a real DNS server (dnsmasq on 127.0.0.1, 1 s TTLs): endpoints
//! from A and SRV records, record changes followed under load without a failed request, and
//! the last good answer kept when DNS goes away.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use remora_tests::dns::{Dnsmasq, Srv};
use remora_tests::load::{self, Exchange, Load};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, eventually};

/// A few 1 s TTLs, plus a slow machine's scheduling.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(15);

fn ip(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

/// Upstreams on 127.0.0.`last` for each of `lasts`, all on one port (as pods behind a headless
/// Service), each named by its IP's last byte.
fn pods(lasts: &[u8], behaviour: fn() -> Behaviour) -> Vec<Upstream> {
    let mut pods: Vec<Upstream> = Vec::new();
    for &last in lasts {
        let port = pods.first().map_or(0, |p| p.addr().port());
        let addr = SocketAddr::new(ip(last), port);
        pods.push(Upstream::start_at(addr, &last.to_string(), behaviour()));
    }
    pods
}

/// A proxy whose listener `main` sends everything to the dns cluster `app`, which resolves
/// `dns` (the inside of the `dns:` mapping) at `server` at least every 2 s.
fn dns_proxy(server: &Dnsmasq, dns: &str) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    type: dns
    dns: {{ {dns}, min_ttl: 1s, max_ttl: 2s, servers: ["{}"] }}
"#,
        server.addr()
    ))
}

/// Which upstream answered each of `n` requests, by echo name.
async fn answered_by(client: &mut Client, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client.get("/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        names.push(reply.echo().upstream().to_owned());
    }
    names
}

/// Round-robin over the pods at .2 and .3: ten requests, five each.
async fn assert_both_serve(client: &mut Client) {
    let names = answered_by(client, 10).await;
    assert_eq!(
        (count(&names, "2"), count(&names, "3")),
        (5, 5),
        "{names:?}"
    );
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

const APP: [(&str, &str); 1] = [("cluster", "app")];
const SUCCESSES: [(&str, &str); 2] = [("cluster", "app"), ("result", "success")];
const FAILURES: [(&str, &str); 2] = [("cluster", "app"), ("result", "failure")];

#[tokio::test]
async fn a_records_give_the_endpoints() {
    let pods = pods(&[2, 3], || Behaviour::Echo);
    let dns = Dnsmasq::start(&[("api.test", ip(2)), ("api.test", ip(3))], &[]);
    let port = pods[0].addr().port();
    let proxy = dns_proxy(&dns, &format!("name: api.test, port: {port}"));
    // Ready means resolved: the very first requests see both endpoints.
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    assert_both_serve(&mut client).await;
    assert_eq!(proxy.metric("remora_dns_endpoints", &APP), Some(2.0));
    assert!(proxy.metric("remora_dns_resolutions_total", &SUCCESSES) >= Some(1.0));
    let page = proxy.clusters();
    let app = page.cluster("app");
    assert_eq!(app["dns"]["name"], "api.test", "{app:#}");
    assert_eq!(app["dns"]["record"], "a", "{app:#}");
    assert_eq!(app["dns"]["endpoints"], 2, "{app:#}");
    let addrs: Vec<SocketAddr> = pods.iter().map(Upstream::addr).collect();
    for addr in addrs {
        page.endpoint("app", addr);
    }
}

/// Under continuous traffic, 127.0.0.2 leaves the answer and 127.0.0.4 joins it: within a few
/// TTLs new requests go only to .3 and .4, and not one request fails on the way.
#[tokio::test]
async fn record_changes_are_followed_under_load_without_failures() {
    let pods = pods(&[2, 3, 4], load::upstream_behaviour);
    let dns = Dnsmasq::start(&[("api.test", ip(2)), ("api.test", ip(3))], &[]);
    let port = pods[0].addr().port();
    let proxy = dns_proxy(&dns, &format!("name: api.test, port: {port}"));
    let addr = proxy.listener("main");
    let mut load = Load::new(Duration::from_millis(5));
    load.http1(addr, 2, Exchange::Get).await;
    load.h2c(addr, 2, Exchange::Post(4096)).await;
    eventually("traffic to .2 and .3", FOLLOW_TIMEOUT, || {
        (pods[0].requests() > 10 && pods[1].requests() > 10).then_some(())
    })
    .await;
    assert_eq!(pods[2].requests(), 0, ".4 is not in DNS yet");

    dns.set_hosts(&[("api.test", ip(3)), ("api.test", ip(4))]);
    eventually("traffic to .4", FOLLOW_TIMEOUT, || {
        (pods[2].requests() > 10).then_some(())
    })
    .await;
    // The swap is atomic: once .4 gets requests, .2 gets no new ones (those in flight at the
    // swap have finished well within this pause).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (old, kept, new) = (pods[0].requests(), pods[1].requests(), pods[2].requests());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        pods[0].requests(),
        old,
        ".2 left DNS but still gets requests"
    );
    assert!(pods[1].requests() > kept && pods[2].requests() > new);

    let report = load.stop(Duration::from_secs(30)).await;
    assert_eq!(
        report.failed(),
        0,
        "requests failed during the change:\n{report}"
    );
    assert!(report.completed() > 100, "{report}");
    assert_eq!(proxy.metric("remora_dns_endpoints", &APP), Some(2.0));
    assert_eq!(proxy.clusters().endpoints("app").len(), 2);
}

/// dnsmasq dies: resolutions fail and are counted, and traffic keeps going to the endpoints of
/// the last good answer.
#[tokio::test]
async fn a_dns_outage_keeps_the_last_good_answer() {
    let pods = pods(&[2, 3], || Behaviour::Echo);
    let mut dns = Dnsmasq::start(&[("api.test", ip(2)), ("api.test", ip(3))], &[]);
    let port = pods[0].addr().port();
    let proxy = dns_proxy(&dns, &format!("name: api.test, port: {port}"));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    answered_by(&mut client, 2).await;

    dns.kill();
    eventually("a failed resolution", FOLLOW_TIMEOUT, || {
        let failures = proxy.metric("remora_dns_resolutions_total", &FAILURES)?;
        (failures >= 1.0).then_some(())
    })
    .await;
    assert_both_serve(&mut client).await;
    assert_eq!(proxy.metric("remora_dns_endpoints", &APP), Some(2.0));
    let page = proxy.clusters();
    let state = &page.cluster("app")["dns"];
    assert!(state["failures_in_a_row"].as_u64() >= Some(1), "{state:#}");
    assert!(state["last_error"].is_string(), "{state:#}");
    assert_eq!(page.endpoints("app").len(), 2);
}

/// SRV records give each endpoint its port and weight; only the lowest priority is used.
#[tokio::test]
async fn srv_records_give_ports_and_weights() {
    let heavy = Upstream::start_named("heavy", Behaviour::Echo);
    let light = Upstream::start_named("light", Behaviour::Echo);
    let fallback = Upstream::start_named("fallback", Behaviour::Echo);
    let srv = |target: &str, up: &Upstream, priority, weight| Srv {
        name: "_http._tcp.api.test".into(),
        target: target.into(),
        port: up.addr().port(),
        priority,
        weight,
    };
    let dns = Dnsmasq::start(
        &[
            ("heavy.api.test", ip(1)),
            ("light.api.test", ip(1)),
            ("fallback.api.test", ip(1)),
        ],
        &[
            srv("heavy.api.test", &heavy, 10, 30),
            srv("light.api.test", &light, 10, 10),
            srv("fallback.api.test", &fallback, 20, 100),
        ],
    );
    let proxy = dns_proxy(&dns, "name: _http._tcp.api.test, record: srv");
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    // Smooth weighted round-robin: exactly 3:1 over a multiple of 4.
    let names = answered_by(&mut client, 40).await;
    assert_eq!(
        (
            count(&names, "heavy"),
            count(&names, "light"),
            count(&names, "fallback")
        ),
        (30, 10, 0),
        "{names:?}\n{}",
        dns.log()
    );
    let page = proxy.clusters();
    assert_eq!(page.endpoint("app", heavy.addr()).0["weight"], 30);
    assert_eq!(page.endpoint("app", light.addr()).0["weight"], 10);
    assert_eq!(page.cluster("app")["dns"]["record"], "srv");
}
