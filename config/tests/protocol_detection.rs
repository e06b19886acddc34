//! `protocol: auto` listeners: HTTP routed by `routes`, everything else forwarded to an
//! optional `cluster` once the first bytes (or `detect_timeout` of silence) decide.

mod common;

use std::time::Duration;

use common::{BASE, errors};
use remora_config::model::ListenerKind;
use remora_config::{defaults, load_str, schema, to_yaml};

fn load(yaml: &str) -> remora_config::model::Config {
    load_str("t.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

const AUTO: &str = "\
listeners:
  - address: 127.0.0.1:8080
    protocol: auto
    routes: [{cluster: web}]
    cluster: db
    detect_timeout: 10ms
  - address: 127.0.0.1:8081
    protocol: auto
    routes: [{cluster: web}]
clusters: [{name: web}, {name: db}]
";

#[test]
fn auto_listeners_map_to_the_model() {
    let config = load(AUTO);
    let ListenerKind::Auto {
        routes,
        cluster,
        detect_timeout,
    } = &config.listeners[0].kind
    else {
        panic!("not auto: {:?}", config.listeners[0].kind)
    };
    assert_eq!(routes[0].backends[0].cluster, "web");
    assert_eq!(cluster.as_deref(), Some("db"));
    assert_eq!(*detect_timeout, Duration::from_millis(10));
    // Without a cluster, connections that are not HTTP are closed; the timeout defaults.
    let ListenerKind::Auto {
        cluster,
        detect_timeout,
        ..
    } = &config.listeners[1].kind
    else {
        panic!("not auto")
    };
    assert_eq!(*cluster, None);
    assert_eq!(*detect_timeout, defaults::DETECT_TIMEOUT);
}

#[test]
fn protocol_auto_alone_turns_an_http_listener_into_auto() {
    let config = load(&BASE.replace("    routes:", "    protocol: auto\n    routes:"));
    let ListenerKind::Auto {
        routes,
        cluster: None,
        detect_timeout,
    } = &config.listeners[0].kind
    else {
        panic!("not auto without a cluster: {:?}", config.listeners[0].kind)
    };
    assert_eq!(routes[0].backends[0].cluster, "api");
    assert_eq!(*detect_timeout, defaults::DETECT_TIMEOUT);
}

#[test]
fn auto_listeners_round_trip_through_to_yaml() {
    let config = load(AUTO);
    let yaml = to_yaml(&config);
    for expected in ["protocol: auto", "cluster: db", "detect_timeout: 10ms"] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    // The default is written out; a missing cluster stays missing.
    assert!(yaml.contains("detect_timeout: 1s"), "{yaml}");
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
    assert!(matches!(
        &again.listeners[1].kind,
        ListenerKind::Auto { cluster: None, .. }
    ));
    // http and tcp listeners get no detect_timeout, which would not load back.
    let plain = load(
        &AUTO
            .replace("protocol: auto", "protocol: http")
            .replace("    cluster: db\n    detect_timeout: 10ms\n", ""),
    );
    assert!(!to_yaml(&plain).contains("detect_timeout"));
}

#[test]
fn auto_listener_problems() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    protocol: auto
  - address: 127.0.0.1:8081
    protocol: auto
    routes: []
    cluster: missing
  - address: 127.0.0.1:8082
    protocol: auto
    routes: [{cluster: nope}]
    detect_timeout: 5ms
  - address: 127.0.0.1:8083
    protocol: auto
    routes: [{cluster: api}]
    detect_timeout: 1m1s
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:2:5: listeners[0]: missing required field 'routes' (an auto listener needs at least one route for the HTTP it detects)",
            "t.yaml:6:13: listeners[1].routes: an auto listener needs at least one route",
            "t.yaml:7:14: listeners[1].cluster: no cluster named 'missing' (clusters: api)",
            "t.yaml:10:24: listeners[2].routes[0].cluster: no cluster named 'nope' (clusters: api)",
            "t.yaml:11:21: listeners[2].detect_timeout: 5ms is out of range; expected 10ms to 1m",
            "t.yaml:15:21: listeners[3].detect_timeout: 1m1s is out of range; expected 10ms to 1m",
        ]
    );
}

#[test]
fn detect_timeout_bounds_are_accepted() {
    for bound in ["10ms", "60s"] {
        let yaml = AUTO.replace("detect_timeout: 10ms", &format!("detect_timeout: {bound}"));
        load(&yaml);
    }
}

#[test]
fn schema_knows_auto() {
    let schema = schema();
    let listener = &schema["definitions"]["Listener"];
    let detect = &listener["properties"]["detect_timeout"];
    assert_eq!(detect["default"], "1s");
    assert!(detect["description"].is_string());
    assert_eq!(
        schema["definitions"]["ListenerProtocol"]["enum"],
        serde_json::json!(["http", "tcp", "auto"])
    );
    // detect_timeout is only valid next to protocol: auto.
    assert_eq!(
        listener["dependencies"]["detect_timeout"]["properties"]["protocol"]["const"],
        "auto"
    );
}
