//! The access log: one JSON object per request, on stdout by default or in a file, and nothing
//! at all when disabled.

use std::time::Duration;

use http_body_util::BodyExt;
use remora_tests::client::{empty, full, get_request, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, TempDir, Upstream, wait_for};
use serde_json::Value;

use crate::request_labels;

const WAIT: Duration = Duration::from_secs(5);

/// Routes `/ok...` to cluster `app`; `access_log` is the YAML of that section (or empty).
fn config(upstream: &Upstream, access_log: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
{access_log}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: ok
        match: {{ path: {{ prefix: /ok }} }}
        cluster: app
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    )
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test]
async fn each_request_is_one_json_line_on_stdout() {
    let upstream = Upstream::start(Behaviour::Echo);
    // No access_log section: on, to stdout, by default.
    let proxy = ProxyProcess::start(&config(&upstream, ""));
    let addr = proxy.listener("main");

    let mut h1 = Client::connect(addr, Proto::Http1).await;
    let get = h1
        .fetch(
            request("GET", "/ok/a?x=1")
                .header("host", "app.local")
                .header("x-request-id", "id-from-client")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(get.status, 200);
    let mut h2 = Client::connect(addr, Proto::H2c).await;
    let post = h2
        .fetch(request("POST", "/ok/b").body(full(vec![7u8; 100])).unwrap())
        .await;
    let generated_id = post.echo().header("x-request-id").unwrap().to_owned();
    let unrouted = h1.get("/nope").await;
    assert_eq!(unrouted.status, 404);

    let lines = proxy.stdout().wait_for_lines(3, WAIT);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let [get_line, post_line, nope_line] = [0, 1, 2].map(|i| parse(&lines[i]));

    let time = get_line["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert_eq!(get_line["listener"], "main");
    assert_eq!(get_line["client"], h1.local_addr().to_string());
    assert_eq!(get_line["method"], "GET");
    assert_eq!(get_line["authority"], "app.local");
    assert_eq!(get_line["path"], "/ok/a?x=1");
    assert_eq!(get_line["protocol"], "HTTP/1.1");
    assert_eq!(get_line["status"], 200);
    assert!(get_line["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(get_line["route"], "ok");
    assert_eq!(get_line["cluster"], "app");
    assert_eq!(get_line["upstream"], upstream.addr().to_string());
    assert_eq!(get_line["bytes_received"], 0);
    assert_eq!(get_line["bytes_sent"], get.body.len());
    assert_eq!(get_line["complete"], true);
    assert_eq!(get_line["request_id"], "id-from-client");
    assert_eq!(get_line["error"], Value::Null);

    assert_eq!(post_line["client"], h2.local_addr().to_string());
    assert_eq!(post_line["method"], "POST");
    assert_eq!(post_line["protocol"], "HTTP/2.0");
    assert_eq!(post_line["authority"], addr.to_string());
    assert_eq!(post_line["bytes_received"], 100);
    assert_eq!(post_line["bytes_sent"], post.body.len());
    assert_eq!(post_line["request_id"], generated_id.as_str());

    assert_eq!(nope_line["status"], 404);
    assert_eq!(nope_line["route"], Value::Null);
    assert_eq!(nope_line["cluster"], Value::Null);
    assert_eq!(nope_line["upstream"], Value::Null);
    assert_eq!(nope_line["error"], "no-route");
    assert_eq!(nope_line["bytes_sent"], unrouted.body.len());

    // Every line has exactly the documented fields.
    let fields = [
        "time",
        "listener",
        "client",
        "method",
        "authority",
        "path",
        "protocol",
        "status",
        "duration_ms",
        "route",
        "cluster",
        "upstream",
        "attempts",
        "fault",
        "bytes_received",
        "bytes_sent",
        "complete",
        "request_id",
        "error",
    ];
    for line in [&get_line, &post_line, &nope_line] {
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut want = fields.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}

#[tokio::test]
async fn a_file_target_gets_the_lines_and_stdout_none() {
    let upstream = Upstream::start(Behaviour::Echo);
    let dir = TempDir::new("access-log");
    let path = dir.file("access.log");
    let proxy = ProxyProcess::start(&config(
        &upstream,
        &format!("access_log: {{ enabled: true, path: \"{path}\" }}"),
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for i in 0..4 {
        assert_eq!(client.get(&format!("/ok/{i}")).await.status, 200);
    }
    let lines = wait_for("4 lines in the access log file", WAIT, || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= 4).then_some(lines)
    });
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(parse(line)["path"], format!("/ok/{i}"));
    }
    assert!(
        proxy.stdout().lines().is_empty(),
        "{:?}",
        proxy.stdout().lines()
    );
}

#[tokio::test]
async fn a_disabled_access_log_writes_nothing() {
    let upstream = Upstream::start(Behaviour::Echo);
    let mut proxy = ProxyProcess::start(&config(&upstream, "access_log: { enabled: false }"));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    for _ in 0..3 {
        assert_eq!(client.get("/ok").await.status, 200);
    }
    assert_eq!(client.get("/nope").await.status, 404);
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "ok", "app", "2xx"),
        3.0,
    );
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "", "", "4xx"),
        1.0,
    );
    // Once the proxy has exited, everything it would ever write has been captured.
    drop(client);
    let status = proxy.terminate();
    assert!(status.success(), "{status}");
    assert!(
        proxy.stdout().lines().is_empty(),
        "{:?}",
        proxy.stdout().lines()
    );
}

#[tokio::test]
async fn a_response_cut_short_is_logged_incomplete() {
    // The client walks away after the first frame of a 50 MiB body.
    let upstream = Upstream::start(Behaviour::Stream(50 << 20));
    let proxy = ProxyProcess::start(&config(&upstream, ""));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let mut resp = client.send(get_request("/ok/big")).await.unwrap();
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(resp);
    drop(client);

    let line = parse(&proxy.stdout().wait_for_lines(1, WAIT)[0]);
    assert_eq!(line["status"], 200);
    assert_eq!(line["complete"], false);
    let sent = line["bytes_sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 50 << 20, "{sent}");
    // The rest of that response was still on the upstream connection: it is closed, not pooled.
    proxy.wait_metric(
        "remora_upstream_connections_open",
        &[("cluster", "app")],
        0.0,
    );
    proxy.wait_metric(
        "remora_requests_total",
        &request_labels("main", "ok", "app", "2xx"),
        1.0,
    );
}

#[tokio::test]
async fn an_upstream_dying_mid_body_is_logged_incomplete() {
    let upstream =
        remora_tests::RawServer::http_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes: [{{ name: ok, cluster: app }}]
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ));
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    // The client sees the exchange fail, never a short body passed off as complete. The
    // upstream's head, 5 bytes and its close can arrive in one read, in which case the proxy
    // fails the response before its head was flushed; otherwise the body fails midway.
    if let Ok(resp) = client.send(get_request("/")).await {
        assert_eq!(resp.status(), 200);
        assert!(resp.into_body().collect().await.is_err());
    }

    let line = parse(&proxy.stdout().wait_for_lines(1, WAIT)[0]);
    assert_eq!(line["complete"], false);
    assert_eq!(line["status"], 200);
    assert!(line["bytes_sent"].as_u64().unwrap() <= 5, "{line}");
}
