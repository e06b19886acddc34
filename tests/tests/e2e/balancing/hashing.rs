//! Consistent hashing (`ring_hash`, `maglev`) on a header: a key always lands on the same
//! endpoint, and when the endpoints change only the keys that must move do. 10,000 keys go
//! through the proxy per phase, over h2c connections with many streams each.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use remora_tests::client::{self, Reply};
use remora_tests::{Client, Proto, ProxyProcess, Upstream};

use super::{app_config, named_upstreams};
use crate::reload::wait_reloads;

const KEYS: usize = 10_000;

/// A cluster hashing on `x-key` with `policy`, spoken to over h2c (one upstream connection per
/// endpoint carries every stream).
fn config(policy: &str, endpoints: &[&Upstream]) -> String {
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|u| u.addr()).collect();
    app_config(
        &addrs,
        &format!(
            "
            protocol: http2
            load_balancer: {{ policy: {policy}, hash_on: [{{ header: x-key }}] }}
            "
        ),
    )
}

fn keyed(key: &str) -> http::Request<client::ReqBody> {
    client::request("GET", "/")
        .header("x-key", key)
        .body(client::empty())
        .unwrap()
}

fn served_by(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.text()
}

/// Which upstream each of the `KEYS` keys lands on, in key order.
async fn placement(proxy: &ProxyProcess) -> Vec<String> {
    let requests = (0..KEYS).map(|k| keyed(&format!("key-{k}"))).collect();
    client::fetch_all(proxy.listener("main"), 4, 32, requests)
        .await
        .iter()
        .map(served_by)
        .collect()
}

fn tally<'a>(owners: impl IntoIterator<Item = &'a String>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for o in owners {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    counts
}

/// The same key from different connections, over both protocols, in any order: always the
/// same endpoint; different keys spread over all of them.
async fn same_key_same_endpoint(policy: &str) {
    let ups = named_upstreams(&["e0", "e1", "e2"]);
    let proxy = ProxyProcess::start(&config(policy, &[&ups[0], &ups[1], &ups[2]]));
    let addr = proxy.listener("main");
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..6 {
        let proto = Proto::ALL[round % 2];
        let mut client = Client::connect(addr, proto).await;
        // Every round visits the keys in another order.
        for k in (0..60).map(|i| (i * 7 + round * 13) % 60) {
            let key = format!("user-{k}");
            let by = served_by(&client.fetch(keyed(&key)).await);
            let want = first.entry(key.clone()).or_insert_with(|| by.clone());
            assert_eq!(&by, want, "{policy}: {key} in round {round} via {proto:?}");
        }
    }
    let spread = tally(first.values());
    assert_eq!(spread.len(), 3, "{policy}: 60 keys on {spread:?}");
}

#[tokio::test]
async fn ring_hash_sends_a_key_to_one_endpoint() {
    same_key_same_endpoint("ring_hash").await;
}

#[tokio::test]
async fn maglev_sends_a_key_to_one_endpoint() {
    same_key_same_endpoint("maglev").await;
}

/// What a change of endpoints did to the keys.
#[derive(Debug)]
struct Moves {
    /// Keys that changed endpoint.
    moved: usize,
    /// Of those, keys that went to the endpoint added or came from the one removed.
    expected: usize,
    /// Keys that moved although neither their old nor their new endpoint changed.
    collateral: usize,
}

/// Compares placements before and after `changed` (the endpoint removed or added) changed.
fn moves(before: &[String], after: &[String], changed: &str) -> Moves {
    let mut m = Moves {
        moved: 0,
        expected: 0,
        collateral: 0,
    };
    for (b, a) in before.iter().zip(after) {
        if a != b {
            m.moved += 1;
            if a == changed || b == changed {
                m.expected += 1;
            } else {
                m.collateral += 1;
            }
        }
    }
    m
}

/// Four endpoints; remove one with a reload: exactly its keys move, spread over the other
/// three, and (maglev only) at most `max_collateral` others. Then add a new endpoint, listed
/// in another order: about 1/4 of the keys move, all to it. `points` is the ring's points per
/// endpoint (ring_hash), which sets how unevenly the newcomer's share falls; 0 for maglev.
async fn minimal_disruption(policy: &str, max_collateral: usize, points: f64) {
    let ups = named_upstreams(&["u0", "u1", "u2", "u3", "u4"]);
    let proxy = ProxyProcess::start(&config(policy, &[&ups[0], &ups[1], &ups[2], &ups[3]]));

    let a = placement(&proxy).await;
    let shares = tally(&a);
    eprintln!("{policy}: 4 endpoints: {shares:?}");
    assert_eq!(
        shares.keys().copied().collect::<Vec<_>>(),
        ["u0", "u1", "u2", "u3"]
    );
    assert!(
        shares.values().all(|&n| n > KEYS / 8),
        "{policy}: {shares:?}"
    );

    // Remove u3.
    proxy.write_config(&config(policy, &[&ups[0], &ups[1], &ups[2]]));
    wait_reloads(&proxy, 1, 0);
    let b = placement(&proxy).await;
    let removal = moves(&a, &b, "u3");
    let owned = shares["u3"];
    let heirs = tally(a.iter().zip(&b).filter(|(x, _)| *x == "u3").map(|(_, y)| y));
    eprintln!("{policy}: removing u3 (owned {owned}): {removal:?}, its keys went to {heirs:?}");
    assert_eq!(removal.expected, owned, "{policy}: every key of u3 moves");
    assert!(
        removal.collateral <= max_collateral,
        "{policy}: {removal:?}, at most {max_collateral} others may move"
    );
    assert_eq!(heirs.len(), 3, "{policy}: u3's keys spread: {heirs:?}");
    assert!(!b.iter().any(|o| o == "u3"));

    // Add u4, listed first: placement is by address, not position.
    proxy.write_config(&config(policy, &[&ups[4], &ups[2], &ups[0], &ups[1]]));
    wait_reloads(&proxy, 2, 0);
    let c = placement(&proxy).await;
    let addition = moves(&b, &c, "u4");
    // The newcomer takes p = 1/4 of the keys: binomial spread, plus (ring) the spread of its
    // share of the ring, 1/sqrt(points) relative; 4.5 standard deviations either way.
    let p = 0.25;
    let want = KEYS as f64 * p;
    let ring_spread = if points > 0.0 { 1.0 / points } else { 0.0 };
    let sd = want * (ring_spread + (1.0 - p) / want).sqrt();
    let tolerance = 4.5 * sd;
    eprintln!("{policy}: adding u4: {addition:?}, want {want} ± {tolerance:.0}");
    assert!(
        (addition.expected as f64 - want).abs() <= tolerance,
        "{policy}: {addition:?}, want {want} ± {tolerance:.0} to u4"
    );
    assert!(
        addition.collateral <= max_collateral,
        "{policy}: {addition:?}, at most {max_collateral} may move elsewhere"
    );
    assert_eq!(
        ups[3].requests(),
        shares["u3"],
        "u3 got nothing after its removal"
    );
}

/// Observed over six runs: removal moves exactly u3's keys (2,373 to 2,604) and no other; the
/// addition moves 2,408 to 2,628 keys, every one to u4.
#[tokio::test]
async fn ring_hash_moves_only_the_keys_it_must() {
    minimal_disruption("ring_hash", 0, 1024.0).await;
}

/// Maglev rebuilds its table, so a few keys of the endpoints that stay move too: at most 1%
/// (100 keys) is asserted. Observed over six runs: 0 to 12 such keys on removal, 2 to 9 on
/// addition; the addition moves 2,445 to 2,538 keys to u4.
#[tokio::test]
async fn maglev_moves_the_keys_it_must_and_few_others() {
    minimal_disruption("maglev", KEYS / 100, 0.0).await;
}
