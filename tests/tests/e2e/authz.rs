//! Authorization policies on a standalone proxy (no mTLS, so every caller is unauthenticated):
//! a deny on `/admin` holds however the path is spelled, the upstream gets the normalized
//! path, refusals are 403 `unauthorized` and counted, and opaque TCP is closed. Rules by
//! SPIFFE ID are tested with mTLS in `mtls`.

use std::io::{Read, Write};
use std::time::Duration;

use remora_tests::raw::{self, RawServer};
use remora_tests::{Behaviour, ProxyProcess, Upstream};

fn proxy(upstream: &Upstream, tcp_backend: std::net::SocketAddr) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    authorization:
      rules:
        - action: deny
          to: {{ paths: [/admin, /admin/*] }}
    routes:
      - name: internal
        match: {{ path: {{ prefix: /internal }} }}
        cluster: app
        authorization:
          rules:
            - action: allow
              from: {{ identities: ["spiffe://cluster.local/ns/ops/*"] }}
      - name: all
        cluster: app
  - name: tcp
    address: 127.0.0.1:0
    protocol: tcp
    cluster: tcp
    authorization:
      rules:
        - action: allow
          from: {{ identities: ["spiffe://cluster.local/ns/shop/sa/web"] }}
  - name: open-tcp
    address: 127.0.0.1:0
    protocol: tcp
    cluster: tcp
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
  - name: tcp
    endpoints: [{{ address: "{tcp_backend}" }}]
"#,
        upstream.addr()
    ))
}

fn get(proxy: &ProxyProcess, target: &str) -> raw::RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    raw::exchange(proxy.listener("main"), req.as_bytes()).unwrap()
}

#[tokio::test]
async fn a_deny_on_admin_holds_however_the_path_is_spelled() {
    let upstream = Upstream::start(Behaviour::Echo);
    let echo = RawServer::tcp_echo();
    let proxy = proxy(&upstream, echo.addr());
    let spellings = [
        "/admin",
        "/admin/users",
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "//admin",
        "/ADMIN",
        "/Admin/users",
        "/%61dmin",
        "/./admin",
    ];
    for target in spellings {
        let resp = get(&proxy, target);
        assert_eq!(resp.status, 403, "{target}: {}", resp.text());
        assert_eq!(
            resp.header("x-remora-error"),
            Some("unauthorized"),
            "{target}"
        );
    }
    // An encoded slash could be a separator to one server and not to another: refused.
    for target in ["/%2Fadmin", "/x/..%2Fadmin", "/a%5Cadmin"] {
        let resp = get(&proxy, target);
        assert_eq!(resp.status, 400, "{target}: {}", resp.text());
    }
    assert_eq!(
        upstream.requests(),
        0,
        "nothing refused reached the upstream"
    );
    proxy.wait_metric(
        "remora_authz_denied_total",
        &[("listener", "main"), ("route", "")],
        spellings.len() as f64,
    );

    // What is allowed is forwarded normalized: the upstream sees what the rules saw.
    let resp = get(&proxy, "/public/./a//b/../c?x=%2F");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = resp.text();
    assert!(text.contains("/public/a/c?x=%2F"), "{text}");
    assert!(get(&proxy, "/administrator").status == 200);
}

#[tokio::test]
async fn a_route_rule_by_identity_refuses_unauthenticated_callers() {
    let upstream = Upstream::start(Behaviour::Echo);
    let echo = RawServer::tcp_echo();
    let proxy = proxy(&upstream, echo.addr());
    let resp = get(&proxy, "/internal/stats");
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(resp.header("x-remora-error"), Some("unauthorized"));
    proxy.wait_metric(
        "remora_authz_denied_total",
        &[("listener", "main"), ("route", "internal")],
        1.0,
    );
    assert_eq!(get(&proxy, "/other").status, 200);
}

#[tokio::test]
async fn a_tcp_connection_the_rules_refuse_is_closed() {
    let upstream = Upstream::start(Behaviour::Echo);
    let echo = RawServer::tcp_echo();
    let proxy = proxy(&upstream, echo.addr());
    let talk = |listener: &str| {
        let mut s = std::net::TcpStream::connect(proxy.listener(listener)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"ping");
        let mut buf = [0u8; 4];
        match s.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    };
    assert_eq!(
        talk("open-tcp"),
        b"ping",
        "the same backend without rules echoes"
    );
    assert_eq!(talk("tcp"), b"", "closed without a byte");
    proxy.wait_metric(
        "remora_authz_denied_total",
        &[("listener", "tcp"), ("route", "")],
        1.0,
    );
}
