//! Every file in config/examples/ must load without a single diagnostic, and write back out
//! (with every default explicit) to YAML that loads to the same config.

use std::path::{Path, PathBuf};

use remora_config::model::{Limits, ListenerKind};
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
        "expected the ten feature examples, found {files:?}"
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
}
