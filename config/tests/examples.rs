//! Every file in config/examples/ must load without a single diagnostic, and write back out
//! (with every default explicit) to YAML that loads to the same config.

use std::path::{Path, PathBuf};

use remora_config::model::{
    CircuitBreakers, FailureBreaker, HashKey, HealthCheckKind, LbPolicy, Limits, ListenerKind,
    LoadBalancer, OutlierDetection, RetryBudget, RetryOn, RetryPolicy, Route,
};
use remora_config::{load_file, load_str, to_yaml};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/examples exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_is_valid() {
    let files = examples();
    assert!(
        files.len() >= 10,
        "expected the feature examples, found {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        if let Err(diagnostics) = load_file(file) {
            failures.push(diagnostics.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "invalid examples:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_example_round_trips_through_to_yaml() {
    for file in examples() {
        let config = load_file(&file).unwrap_or_else(|d| panic!("{d}"));
        let yaml = to_yaml(&config);
        let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| {
            panic!("to_yaml of {} does not load:\n{d}\n{yaml}", file.display())
        });
        assert_eq!(
            to_yaml(&again),
            yaml,
            "{} changed on a round trip",
            file.display()
        );
    }
}

#[test]
fn every_feature_has_an_example() {
    let names: Vec<String> = examples()
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    for expected in [
        "quickstart.yaml",
        "routing.yaml",
        "traffic-split.yaml",
        "header-rewrite.yaml",
        "http2-upstream.yaml",
        "limits.yaml",
        "tcp.yaml",
        "access-log.yaml",
        "sidecar.yaml",
        "protocol-detection.yaml",
        "load-balancing.yaml",
        "health-checks.yaml",
        "outlier-detection.yaml",
        "retries.yaml",
        "circuit-breaking.yaml",
        "fault-injection.yaml",
        "rate-limiting.yaml",
        "dns-discovery.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing example {expected}"
        );
    }
}

/// The README's first demo depends on these exact addresses.
#[test]
fn quickstart_is_the_readme_demo() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml");
    let config = load_file(&path).unwrap();
    assert_eq!(
        config.admin.as_ref().unwrap().address.to_string(),
        "127.0.0.1:9901"
    );
    assert_eq!(config.listeners.len(), 1);
    let listener = &config.listeners[0];
    assert_eq!(listener.address.to_string(), "127.0.0.1:8080");
    let ListenerKind::Http { routes } = &listener.kind else {
        panic!("quickstart listener is not http")
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].backends[0].cluster, "app");
    let app = config.cluster("app").unwrap();
    assert_eq!(app.endpoints[0].address.to_string(), "127.0.0.1:8081");
}

/// limits.yaml says its values are the defaults, except the body limit.
#[test]
fn limits_example_shows_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/limits.yaml");
    let config = load_file(&path).unwrap();
    let expected = Limits {
        max_request_body_bytes: Some(10 * 1024 * 1024),
        ..Limits::default()
    };
    assert_eq!(config.limits, expected);
}

/// protocol-detection.yaml shows an auto listener with routes and a fallback cluster.
#[test]
fn protocol_detection_example_is_auto_with_a_fallback() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/protocol-detection.yaml");
    let config = load_file(&path).unwrap();
    let ListenerKind::Auto {
        routes, cluster, ..
    } = &config.listeners[0].kind
    else {
        panic!("protocol-detection listener is not auto")
    };
    assert!(!routes.is_empty());
    assert_eq!(cluster.as_deref(), Some("opaque"));
    assert_eq!(config.listeners[0].opaque_ports, [3306]);
}

fn example(name: &str) -> remora_config::model::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    load_file(&path).unwrap_or_else(|d| panic!("{d}"))
}

/// load-balancing.yaml shows every policy, the first with the defaults written out, and
/// every kind of hash key.
#[test]
fn load_balancing_example_shows_every_policy() {
    let config = example("load-balancing.yaml");
    let policies: Vec<&str> = config
        .clusters
        .iter()
        .map(|c| c.load_balancer.policy.as_str())
        .collect();
    assert_eq!(
        policies,
        ["round_robin", "least_request", "ring_hash", "maglev"]
    );
    assert_eq!(config.clusters[0].load_balancer, LoadBalancer::default());
    let mut kinds = Vec::new();
    for cluster in &config.clusters {
        if let LbPolicy::RingHash { hash_on, .. } | LbPolicy::Maglev { hash_on, .. } =
            &cluster.load_balancer.policy
        {
            kinds.extend(hash_on.iter().map(|key| match key {
                HashKey::Header(_) => "header",
                HashKey::Cookie { ttl: Some(_), .. } => "minted cookie",
                HashKey::Cookie { .. } => "cookie",
                HashKey::SourceIp => "source_ip",
                HashKey::Path => "path",
                HashKey::QueryParameter(_) => "query_parameter",
            }));
        }
    }
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "header",
            "minted cookie",
            "path",
            "query_parameter",
            "source_ip"
        ]
    );
}

/// health-checks.yaml shows one check of each kind.
#[test]
fn health_checks_example_shows_every_kind() {
    let config = example("health-checks.yaml");
    let kinds: Vec<&str> = config
        .clusters
        .iter()
        .map(|c| {
            match &c
                .health_check
                .as_ref()
                .expect("every cluster is checked")
                .kind
            {
                HealthCheckKind::Http { .. } => "http",
                HealthCheckKind::Tcp { .. } => "tcp",
                HealthCheckKind::Grpc { .. } => "grpc",
            }
        })
        .collect();
    assert_eq!(kinds, ["http", "tcp", "grpc"]);
}

/// outlier-detection.yaml says its first cluster spells out the defaults, and turns detection
/// off for its last.
#[test]
fn outlier_detection_example_shows_the_defaults() {
    let config = example("outlier-detection.yaml");
    assert_eq!(
        config.clusters[0].outlier_detection,
        Some(OutlierDetection::default())
    );
    let payments = config.cluster("payments").unwrap();
    assert!(
        payments
            .outlier_detection
            .is_some_and(|o| o.require_health_check_to_return)
    );
    assert_eq!(config.cluster("legacy").unwrap().outlier_detection, None);
}

fn http_routes(listener: &remora_config::model::Listener) -> &[Route] {
    match &listener.kind {
        ListenerKind::Http { routes } | ListenerKind::Auto { routes, .. } => routes,
        ListenerKind::Tcp { .. } => &[],
    }
}

/// retries.yaml says its first cluster spells out the default retries and budget, and shows
/// a route with every retry setting.
#[test]
fn retries_example_shows_the_defaults_and_every_setting() {
    let config = example("retries.yaml");
    let catalog = config.cluster("catalog").unwrap();
    assert_eq!(catalog.retries, RetryPolicy::default());
    assert_eq!(catalog.retry_budget, RetryBudget::default());
    let routes = http_routes(&config.listeners[0]);
    let full = routes[0]
        .retries
        .as_ref()
        .expect("the first route has retries");
    assert!(full.per_try_timeout.is_some() && full.hedge_after.is_some());
    assert!(full.retry_on.contains(&RetryOn::RetriableStatusCodes));
    assert!(routes[1].retries.is_none(), "the second route inherits");
    let orders = config.cluster("orders").unwrap();
    assert!(orders.retries.retry_on.contains(&RetryOn::FiveXx));
}

/// circuit-breaking.yaml says its first cluster spells out the defaults; the others turn the
/// consecutive-failure breaker on with settings and with `true`.
#[test]
fn circuit_breaking_example_shows_the_defaults() {
    let config = example("circuit-breaking.yaml");
    assert_eq!(
        config.clusters[0].circuit_breakers,
        CircuitBreakers::default()
    );
    assert!(
        config
            .cluster("reports")
            .unwrap()
            .circuit_breakers
            .consecutive_failures
            .is_some()
    );
    assert_eq!(
        config
            .cluster("search")
            .unwrap()
            .circuit_breakers
            .consecutive_failures,
        Some(FailureBreaker::default())
    );
}

/// fault-injection.yaml shows a fixed and a ranged delay, aborts with and without a gRPC
/// status, header conditions, an expiry, and header-triggered faults.
#[test]
fn fault_injection_example_shows_every_kind() {
    let config = example("fault-injection.yaml");
    let faults: Vec<_> = config
        .listeners
        .iter()
        .flat_map(http_routes)
        .map(|r| r.fault.as_ref().expect("every route has a fault"))
        .collect();
    assert!(
        faults
            .iter()
            .any(|f| f.delay.is_some_and(|d| d.min == d.max))
    );
    assert!(
        faults
            .iter()
            .any(|f| f.delay.is_some_and(|d| d.min < d.max))
    );
    assert!(
        faults
            .iter()
            .any(|f| f.abort.is_some_and(|a| a.grpc_status.is_some()))
    );
    assert!(
        faults
            .iter()
            .any(|f| !f.headers.is_empty() && f.expires_at.is_some())
    );
    assert!(faults.iter().any(|f| f.header_triggered));
}

/// rate-limiting.yaml limits a listener, routes (with and without a burst) and a tcp
/// listener.
#[test]
fn rate_limiting_example_limits_listeners_and_routes() {
    let config = example("rate-limiting.yaml");
    assert!(config.listeners.iter().all(|l| l.rate_limit.is_some()));
    let routes = http_routes(&config.listeners[0]);
    let reports = routes.iter().find(|r| r.name == "reports").unwrap();
    // 600/m is 10 a second, so the default burst is 10.
    assert_eq!(reports.rate_limit.map(|l| l.burst), Some(10));
    assert!(matches!(config.listeners[1].kind, ListenerKind::Tcp { .. }));
}
