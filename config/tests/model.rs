//! How YAML maps onto the model the proxy runs, and back again through `to_yaml`.

use std::time::Duration;

use remora_config::model::{
    CircuitBreakers, Direction, HeaderValueMatch, HostMatch, ListenerKind, LoadBalancer, LogTarget,
    OutlierDetection, PathMatch, RetryBudget, RetryPolicy, Route, UpstreamProtocol,
};
use remora_config::{defaults, load_str, schema, to_yaml};

fn load(yaml: &str) -> remora_config::model::Config {
    load_str("t.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

fn routes(config: &remora_config::model::Config, listener: usize) -> &[Route] {
    match &config.listeners[listener].kind {
        ListenerKind::Http { routes } | ListenerKind::Auto { routes, .. } => routes,
        ListenerKind::Tcp { .. } => panic!("listener {listener} is tcp"),
    }
}

const MINIMAL: &str = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: app
clusters:
  - name: app
    endpoints:
      - address: 127.0.0.1:8081
";

#[test]
fn defaults_fill_every_left_out_field() {
    let config = load(MINIMAL);
    assert_eq!(config.admin, None);
    assert_eq!(config.runtime.workers, defaults::WORKERS);
    assert_eq!(config.runtime.drain_timeout, defaults::DRAIN_TIMEOUT);
    assert_eq!(config.access_log.enabled, defaults::ACCESS_LOG_ENABLED);
    assert_eq!(config.access_log.target, LogTarget::Stdout);
    assert_eq!(config.limits, remora_config::model::Limits::default());
    let listener = &config.listeners[0];
    assert_eq!(listener.name, "127.0.0.1:8080");
    assert_eq!(listener.direction, Direction::Inbound);
    let route = &routes(&config, 0)[0];
    assert_eq!(route.name, "route-0");
    assert_eq!(route.timeout, defaults::ROUTE_TIMEOUT);
    assert!(route.matches.hosts.is_empty() && route.matches.path.is_none());
    assert_eq!(route.backends.len(), 1);
    assert_eq!(route.backends[0].cluster, "app");
    assert_eq!(route.backends[0].weight, defaults::WEIGHT);
    assert!(route.request_headers.is_empty() && route.response_headers.is_empty());
    assert!(route.retries.is_none() && route.fault.is_none() && route.rate_limit.is_none());
    assert_eq!(listener.rate_limit, None);
    let cluster = config.cluster("app").unwrap();
    assert_eq!(cluster.protocol, UpstreamProtocol::Http1);
    assert_eq!(cluster.connect_timeout, defaults::CONNECT_TIMEOUT);
    assert_eq!(cluster.idle_timeout, defaults::UPSTREAM_IDLE_TIMEOUT);
    assert_eq!(cluster.endpoints[0].weight, defaults::WEIGHT);
    assert_eq!(cluster.load_balancer, LoadBalancer::default());
    assert_eq!(cluster.health_check, None);
    assert_eq!(cluster.outlier_detection, Some(OutlierDetection::default()));
    assert_eq!(cluster.retries, RetryPolicy::default());
    assert_eq!(cluster.retry_budget, RetryBudget::default());
    assert_eq!(cluster.circuit_breakers, CircuitBreakers::default());
}

#[test]
fn match_conditions_are_normalised() {
    let config = load(
        "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - match:
          hosts: [API.Local, '*.Api.Local']
          path: {regex: '/v[0-9]+'}
          method: get
          headers:
            - {name: X-Canary, exact: '1'}
            - {name: X-Trace, present: true}
            - {name: x-user, regex: 'a|b'}
        cluster: app
      - match: {hosts: ['*'], path: {prefix: /api}}
        cluster: app
      - match: {path: {exact: /healthz}}
        cluster: app
clusters: [{name: app}]
",
    );
    let routes = routes(&config, 0);
    let m = &routes[0].matches;
    assert_eq!(
        m.hosts,
        [
            HostMatch::Exact("api.local".into()),
            HostMatch::Suffix(".api.local".into())
        ]
    );
    let Some(PathMatch::Regex(re)) = &m.path else {
        panic!("not a regex")
    };
    assert!(re.is_match("/v1") && !re.is_match("/v1/x") && !re.is_match("/x/v1"));
    assert_eq!(m.method, Some(http::Method::GET));
    assert_eq!(m.headers[0].name, "x-canary");
    assert!(matches!(&m.headers[0].value, HeaderValueMatch::Exact(v) if v == "1"));
    assert!(matches!(m.headers[1].value, HeaderValueMatch::Present));
    let HeaderValueMatch::Regex(re) = &m.headers[2].value else {
        panic!("not a regex")
    };
    assert!(re.is_match("a") && !re.is_match("ab"));
    // `*` is any host: no host condition at all.
    assert!(routes[1].matches.hosts.is_empty());
    assert!(matches!(&routes[1].matches.path, Some(PathMatch::Prefix(p)) if p == "/api"));
    assert!(matches!(&routes[2].matches.path, Some(PathMatch::Exact(p)) if p == "/healthz"));
}

#[test]
fn everything_else_maps_field_by_field() {
    let config = load(
        "\
admin: {address: 127.0.0.1:9901}
runtime: {workers: 4, drain_timeout: 0s}
access_log: {enabled: false, path: /var/log/remora.log}
limits:
  max_request_header_bytes: 16KiB
  max_request_headers: 50
  max_uri_bytes: 2048
  max_request_body_bytes: 1MB
  header_read_timeout: 2.5s
  idle_timeout: 1m30s
  request_body_timeout: 100ms
  max_concurrent_streams: 10000
listeners:
  - name: out
    address: '[::1]:0'
    direction: outbound
    routes:
      - name: split
        backends: [{cluster: a, weight: 3}, {cluster: b}]
        timeout: 250ms
        request_headers: {remove: [X-Debug], set: {X-Env: prod}, add: {via: remora}}
        response_headers: {set: {server: remora}}
  - name: db
    address: 127.0.0.1:5432
    protocol: tcp
    cluster: b
clusters:
  - {name: a, protocol: http2, connect_timeout: 100ms, idle_timeout: 5m}
  - {name: b, endpoints: [{address: 10.0.0.1:80, weight: 0}, {address: 10.0.0.2:80, weight: 2}]}
",
    );
    assert_eq!(
        config.admin.as_ref().unwrap().address.to_string(),
        "127.0.0.1:9901"
    );
    assert_eq!(config.runtime.workers, 4);
    // 0 is allowed: exit at once, without draining.
    assert_eq!(config.runtime.drain_timeout, Duration::ZERO);
    assert!(!config.access_log.enabled);
    assert_eq!(
        config.access_log.target,
        LogTarget::File("/var/log/remora.log".into())
    );
    let l = &config.limits;
    assert_eq!(l.max_request_header_bytes, 16 * 1024);
    assert_eq!(l.max_request_headers, 50);
    assert_eq!(l.max_uri_bytes, 2048);
    assert_eq!(l.max_request_body_bytes, Some(1_000_000));
    assert_eq!(l.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(l.idle_timeout, Duration::from_secs(90));
    assert_eq!(l.request_body_timeout, Duration::from_millis(100));
    assert_eq!(l.max_concurrent_streams, 10_000);
    let out = &config.listeners[0];
    assert_eq!((out.name.as_str(), out.address.port()), ("out", 0));
    assert_eq!(out.direction, Direction::Outbound);
    let route = &routes(&config, 0)[0];
    assert_eq!(route.timeout, Duration::from_millis(250));
    let weights: Vec<(&str, u32)> = route
        .backends
        .iter()
        .map(|b| (b.cluster.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("a", 3), ("b", 1)]);
    assert_eq!(route.request_headers.remove, ["x-debug"]);
    assert_eq!(route.request_headers.set[0].0, "x-env");
    assert_eq!(route.request_headers.set[0].1, "prod");
    assert_eq!(route.request_headers.add[0].0, "via");
    assert_eq!(route.response_headers.set[0].0, "server");
    assert!(matches!(&config.listeners[1].kind, ListenerKind::Tcp { cluster } if cluster == "b"));
    let a = config.cluster("a").unwrap();
    assert_eq!(a.protocol, UpstreamProtocol::Http2);
    assert_eq!(a.connect_timeout, Duration::from_millis(100));
    assert_eq!(a.idle_timeout, Duration::from_secs(300));
    assert!(a.endpoints.is_empty());
    assert_eq!(config.cluster("b").unwrap().endpoints[1].weight, 2);
}

#[test]
fn to_yaml_writes_every_default_and_round_trips() {
    let config = load(MINIMAL);
    let yaml = to_yaml(&config);
    for expected in [
        "workers: 1",
        "drain_timeout: 30s",
        "enabled: true",
        "path: stdout",
        "max_request_header_bytes: 60KiB",
        "max_request_headers: 100",
        "max_uri_bytes: 8KiB",
        "max_request_body_bytes: unlimited",
        "header_read_timeout: 10s",
        "idle_timeout: 1h",
        "request_body_timeout: 1m",
        "max_concurrent_streams: 100",
        "name: 127.0.0.1:8080",
        "protocol: http",
        "direction: inbound",
        "name: route-0",
        "weight: 1",
        "timeout: 15s",
        "protocol: http1",
        "connect_timeout: 1s",
        "idle_timeout: 1m",
        "policy: round_robin",
        "panic_threshold: 50%",
        "consecutive_5xx: 5",
        "consecutive_gateway_failure: 5",
        "base_ejection_time: 30s",
        "max_ejection_time: 5m",
        "max_ejection_percent: 10%",
        "require_health_check_to_return: false",
        "max_attempts: 2",
        "- connect-failure",
        "base_interval: 25ms",
        "buffer_limit: 64KiB",
        "ratio: 20%",
        "max_retries: 64",
        "consecutive_failures: false",
    ] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
}

#[test]
fn to_yaml_round_trips_every_feature() {
    let yaml = "\
admin: {address: 127.0.0.1:9901}
access_log: {path: stdout.log}
limits: {max_request_body_bytes: 1500}
listeners:
  - address: 127.0.0.1:8080
    routes:
      - match:
          hosts: [a.local, '*.b.local']
          path: {regex: '/x/(a|b)'}
          method: PURGE
          headers: [{name: x-a, exact: '1.10'}, {name: x-b, regex: '.*'}, {name: x-c, present: true}]
        backends: [{cluster: app, weight: 0}, {cluster: app2, weight: 7}]
        timeout: 1.5s
        request_headers: {remove: [x-a], set: {x-b: '2'}, add: {x-c: '3', x-d: [a, b], X-C: '4'}}
  - {address: 127.0.0.1:5432, protocol: tcp, cluster: app}
clusters: [{name: app}, {name: app2, protocol: http2, endpoints: [{address: '[::1]:80'}]}]
";
    let config = load(yaml);
    let written = to_yaml(&config);
    let again = load_str("to_yaml", &written).unwrap_or_else(|d| panic!("{d}\n{written}"));
    assert_eq!(to_yaml(&again), written);
    let route = &routes(&again, 0)[0];
    assert_eq!(route.matches.hosts, routes(&config, 0)[0].matches.hosts);
    let Some(PathMatch::Regex(re)) = &route.matches.path else {
        panic!("regex lost")
    };
    assert_eq!(re.as_str(), "^(?:/x/(a|b))$", "re-anchored twice?");
    assert!(matches!(&route.matches.headers[0].value, HeaderValueMatch::Exact(v) if v == "1.10"));
    let added: Vec<(&str, &str)> = route
        .request_headers
        .add
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    // One header's values stay together, in the order written.
    assert_eq!(
        added,
        [("x-c", "3"), ("x-c", "4"), ("x-d", "a"), ("x-d", "b")]
    );
    assert!(
        written.contains("x-c:\n              - \"3\"\n              - \"4\""),
        "{written}"
    );
    assert_eq!(again.limits.max_request_body_bytes, Some(1500));
    assert_eq!(
        again.access_log.target,
        LogTarget::File("stdout.log".into())
    );
}

#[test]
fn a_log_file_named_stdout_stays_a_file() {
    let mut config = load(MINIMAL);
    config.access_log.target = LogTarget::File("stdout".into());
    let again = load(&to_yaml(&config));
    assert_eq!(again.access_log.target, LogTarget::File("./stdout".into()));
}

#[test]
fn schema_describes_the_yaml() {
    let schema = schema();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let properties = schema["properties"].as_object().unwrap();
    let mut keys: Vec<&str> = properties.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_log",
            "admin",
            "clusters",
            "limits",
            "listeners",
            "runtime"
        ]
    );
    assert_eq!(schema["additionalProperties"], false);
    let defs = &schema["definitions"];
    // Defaults come from defaults.rs, ranges from defaults::ranges.
    assert_eq!(defs["Route"]["properties"]["timeout"]["default"], "15s");
    assert_eq!(
        defs["Limits"]["properties"]["max_request_header_bytes"]["default"],
        "60KiB"
    );
    assert_eq!(
        defs["Limits"]["properties"]["max_request_body_bytes"]["default"],
        "unlimited"
    );
    assert_eq!(
        defs["Listener"]["properties"]["protocol"]["default"],
        "http"
    );
    assert_eq!(defs["Runtime"]["properties"]["workers"]["maximum"], 256);
    assert_eq!(
        defs["Runtime"]["properties"]["drain_timeout"]["default"],
        "30s"
    );
    let limits = &defs["Limits"]["properties"];
    assert_eq!(limits["request_body_timeout"]["default"], "1m");
    assert_eq!(limits["max_concurrent_streams"]["default"], 100);
    assert_eq!(limits["max_concurrent_streams"]["minimum"], 1);
    assert_eq!(limits["max_concurrent_streams"]["maximum"], 10_000);
    // Required fields, the match key's YAML spelling, and descriptions from doc comments.
    assert_eq!(defs["Cluster"]["required"], serde_json::json!(["name"]));
    assert!(defs["Route"]["properties"]["match"].is_object());
    assert!(defs["Listener"]["properties"]["address"]["description"].is_string());
}
