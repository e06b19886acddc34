//! Route matching through the real proxy: each kind of condition, and the precedence between
//! routes when several match. Every route stamps its name on the response (`x-route`), so the
//! tests read which route served a request from the outside.

use remora_tests::client::{ReqBody, empty, request};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream};

/// A proxy with listener `main` holding `routes` (name, `match` flow mapping), in this order,
/// all to one echo upstream.
fn proxy_with_routes(upstream: &Upstream, routes: &[(&str, &str)]) -> ProxyProcess {
    let mut yaml = String::from(
        "admin: { address: 127.0.0.1:0 }\naccess_log: { enabled: false }\n\
         listeners:\n  - name: main\n    address: 127.0.0.1:0\n    routes:\n",
    );
    for (name, matches) in routes {
        yaml.push_str(&format!(
            "      - name: {name}\n        match: {matches}\n        cluster: app\n        \
             response_headers: {{ set: {{ x-route: {name} }} }}\n"
        ));
    }
    yaml.push_str(&format!(
        "clusters:\n  - name: app\n    endpoints: [{{ address: \"{}\" }}]\n",
        upstream.addr()
    ));
    ProxyProcess::start(&yaml)
}

/// One request to try: method, host, path and extra headers.
struct Probe {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// The route that must serve it; `None` for 404 no-route.
    want: Option<&'static str>,
}

const fn get(host: &'static str, path: &'static str, want: Option<&'static str>) -> Probe {
    Probe {
        method: "GET",
        host,
        path,
        headers: &[],
        want,
    }
}

const fn with_headers(
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: Option<&'static str>,
) -> Probe {
    Probe {
        method: "GET",
        host,
        path,
        headers,
        want,
    }
}

const fn method(
    method: &'static str,
    host: &'static str,
    path: &'static str,
    want: Option<&'static str>,
) -> Probe {
    Probe {
        method,
        host,
        path,
        headers: &[],
        want,
    }
}

/// Sends every probe over HTTP/1.1 (host in `Host`) and h2c (host in `:authority`).
async fn check(proxy: &ProxyProcess, probes: &[Probe]) {
    for proto in Proto::ALL {
        let mut client = Client::connect(proxy.listener("main"), proto).await;
        for p in probes {
            let mut req = request(p.method, p.path).header("host", p.host);
            for (name, value) in p.headers {
                req = req.header(*name, *value);
            }
            let req: http::Request<ReqBody> = req.body(empty()).unwrap();
            let reply = client.fetch(req).await;
            let what = format!(
                "{proto:?} {} {}{} {:?}",
                p.method, p.host, p.path, p.headers
            );
            match p.want {
                Some(route) => {
                    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
                    assert_eq!(reply.header("x-route"), Some(route), "{what}");
                }
                None => {
                    assert_eq!(
                        reply.status,
                        404,
                        "{what}: routed to {:?}",
                        reply.header("x-route")
                    );
                    assert_eq!(reply.remora_error(), Some("no-route"), "{what}");
                }
            }
        }
    }
}

#[tokio::test]
async fn each_kind_of_condition_selects_its_route() {
    let upstream = Upstream::start(Behaviour::Echo);
    // Each route has its own host, so the conditions under test never compete.
    let proxy = proxy_with_routes(
        &upstream,
        &[
            ("host-exact", "{ hosts: [exact.local] }"),
            ("host-suffix", r#"{ hosts: ["*.example.com"] }"#),
            (
                "path-exact",
                "{ hosts: [path.local], path: { exact: /exact } }",
            ),
            (
                "path-prefix",
                "{ hosts: [path.local], path: { prefix: /api } }",
            ),
            (
                "path-regex",
                r#"{ hosts: [path.local], path: { regex: "/users/[0-9]+" } }"#,
            ),
            (
                "header-exact",
                r#"{ hosts: [header.local], headers: [{ name: x-canary, exact: "1" }] }"#,
            ),
            (
                "header-regex",
                r#"{ hosts: [header.local], headers: [{ name: x-version, regex: "v[23]" }] }"#,
            ),
            (
                "header-present",
                "{ hosts: [header.local], headers: [{ name: x-debug, present: true }] }",
            ),
            ("method", "{ hosts: [method.local], method: POST }"),
        ],
    );
    check(
        &proxy,
        &[
            // Exact host: case-insensitive, port ignored, nothing else.
            get("exact.local", "/", Some("host-exact")),
            get("EXACT.Local:8080", "/any/path", Some("host-exact")),
            get("sub.exact.local", "/", None),
            get("other.local", "/", None),
            // Suffix host: at least one more label.
            get("a.example.com", "/", Some("host-suffix")),
            get("a.b.example.com:9", "/", Some("host-suffix")),
            get("example.com", "/", None),
            // Exact path, ignoring the query.
            get("path.local", "/exact", Some("path-exact")),
            get("path.local", "/exact?q=1", Some("path-exact")),
            get("path.local", "/exact/", None),
            // Prefix: on segment boundaries.
            get("path.local", "/api", Some("path-prefix")),
            get("path.local", "/api/v1/x", Some("path-prefix")),
            get("path.local", "/apiary", None),
            // Regex: anchored at both ends.
            get("path.local", "/users/42", Some("path-regex")),
            get("path.local", "/users/42/posts", None),
            get("path.local", "/users/x", None),
            // Headers.
            with_headers(
                "header.local",
                "/",
                &[("x-canary", "1")],
                Some("header-exact"),
            ),
            with_headers("header.local", "/", &[("x-canary", "2")], None),
            with_headers(
                "header.local",
                "/",
                &[("x-version", "v3")],
                Some("header-regex"),
            ),
            with_headers("header.local", "/", &[("x-version", "v23")], None),
            with_headers(
                "header.local",
                "/",
                &[("x-debug", "")],
                Some("header-present"),
            ),
            get("header.local", "/", None),
            // Method.
            method("POST", "method.local", "/", Some("method")),
            method("GET", "method.local", "/", None),
        ],
    )
    .await;
}

#[tokio::test]
async fn the_most_specific_route_wins_whatever_the_config_order() {
    let upstream = Upstream::start(Behaviour::Echo);
    // Least specific first, so that config order alone would pick the wrong route each time.
    let proxy = proxy_with_routes(
        &upstream,
        &[
            ("any", "{}"),
            ("first", "{ path: { prefix: /same } }"),
            ("second", "{ path: { prefix: /same } }"),
            (
                "one-header",
                "{ path: { prefix: /h }, headers: [{ name: x-a, present: true }] }",
            ),
            (
                "two-headers",
                "{ path: { prefix: /h }, headers: [{ name: x-a, present: true }, { name: x-b, present: true }] }",
            ),
            ("no-method", "{ path: { prefix: /m } }"),
            ("method", "{ path: { prefix: /m }, method: GET }"),
            ("prefix-short", "{ path: { prefix: /api } }"),
            ("prefix-long", "{ path: { prefix: /api/v2 } }"),
            ("regex", r#"{ path: { regex: "/api/v2/users/[0-9]+" } }"#),
            ("exact-path", "{ path: { exact: /api/v2/users/1 } }"),
            ("suffix-short", r#"{ hosts: ["*.com"] }"#),
            ("suffix-long", r#"{ hosts: ["*.example.com"] }"#),
            (
                "exact-host",
                "{ hosts: [api.example.com], path: { prefix: /only } }",
            ),
        ],
    );
    check(
        &proxy,
        &[
            // 1. Host: exact, then the longer suffix, then the shorter, then any host.
            get("api.example.com", "/only/x", Some("exact-host")),
            // An exact host whose other conditions fail falls through to the suffixes, which
            // still beat an exact path on any host.
            get("api.example.com", "/api/v2/users/1", Some("suffix-long")),
            get("www.example.com", "/", Some("suffix-long")),
            get("shop.com", "/api/v2/users/1", Some("suffix-short")),
            // 2. Path: exact, then regex, then the longer prefix, then the shorter, then none.
            get("app.local", "/api/v2/users/1", Some("exact-path")),
            get("app.local", "/api/v2/users/7", Some("regex")),
            get("app.local", "/api/v2/orders", Some("prefix-long")),
            get("app.local", "/api/v1", Some("prefix-short")),
            get("app.local", "/apiary", Some("any")),
            // 3. A method condition before none.
            method("GET", "app.local", "/m", Some("method")),
            method("POST", "app.local", "/m", Some("no-method")),
            // 4. More header conditions before fewer.
            with_headers(
                "app.local",
                "/h",
                &[("x-a", "1"), ("x-b", "1")],
                Some("two-headers"),
            ),
            with_headers("app.local", "/h", &[("x-a", "1")], Some("one-header")),
            with_headers("app.local", "/h", &[], Some("any")),
            // 5. Otherwise config order.
            get("app.local", "/same", Some("first")),
        ],
    )
    .await;
}
