//! Graceful drain: on SIGTERM (or `POST /drain`, `POST /shutdown`) the proxy stops accepting,
//! turns `/ready` to 503, lets requests in flight finish (HTTP/1.1 with `connection: close`,
//! HTTP/2 after GOAWAY), and exits 0 once every connection is closed, when
//! `runtime.drain_timeout` runs out, or at a second SIGTERM.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remora_tests::body::PatternCheck;
use remora_tests::client::{self, background, get_request};
use remora_tests::raw;
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, eventually};

/// How long the upstream takes before it answers the requests in flight.
const SLOW: Duration = Duration::from_secs(1);

/// Each in-flight response body.
const BODY: u64 = 256 * 1024;

/// Generous bound on anything that should take milliseconds, for a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(2);

fn config(upstream: &Upstream, drain_timeout: Option<&str>) -> String {
    let runtime = drain_timeout.map_or(String::new(), |t| {
        format!("runtime: {{ drain_timeout: {t} }}\n")
    });
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
{runtime}listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: all, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    )
}

/// What one request in flight during the drain ended with.
struct Finished {
    proto: Proto,
    result: Result<(http::StatusCode, Option<String>, PatternCheck), String>,
    /// The connection, to see whether the proxy closed it.
    client: Client,
    at: Instant,
}

/// Sends `GET /slow` on `client` on the client runtime; the upstream answers after [`SLOW`].
fn send_slow(mut client: Client) -> tokio::task::JoinHandle<Finished> {
    background().spawn(async move {
        let result = async {
            let resp = client
                .send(get_request("/slow"))
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let connection = resp
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let check = client::drain(resp.into_body())
                .await
                .map_err(|e| e.to_string())?;
            Ok((status, connection, check))
        }
        .await;
        Finished {
            proto: client.proto(),
            result,
            client,
            at: Instant::now(),
        }
    })
}

/// Two HTTP/1.1 connections and one h2c connection with three streams, each with a slow request
/// the upstream has received.
async fn requests_in_flight(
    main: SocketAddr,
    upstream: &Upstream,
) -> Vec<tokio::task::JoinHandle<Finished>> {
    let mut in_flight = Vec::new();
    for _ in 0..2 {
        in_flight.push(send_slow(Client::connect(main, Proto::Http1).await));
    }
    let h2 = Client::connect(main, Proto::H2c).await;
    for _ in 0..3 {
        in_flight.push(send_slow(h2.try_clone().unwrap()));
    }
    drop(h2);
    eventually("5 requests at the upstream", PROMPTLY, || {
        (upstream.requests() == 5).then_some(())
    })
    .await;
    in_flight
}

fn post(admin: SocketAddr, path: &str) -> raw::RawResponse {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    raw::exchange(admin, req.as_bytes()).unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// Starts a drain the way `how` says: `TERM` (the signal), or an admin path to POST.
fn trigger(proxy: &ProxyProcess, how: &str) {
    match how {
        "TERM" => proxy.signal("TERM"),
        path => {
            let resp = post(proxy.admin(), path);
            assert_eq!(resp.status, 202, "POST {path}: {}", resp.text());
        }
    }
}

async fn in_flight_requests_complete_then_the_proxy_exits(how: &str) {
    let upstream = Upstream::start(Behaviour::Stream(BODY).delayed(SLOW));
    let mut proxy = ProxyProcess::start(&config(&upstream, None));
    let main = proxy.listener("main");
    let in_flight = requests_in_flight(main, &upstream).await;

    trigger(&proxy, how);
    // Not ready at once: before any request in flight has been answered.
    eventually("/ready to answer 503", PROMPTLY, || {
        (proxy.admin_get("/ready").status == 503).then_some(())
    })
    .await;
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "a request finished before /ready turned 503"
    );
    assert_eq!(proxy.exit_status(), None, "exited with requests in flight");

    let mut last = None;
    for task in in_flight {
        let done = task.await.unwrap();
        let (status, connection, body) = done
            .result
            .unwrap_or_else(|e| panic!("{:?}: the request in flight failed: {e}", done.proto));
        assert_eq!(status, 200, "{:?}", done.proto);
        assert_eq!(body.len(), BODY, "{:?}: a short body", done.proto);
        assert!(body.ok(), "{:?}: a corrupted body", done.proto);
        if done.proto == Proto::Http1 {
            assert_eq!(
                connection.as_deref(),
                Some("close"),
                "HTTP/1.1 says goodbye"
            );
        }
        // The proxy closes every connection once its requests are done.
        eventually("the proxy to close the connection", PROMPTLY, || {
            (!done.client.is_open()).then_some(())
        })
        .await;
        last = last.max(Some(done.at));
    }
    let status = proxy.wait_exit(Duration::from_secs(10));
    let after_last = last.unwrap().elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        after_last < PROMPTLY,
        "exited {after_last:?} after the last response"
    );
}

#[tokio::test]
async fn sigterm_lets_requests_in_flight_finish_then_exits_0() {
    in_flight_requests_complete_then_the_proxy_exits("TERM").await;
}

#[tokio::test]
async fn post_drain_lets_requests_in_flight_finish_then_exits_0() {
    in_flight_requests_complete_then_the_proxy_exits("/drain").await;
}

#[tokio::test]
async fn post_shutdown_lets_requests_in_flight_finish_then_exits_0() {
    in_flight_requests_complete_then_the_proxy_exits("/shutdown").await;
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_the_drain() {
    let upstream = Upstream::start(Behaviour::Echo);
    let mut proxy = ProxyProcess::start(&config(&upstream, None));
    let main = proxy.listener("main");
    let mut clients = Vec::new();
    for proto in Proto::ALL {
        let mut client = Client::connect(main, proto).await;
        client.get("/").await.echo();
        clients.push(client);
    }
    let start = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < PROMPTLY, "took {:?}", start.elapsed());
    for client in &clients {
        assert!(!client.is_open(), "{:?} still open", client.proto());
    }
}

#[tokio::test]
async fn a_new_connection_during_the_drain_is_refused() {
    let upstream = Upstream::start(Behaviour::Stream(BODY).delayed(Duration::from_secs(3)));
    let mut proxy = ProxyProcess::start(&config(&upstream, None));
    let main = proxy.listener("main");
    let in_flight = send_slow(Client::connect(main, Proto::Http1).await);
    eventually("the request at the upstream", PROMPTLY, || {
        (upstream.requests() == 1).then_some(())
    })
    .await;

    proxy.signal("TERM");
    eventually("/ready to answer 503", PROMPTLY, || {
        (proxy.admin_get("/ready").status == 503).then_some(())
    })
    .await;
    let refused = eventually("new connections to be refused", PROMPTLY, || {
        match std::net::TcpStream::connect_timeout(&main, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(true),
            Err(e) => panic!("connect {main}: {e}"),
            Ok(_) => None,
        }
    })
    .await;
    assert!(refused);
    assert_eq!(proxy.exit_status(), None, "still draining");

    let done = in_flight.await.unwrap();
    assert!(done.result.is_ok(), "{:?}", done.result.err());
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test]
async fn the_drain_timeout_ends_a_drain_that_takes_too_long() {
    let upstream = Upstream::start(Behaviour::Stream(BODY).delayed(Duration::from_secs(5)));
    let mut proxy = ProxyProcess::start(&config(&upstream, Some("300ms")));
    let main = proxy.listener("main");
    let in_flight = send_slow(Client::connect(main, Proto::Http1).await);
    eventually("the request at the upstream", PROMPTLY, || {
        (upstream.requests() == 1).then_some(())
    })
    .await;

    let start = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let took = start.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "exited {took:?} after SIGTERM, drain_timeout is 300ms"
    );
    // The request could not finish: the proxy is gone.
    let done = in_flight.await.unwrap();
    assert!(done.result.is_err(), "the 5 s request succeeded");
    assert!(
        done.at.duration_since(start) < Duration::from_secs(3),
        "the client learnt of it only after {:?}",
        done.at.duration_since(start)
    );
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    let upstream = Upstream::start(Behaviour::Stream(BODY).delayed(Duration::from_secs(5)));
    let mut proxy = ProxyProcess::start(&config(&upstream, None));
    let main = proxy.listener("main");
    let in_flight = send_slow(Client::connect(main, Proto::H2c).await);
    eventually("the request at the upstream", PROMPTLY, || {
        (upstream.requests() == 1).then_some(())
    })
    .await;

    proxy.signal("TERM");
    eventually("/ready to answer 503", PROMPTLY, || {
        (proxy.admin_get("/ready").status == 503).then_some(())
    })
    .await;
    assert_eq!(proxy.exit_status(), None, "draining for up to 30 s");
    let start = Instant::now();
    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10));
    let took = start.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after the second SIGTERM"
    );
    assert!(in_flight.await.unwrap().result.is_err());
}

#[tokio::test]
async fn a_reloaded_drain_timeout_applies_to_the_next_drain() {
    let upstream = Upstream::start(Behaviour::Stream(BODY).delayed(Duration::from_secs(5)));
    let mut proxy = ProxyProcess::start(&config(&upstream, None));
    proxy.write_config(&config(&upstream, Some("300ms")));
    crate::reload::wait_reloads(&proxy, 1, 0);
    let in_flight = send_slow(Client::connect(proxy.listener("main"), Proto::Http1).await);
    eventually("the request at the upstream", PROMPTLY, || {
        (upstream.requests() == 1).then_some(())
    })
    .await;

    let start = Instant::now();
    proxy.signal("TERM");
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "exited {took:?} after SIGTERM; the reloaded drain_timeout is 300ms, the default 30s"
    );
    assert!(in_flight.await.unwrap().result.is_err());
}
