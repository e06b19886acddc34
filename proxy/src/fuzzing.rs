//! Entry points for fuzzing: the proxy's handling of arbitrary request heads, without sockets.
//!
//! `fuzz/` drives these with cargo-fuzz (nightly); `proxy/tests/fuzz_replay.rs` replays the
//! corpus and a seeded mutation run on stable in every CI run. The contract is simply: no input
//! panics.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue, Method, Request, Uri, Version};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::framing::{HeadScan, check_head};
use crate::headers;
use crate::http::service::{check_limits, request_host, set_target};
use crate::metrics::Metrics;
use crate::route::RequestView;
use crate::snapshot::{ListenerRtKind, Snapshot};
use crate::trace;

/// Routes with every kind of condition, so lookups exercise all matchers.
const CONFIG: &str = r#"
listeners:
  - name: fuzz
    address: 127.0.0.1:0
    routes:
      - name: exact
        match: { hosts: [api.local], path: { exact: /exact } }
        cluster: a
        request_headers: { remove: [x-debug], set: { x-env: fuzz }, add: { x-via: remora } }
      - name: regex
        match: { hosts: ["*.example.com"], path: { regex: "/users/[0-9]+(/.*)?" }, method: GET }
        cluster: b
      - name: headers
        match: { headers: [{ name: x-canary, exact: "1" }, { name: x-v, regex: "v[0-9]+" }, { name: x-p, present: true }] }
        backends: [{ cluster: a, weight: 3 }, { cluster: b, weight: 1 }]
      - name: prefix
        match: { path: { prefix: /api } }
        cluster: b
      - name: rest
        cluster: a
clusters:
  - name: a
    endpoints: [{ address: 127.0.0.1:1 }]
  - name: b
    protocol: http2
    endpoints: [{ address: 127.0.0.1:2 }]
"#;

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let config = remora_config::load_str("fuzz", CONFIG).expect("the fuzz config is valid");
        Snapshot::build(Arc::new(config), &Metrics::new(), None, &Default::default())
    })
}

/// Parses `data` as an HTTP/1.1 request head the way the proxy would, and runs it through
/// framing checks, limits, routing and every header rewrite.
pub fn request_head(data: &[u8]) {
    // The raw framing scan, fed in two pieces split at a data-derived point.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let mut scan = HeadScan::default();
    if scan.feed(&data[..cut]).is_none() {
        let _ = scan.feed(&data[cut..]);
    }

    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut parsed);
    if req.parse(data).is_err() {
        return;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return;
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .version(Version::HTTP_11);
    for h in req.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            builder = builder.header(n, v);
        }
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    exercise(request);
}

fn exercise(request: Request<()>) {
    let snapshot = snapshot();
    let listener = &snapshot.listeners[0];
    let _ = check_limits(&request, &listener.limits);
    let _ = check_head(request.headers());
    let _ = crate::framing::check_target(&request);
    let ListenerRtKind::Http(table) = &listener.kind else {
        unreachable!("the fuzz listener serves HTTP");
    };
    let view = RequestView {
        host: request_host(&request),
        path: request.uri().path(),
        method: request.method(),
        headers: request.headers(),
    };
    let route = table.lookup(&view).cloned();
    let (mut parts, ()) = request.into_parts();
    let mut rng = SmallRng::seed_from_u64(1);
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::append_forwarded(
        h,
        &HeaderValue::from_static("10.0.0.1"),
        &headers::PROTO_HTTP,
    );
    headers::ensure_request_id(h, &mut rng);
    trace::propagate(h, &mut rng);
    if let Some(route) = route {
        headers::rewrite(h, &route.request_headers);
        let backend = route.split.pick_with(0x5eed);
        let cluster = &route.backends[backend].cluster;
        let _ = set_target(&mut parts, cluster.protocol, cluster.endpoints[0].address);
    }
}
