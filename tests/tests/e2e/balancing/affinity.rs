//! Keeping a client on one endpoint with the other hash keys: a cookie the proxy mints, the
//! client's IP address, a query parameter.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use remora_tests::client::{self, Reply};
use remora_tests::{Client, Proto, ProxyProcess, Upstream};

use super::{app_config, named_upstreams};

fn addrs(ups: &[Upstream]) -> Vec<std::net::SocketAddr> {
    ups.iter().map(Upstream::addr).collect()
}

fn served_by(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.text()
}

/// The value of a `Set-Cookie: sticky=VALUE; Path=/app; Max-Age=5400; HttpOnly` header, checking
/// every attribute. Panics if the reply has no such header, or more than one.
fn minted(reply: &Reply) -> String {
    let all: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
    assert_eq!(all.len(), 1, "one Set-Cookie: {:?}", reply.headers);
    let set = all[0].to_str().unwrap();
    let mut parts = set.split("; ");
    let value = parts
        .next()
        .and_then(|p| p.strip_prefix("sticky="))
        .unwrap_or_else(|| panic!("not the sticky cookie: {set}"));
    assert_eq!(
        parts.collect::<Vec<_>>(),
        ["Path=/app", "Max-Age=5400", "HttpOnly"],
        "{set}"
    );
    // 128 random bits as lowercase hex.
    assert!(
        value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{set}"
    );
    value.to_owned()
}

fn with_cookie(cookie: &str) -> http::Request<client::ReqBody> {
    client::request("GET", "/app/cart")
        .header("cookie", cookie)
        .body(client::empty())
        .unwrap()
}

/// `hash_on: cookie` with a `ttl`: a client without the cookie gets one minted on its first
/// response (name, Path and Max-Age as configured), and is placed as if it had sent it; sent
/// back, it keeps the client on that endpoint and nothing more is minted.
#[tokio::test]
async fn a_minted_cookie_sticks_the_client_to_one_endpoint() {
    let ups = named_upstreams(&["c0", "c1", "c2"]);
    let proxy = ProxyProcess::start(&app_config(
        &addrs(&ups),
        "
        load_balancer:
          policy: ring_hash
          hash_on: [{ cookie: { name: sticky, ttl: 90m, path: /app } }]
        ",
    ));
    let addr = proxy.listener("main");

    let first = client::get(addr, Proto::Http1, "/app/cart").await;
    let value = minted(&first);
    let home = served_by(&first);

    for i in 0..20 {
        let proto = Proto::ALL[i % 2];
        // Alone, or among other cookies, in one line or (HTTP/2 style) several.
        let reply = match i % 3 {
            0 => client::fetch(addr, proto, with_cookie(&format!("sticky={value}"))).await,
            1 => {
                let line = format!("theme=dark; sticky={value}; lang=en");
                client::fetch(addr, proto, with_cookie(&line)).await
            }
            _ => {
                let req = client::request("GET", "/app/other")
                    .header("cookie", "theme=dark")
                    .header("cookie", format!("sticky={value}"))
                    .body(client::empty())
                    .unwrap();
                client::fetch(addr, proto, req).await
            }
        };
        assert_eq!(served_by(&reply), home, "request {i} via {proto:?}");
        assert_eq!(
            reply.header("set-cookie"),
            None,
            "request {i}: nothing to mint"
        );
    }

    // New clients each get a cookie of their own, and between them every endpoint.
    let mut values = BTreeSet::from([value]);
    let mut homes = BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let reply = client::get(addr, Proto::H2c, "/app/cart").await;
        assert!(values.insert(minted(&reply)), "a value minted twice");
        *homes.entry(served_by(&reply)).or_default() += 1;
    }
    assert_eq!(homes.len(), 3, "60 new clients went to {homes:?}");
}

/// `hash_on: source_ip`: the connection's peer address, whatever its port and whatever
/// `X-Forwarded-For` claims. Clients at 40 loopback addresses spread over every endpoint, each
/// staying on its own.
#[tokio::test]
async fn source_ip_keeps_each_client_address_on_one_endpoint() {
    let ups = named_upstreams(&["s0", "s1", "s2"]);
    let proxy = ProxyProcess::start(&app_config(
        &addrs(&ups),
        "load_balancer: { policy: ring_hash, hash_on: [{ source_ip: true }] }",
    ));
    let addr = proxy.listener("main");

    let mut homes = BTreeMap::<IpAddr, String>::new();
    for host in 1..=40u8 {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        for (i, proto) in [Proto::Http1, Proto::H2c, Proto::Http1]
            .into_iter()
            .enumerate()
        {
            // A new connection each time: another source port.
            let mut client = Client::connect_from(addr, ip, proto).await;
            let req = client::request("GET", "/")
                .header("x-forwarded-for", format!("10.9.8.{i}"))
                .body(client::empty())
                .unwrap();
            let by = served_by(&client.fetch(req).await);
            let home = homes.entry(ip).or_insert_with(|| by.clone());
            assert_eq!(&by, home, "{ip} connection {i}");
        }
    }
    let spread: BTreeSet<&String> = homes.values().collect();
    assert_eq!(spread.len(), 3, "40 addresses on {spread:?}");
}

/// `hash_on: query_parameter`: the value of one parameter, wherever it is in the query and
/// whatever the path; a request without it goes to a random endpoint.
#[tokio::test]
async fn a_query_parameter_keeps_its_value_on_one_endpoint() {
    let ups = named_upstreams(&["q0", "q1", "q2"]);
    let proxy = ProxyProcess::start(&app_config(
        &addrs(&ups),
        "load_balancer: { policy: maglev, hash_on: [{ query_parameter: user }] }",
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;

    let mut homes = BTreeMap::<String, String>::new();
    for u in 0..60 {
        let user = format!("user{u}");
        for target in [
            format!("/a?user={user}"),
            format!("/b/c?x=1&user={user}"),
            format!("/?user={user}&user=someone-else&y"),
        ] {
            let by = served_by(&client.get(&target).await);
            let home = homes.entry(user.clone()).or_insert_with(|| by.clone());
            assert_eq!(&by, home, "{target}");
        }
    }
    let spread: BTreeSet<&String> = homes.values().collect();
    assert_eq!(spread.len(), 3, "60 users on {spread:?}");

    // Without the parameter (or with another one of a similar name): random. Each of 60 such
    // requests has a 1/3 chance per endpoint, so all landing on one is a 3^-59 event.
    let mut unkeyed = BTreeSet::new();
    for i in 0..60 {
        unkeyed.insert(served_by(
            &client.get(&format!("/a?username=u&i={i}")).await,
        ));
    }
    assert_eq!(unkeyed.len(), 3, "unkeyed requests went to {unkeyed:?}");
}
