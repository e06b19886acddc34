//! Reloads that add, remove, move or change listeners: sockets are kept when a listener's name
//! and address stay, bound when new or moved, closed when gone.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use remora_tests::client;
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, free_addr, wait_for};

use super::{RELOAD_TIMEOUT, two_clusters, wait_reloads};

#[tokio::test]
async fn listeners_are_added_removed_and_moved() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let base = two_clusters(&a, &b, "a");
    let with = |extra: &str| base.replace("clusters:\n", &format!("{extra}clusters:\n"));
    let listener = |name: &str, addr: &str, cluster: &str| {
        format!(
            "  - name: {name}\n    address: {addr}\n    routes: [{{ name: r, cluster: {cluster} }}]\n"
        )
    };
    let mut proxy = ProxyProcess::start(&with(&listener("old", "127.0.0.1:0", "a")));
    let main = proxy.listener("main");
    let old = proxy.listener("old");
    let mut kept = Client::connect(main, Proto::Http1).await;
    assert_eq!(kept.get("/").await.echo().upstream(), "a");
    assert_eq!(
        client::get(old, Proto::Http1, "/").await.echo().upstream(),
        "a"
    );

    // Add `new` on port 0, remove `old`.
    proxy.write_config(&with(&listener("new", "127.0.0.1:0", "b")));
    wait_reloads(&proxy, 1, 0);
    let addrs = wait_for("the addrs file to list `new`", RELOAD_TIMEOUT, || {
        let addrs = proxy.refresh_addrs().clone();
        addrs
            .listeners
            .iter()
            .any(|(n, _)| n == "new")
            .then_some(addrs)
    });
    assert!(
        !addrs.listeners.iter().any(|(n, _)| n == "old"),
        "{addrs:?}"
    );
    let new = proxy.listener("new");
    assert_ne!(new.port(), 0);
    assert_eq!(proxy.listener("main"), main, "main keeps its socket");
    assert_eq!(
        client::get(new, Proto::H2c, "/").await.echo().upstream(),
        "b"
    );
    assert_eq!(kept.get("/").await.echo().upstream(), "a");
    assert_refused(old);

    // Move `main` to a fixed port: rebound there, refused on the old one.
    let moved = free_addr();
    proxy.write_config(&with(&listener("new", "127.0.0.1:0", "b")).replace(
        "name: main\n    address: 127.0.0.1:0",
        &format!("name: main\n    address: {moved}"),
    ));
    wait_reloads(&proxy, 2, 0);
    wait_for("the addrs file to move `main`", RELOAD_TIMEOUT, || {
        (proxy.refresh_addrs().listeners.iter())
            .any(|(n, a)| n == "main" && *a == moved)
            .then_some(())
    });
    assert_eq!(proxy.listener("new"), new, "`new` did not move");
    assert_eq!(
        client::get(moved, Proto::Http1, "/")
            .await
            .echo()
            .upstream(),
        "a"
    );
    assert_refused(main);
}

#[tokio::test]
async fn a_listener_that_cannot_be_bound_rejects_the_whole_reload() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    // Routes to `b` and adds a listener on a port someone else holds.
    let config = two_clusters(&a, &b, "b").replace(
        "clusters:\n",
        &format!(
            "  - name: busy\n    address: {taken_addr}\n    routes: [{{ name: r, cluster: a }}]\n\
             clusters:\n"
        ),
    );
    remora_config::load_str("busy", &config).expect("valid as a config");
    proxy.write_config(&config);
    let now = wait_reloads(&proxy, 0, 1);
    assert_eq!(now.last_ok, 0.0);
    proxy
        .stderr()
        .wait_for_line(RELOAD_TIMEOUT, |l| l.contains(&taken_addr.to_string()));
    // Nothing of it was applied: the route still goes to `a`.
    let main = proxy.listener("main");
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "a"
    );
    drop(taken);
}

/// Waits until connecting to `addr` is refused: the listener socket is closed.
fn assert_refused(addr: SocketAddr) {
    wait_for(
        &format!("{addr} to refuse connections"),
        RELOAD_TIMEOUT,
        || match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            Err(e) => panic!("connecting to {addr}: {e}"),
            Ok(_) => None,
        },
    );
}

#[tokio::test]
async fn a_keep_alive_connection_survives_its_listener_turning_into_tcp() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let http = two_clusters(&a, &b, "a");
    let proxy = ProxyProcess::start(&http);
    let main = proxy.listener("main");
    let mut clients = Vec::new();
    for proto in Proto::ALL {
        let mut client = Client::connect(main, proto).await;
        assert_eq!(client.get("/").await.echo().upstream(), "a");
        clients.push(client);
    }
    // Same name and address, now opaque TCP to `b`.
    let tcp = http.replace(
        "    routes:\n      - name: all\n        cluster: a\n",
        "    protocol: tcp\n    cluster: b\n",
    );
    assert_ne!(tcp, http);
    proxy.write_config(&tcp);
    wait_reloads(&proxy, 1, 0);

    // New connections are TCP: HTTP passes through to `b` untouched (no proxy headers).
    let reply = client::get(main, Proto::Http1, "/").await;
    assert_eq!(reply.echo().upstream(), "b");
    assert_eq!(reply.echo().header("x-forwarded-for"), None);
    // Connections accepted as HTTP are closed cleanly once idle (the proxy shuts them down
    // gracefully, so a pooling client just reconnects); a request that still gets through is
    // served on the last HTTP config. Nothing may fail with an error response or a reset.
    let mut failed = Vec::new();
    for client in &mut clients {
        match client.send(client::get_request("/")).await {
            Ok(resp) if resp.status() == 200 => {}
            Ok(resp) => failed.push(format!("{:?}: {}", client.proto(), resp.status())),
            // Closed before the request was written: the clean close a client retries.
            Err(e) if e.is_canceled() || e.is_closed() => {}
            Err(e) => failed.push(format!("{:?}: {e}", client.proto())),
        }
    }
    // The worker is still serving.
    let reply = client::get(main, Proto::Http1, "/").await;
    assert_eq!(reply.echo().upstream(), "b");
    assert!(
        failed.is_empty(),
        "the next request on a connection accepted as HTTP failed: {failed:?}"
    );
    assert!(
        !proxy.stderr().text().contains("panicked"),
        "{}",
        proxy.stderr().text()
    );
}

/// Renaming a listener while keeping its fixed address hands the bound socket to the new name
/// (binding a second socket there would fail); metrics and logs use the new name from then on.
#[tokio::test]
async fn a_listener_renamed_on_its_fixed_port_keeps_serving_there() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let fixed = free_addr();
    let config = |name: &str, cluster: &str| {
        two_clusters(&a, &b, "a").replace(
            "clusters:\n",
            &format!(
                "  - name: {name}\n    address: {fixed}\n    routes: [{{ name: r, cluster: {cluster} }}]\n\
                 clusters:\n"
            ),
        )
    };
    let mut proxy = ProxyProcess::start(&config("before", "a"));
    assert_eq!(
        client::get(fixed, Proto::Http1, "/")
            .await
            .echo()
            .upstream(),
        "a"
    );

    proxy.write_config(&config("after", "b"));
    wait_reloads(&proxy, 1, 0);
    wait_for("the addrs file to list `after`", RELOAD_TIMEOUT, || {
        (proxy.refresh_addrs().listeners.iter())
            .any(|(n, a)| n == "after" && *a == fixed)
            .then_some(())
    });
    assert_eq!(
        client::get(fixed, Proto::Http1, "/")
            .await
            .echo()
            .upstream(),
        "b"
    );
    proxy.wait_metric(
        "remora_requests_total",
        &crate::request_labels("after", "r", "b", "2xx"),
        1.0,
    );
}
