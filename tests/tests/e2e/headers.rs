//! What the proxy does to headers on the way through: hop-by-hop fields removed in both
//! directions, `X-Forwarded-*` appended, `x-request-id` and `traceparent` kept or made, the
//! route's rewrites applied, and the Host left alone.

use remora_tests::client::{empty, request};
use remora_tests::upstream::text;
use remora_tests::{Behaviour, Client, Echo, Proto, ProxyProcess, Upstream};

fn proxy(upstream: &Upstream) -> ProxyProcess {
    ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: app
        cluster: app
        request_headers:
          remove: [x-debug]
          set: {{ x-env: prod }}
          add: {{ x-via: remora }}
        response_headers:
          remove: [x-upstream]
          set: {{ x-served-by: remora }}
          add: {{ x-trail: proxy }}
clusters:
  - name: app
    endpoints: [{{ address: "{}" }}]
"#,
        upstream.addr()
    ))
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`
fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(&len, p)| is_lower_hex(p, len))
        && parts[2].starts_with('4')
        && parts[3].starts_with(['8', '9', 'a', 'b'])
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids not all zero.
fn traceparent_parts(tp: &str) -> (&str, &str, &str) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    assert!(
        is_lower_hex(parts[1], 32) && parts[1].bytes().any(|b| b != b'0'),
        "{tp}"
    );
    assert!(
        is_lower_hex(parts[2], 16) && parts[2].bytes().any(|b| b != b'0'),
        "{tp}"
    );
    assert!(is_lower_hex(parts[3], 2), "{tp}");
    (parts[1], parts[2], parts[3])
}

#[tokio::test]
async fn request_headers_are_cleaned_extended_and_rewritten() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let reply = client
        .fetch(
            request("GET", "/path")
                .header("host", "app.local:8080")
                // Hop-by-hop: Connection, what it names, and the fixed list.
                .header("connection", "keep-alive, x-secret")
                .header("x-secret", "for the next hop only")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "gzip")
                .header("upgrade", "websocket")
                // Appended to, kept.
                .header("x-forwarded-for", "10.1.2.3")
                .header("x-forwarded-proto", "https")
                .header("x-request-id", "req-from-client")
                .header("traceparent", PARENT)
                .header("tracestate", "vendor=1")
                // Route rewrites: removed, replaced, appended to.
                .header("x-debug", "1")
                .header("x-env", "dev")
                .header("x-via", "lb")
                .header("x-untouched", "yes")
                .body(empty())
                .unwrap(),
        )
        .await;
    let echo = reply.echo();
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "x-debug",
    ] {
        assert_eq!(echo.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(echo.header_all("host"), ["app.local:8080"]);
    assert_eq!(echo.header_all("x-forwarded-for"), ["10.1.2.3, 127.0.0.1"]);
    assert_eq!(echo.header_all("x-forwarded-proto"), ["https, http"]);
    assert_eq!(echo.header_all("x-request-id"), ["req-from-client"]);
    assert_eq!(echo.header_all("tracestate"), ["vendor=1"]);
    assert_eq!(echo.header_all("x-env"), ["prod"]);
    assert_eq!(echo.header_all("x-via"), ["lb", "remora"]);
    assert_eq!(echo.header_all("x-untouched"), ["yes"]);

    // The proxy's child span: same trace and flags, a new span id.
    let (trace, span, flags) = traceparent_parts(echo.header("traceparent").unwrap());
    let (parent_trace, parent_span, parent_flags) = traceparent_parts(PARENT);
    assert_eq!((trace, flags), (parent_trace, parent_flags));
    assert_ne!(span, parent_span);

    // Response rewrites.
    assert_eq!(reply.header("x-upstream"), None);
    assert_eq!(reply.header("x-served-by"), Some("remora"));
    assert_eq!(reply.header("x-trail"), Some("proxy"));
}

#[tokio::test]
async fn missing_ids_are_created_and_differ_per_request() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    for proto in Proto::ALL {
        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let first: Echo = client.get("/").await.echo();
        let second: Echo = client.get("/").await.echo();
        for echo in [&first, &second] {
            let id = echo.header("x-request-id").expect("x-request-id set");
            assert!(is_uuid_v4(id), "{proto:?}: {id}");
            let (_, _, flags) = traceparent_parts(echo.header("traceparent").unwrap());
            // A new trace is sampled, so the app keeps tracing as it would without a proxy.
            assert_eq!(flags, "01");
            assert_eq!(echo.header_all("x-forwarded-for"), ["127.0.0.1"]);
            assert_eq!(echo.header_all("x-forwarded-proto"), ["http"]);
        }
        assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
        assert_ne!(
            traceparent_parts(first.header("traceparent").unwrap()).0,
            traceparent_parts(second.header("traceparent").unwrap()).0
        );
    }
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let echo = client
        .fetch(
            request("GET", "/")
                .header("traceparent", bad)
                .body(empty())
                .unwrap(),
        )
        .await
        .echo();
    let (trace, _, flags) = traceparent_parts(echo.header("traceparent").unwrap());
    assert_ne!(trace, "00000000000000000000000000000000");
    assert_eq!(flags, "01");
}

#[tokio::test]
async fn te_trailers_is_end_to_end_and_kept() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = proxy(&upstream);
    for proto in Proto::ALL {
        let mut client = Client::connect(proxy.listener("main"), proto).await;
        let echo = client
            .fetch(
                request("GET", "/")
                    .header("te", "trailers")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .echo();
        assert_eq!(echo.header_all("te"), ["trailers"], "{proto:?}");
    }
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_removed() {
    let upstream = Upstream::start(Behaviour::custom(|_, _| async move {
        let mut resp = text(200, "ok\n");
        let h = resp.headers_mut();
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=9".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("x-end-to-end", "yes".parse().unwrap());
        Ok(resp)
    }));
    let proxy = proxy(&upstream);
    for proto in Proto::ALL {
        let reply = remora_tests::client::get(proxy.listener("main"), proto, "/").await;
        assert_eq!(reply.status, 200);
        for gone in ["x-hop", "keep-alive", "proxy-connection"] {
            assert_eq!(
                reply.header(gone),
                None,
                "{proto:?}: {gone} reached the client"
            );
        }
        assert_eq!(reply.header("x-end-to-end"), Some("yes"));
        assert_eq!(reply.text(), "ok\n");
    }
}
