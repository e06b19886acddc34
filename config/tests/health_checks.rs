//! `health_check:` (active probing) and `outlier_detection:` (passive ejection) under a cluster.

mod common;

use std::time::Duration;

use common::{BASE, errors};
use remora_config::model::{Config, HealthCheck, HealthCheckKind, OutlierDetection};
use remora_config::{defaults, load_str, schema, to_yaml};

fn load(yaml: &str) -> Config {
    load_str("t.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

const CHECKED: &str = "\
listeners: []
clusters:
  - name: web
    health_check:
      http: {path: /healthz, host: api.local, expected_statuses: ['200-299', 404]}
      interval: 2s
      jitter: 25%
      timeout: 500ms
      unhealthy_threshold: 5
      healthy_threshold: 1
      initial_state: unhealthy
    outlier_detection:
      consecutive_5xx: 3
      consecutive_gateway_failure: 2
      base_ejection_time: 10s
      max_ejection_time: 1m
      max_ejection_percent: 50%
      require_health_check_to_return: true
  - name: redis
    health_check:
      tcp: {send: \"PING\\r\\n\", expect: +PONG}
    outlier_detection: {enabled: false}
  - name: grpc
    health_check: {grpc: {service: helloworld.Greeter}}
  - name: plain
    health_check: {tcp: {}, interval: 1s, timeout: 999ms}
";

#[test]
fn health_checks_map_to_the_model() {
    let config = load(CHECKED);
    let check = |name: &str| config.cluster(name).unwrap().health_check.clone().unwrap();
    assert_eq!(
        check("web"),
        HealthCheck {
            kind: HealthCheckKind::Http {
                path: "/healthz".into(),
                host: Some("api.local".into()),
                statuses: vec![(200, 299), (404, 404)],
            },
            interval: Duration::from_secs(2),
            jitter: 0.25,
            timeout: Duration::from_millis(500),
            unhealthy_threshold: 5,
            healthy_threshold: 1,
            initially_healthy: false,
        }
    );
    assert_eq!(
        check("redis").kind,
        HealthCheckKind::Tcp {
            send: Some(b"PING\r\n".to_vec()),
            expect: Some(b"+PONG".to_vec()),
        }
    );
    assert_eq!(
        check("grpc").kind,
        HealthCheckKind::Grpc {
            service: "helloworld.Greeter".into()
        }
    );
    assert_eq!(
        check("plain").kind,
        HealthCheckKind::Tcp {
            send: None,
            expect: None
        }
    );
    assert_eq!(
        config.cluster("web").unwrap().outlier_detection,
        Some(OutlierDetection {
            consecutive_5xx: 3,
            consecutive_gateway_failure: 2,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 0.5,
            require_health_check_to_return: true,
        })
    );
    assert_eq!(config.cluster("redis").unwrap().outlier_detection, None);
}

#[test]
fn defaults_fill_every_left_out_setting() {
    // No sections: no health check, and outlier detection on with its defaults.
    let config = load(BASE);
    let api = config.cluster("api").unwrap();
    assert_eq!(api.health_check, None);
    assert_eq!(api.outlier_detection, Some(OutlierDetection::default()));
    let od = OutlierDetection::default();
    assert_eq!(od.consecutive_5xx, defaults::CONSECUTIVE_5XX);
    assert_eq!(
        od.consecutive_gateway_failure,
        defaults::CONSECUTIVE_GATEWAY_FAILURE
    );
    assert_eq!(od.base_ejection_time, defaults::BASE_EJECTION_TIME);
    assert_eq!(od.max_ejection_time, defaults::MAX_EJECTION_TIME);
    assert_eq!(od.max_ejection_percent, defaults::MAX_EJECTION_PERCENT);
    assert!(!od.require_health_check_to_return);
    // An empty section is the defaults too.
    let config = load(&format!("{BASE}    outlier_detection: {{}}\n"));
    assert_eq!(
        config.cluster("api").unwrap().outlier_detection,
        Some(OutlierDetection::default())
    );
    let config = load(&format!("{BASE}    health_check: {{http: {{path: /}}}}\n"));
    assert_eq!(
        config.cluster("api").unwrap().health_check,
        Some(HealthCheck {
            kind: HealthCheckKind::Http {
                path: "/".into(),
                host: None,
                statuses: defaults::EXPECTED_STATUSES.to_vec(),
            },
            interval: defaults::HEALTH_CHECK_INTERVAL,
            jitter: defaults::HEALTH_CHECK_JITTER,
            timeout: defaults::HEALTH_CHECK_TIMEOUT,
            unhealthy_threshold: defaults::UNHEALTHY_THRESHOLD,
            healthy_threshold: defaults::HEALTHY_THRESHOLD,
            initially_healthy: defaults::INITIALLY_HEALTHY,
        })
    );
    let config = load(&format!("{BASE}    health_check: {{grpc: {{}}}}\n"));
    assert_eq!(
        config
            .cluster("api")
            .unwrap()
            .health_check
            .as_ref()
            .unwrap()
            .kind,
        HealthCheckKind::Grpc {
            service: String::new()
        }
    );
}

#[test]
fn health_checks_round_trip_through_to_yaml() {
    let config = load(CHECKED);
    let yaml = to_yaml(&config);
    for expected in [
        "path: /healthz",
        "host: api.local",
        "- 200-299\n          - 404\n",
        "jitter: 25%",
        "initial_state: unhealthy",
        "send: \"PING\\r\\n\"",
        "service: helloworld.Greeter",
        "max_ejection_percent: 50%",
        "require_health_check_to_return: true",
        "outlier_detection:\n      enabled: false\n",
    ] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
    for (a, b) in config.clusters.iter().zip(&again.clusters) {
        assert_eq!(a.health_check, b.health_check, "{}", a.name);
        assert_eq!(a.outlier_detection, b.outlier_detection, "{}", a.name);
    }
}

#[test]
fn to_yaml_writes_default_outlier_detection_and_no_health_check() {
    let yaml = to_yaml(&load(BASE));
    assert!(
        yaml.contains(
            "    outlier_detection:
      enabled: true
      consecutive_5xx: 5
      consecutive_gateway_failure: 5
      base_ejection_time: 30s
      max_ejection_time: 5m
      max_ejection_percent: 10%
      require_health_check_to_return: false
"
        ),
        "{yaml}"
    );
    assert!(!yaml.contains("health_check:"), "{yaml}");
    // A configured check shows its defaults.
    let yaml = to_yaml(&load(&format!("{BASE}    health_check: {{tcp: {{}}}}\n")));
    assert!(
        yaml.contains(
            "    health_check:
      tcp: {}
      interval: 5s
      jitter: 10%
      timeout: 1s
      unhealthy_threshold: 3
      healthy_threshold: 2
      initial_state: healthy
"
        ),
        "{yaml}"
    );
}

#[test]
fn health_check_problems() {
    let yaml = "\
listeners: []
clusters:
  - name: a
    health_check:
      http: {path: healthz, host: 'a b', expected_statuses: ['299-200', 99, 2xx, '200-600']}
      jitter: 101%
      unhealthy_threshold: 0
      healthy_threshold: 101
      initial_state: sick
  - name: b
    health_check:
      http: {path: /healthz}
      tcp: {}
      interval: 50ms
      timeout: 2m
  - name: c
    health_check:
      interval: 1s
      timeout: 1s
  - name: d
    health_check:
      tcp: {send: '', expect: ''}
      interval: 500ms
  - name: e
    health_check: {http: {host: x, expected_statuses: []}}
  - name: f
    health_check: {http: {path: '/a b'}, grpc: {service: 5}}
";
    let expected = [
        "t.yaml:5:20: clusters[0].health_check.http.path: 'healthz' must start with '/'",
        "t.yaml:5:35: clusters[0].health_check.http.host: 'a b' is not a valid host; write a host name or IP, optionally with a port (api.local, api.local:8080)",
        "t.yaml:5:62: clusters[0].health_check.http.expected_statuses[0]: '299-200' is backwards; write '200-299'",
        "t.yaml:5:73: clusters[0].health_check.http.expected_statuses[1]: 99 is not an HTTP status; expected 100 to 599",
        "t.yaml:5:77: clusters[0].health_check.http.expected_statuses[2]: '2xx' is not a status or a range of statuses; write e.g. 200 or '200-299'",
        "t.yaml:5:82: clusters[0].health_check.http.expected_statuses[3]: 600 is not an HTTP status; expected 100 to 599",
        "t.yaml:6:15: clusters[0].health_check.jitter: 101% is out of range; expected 0% to 100%",
        "t.yaml:7:28: clusters[0].health_check.unhealthy_threshold: 0 is out of range; expected 1 to 100",
        "t.yaml:8:26: clusters[0].health_check.healthy_threshold: 101 is out of range; expected 1 to 100",
        "t.yaml:9:22: clusters[0].health_check.initial_state: unknown value 'sick', expected one of: healthy, unhealthy",
        "t.yaml:13:12: clusters[1].health_check.tcp: set only one of http, tcp or grpc",
        "t.yaml:14:17: clusters[1].health_check.interval: 50ms is out of range; expected 100ms to 1h",
        "t.yaml:15:16: clusters[1].health_check.timeout: 2m is out of range; expected 10ms to 1m",
        "t.yaml:18:7: clusters[2].health_check: set one of http, tcp or grpc",
        "t.yaml:19:16: clusters[2].health_check.timeout: 1s is not shorter than the interval (1s); a check must end before the next one starts",
        "t.yaml:22:19: clusters[3].health_check.tcp.send: empty 'send'; leave it out to send nothing",
        "t.yaml:22:31: clusters[3].health_check.tcp.expect: empty 'expect'; leave it out to accept any reply",
        "t.yaml:23:17: clusters[3].health_check.interval: 500ms is not longer than the timeout (1s, the default); a check must end before the next one starts",
        "t.yaml:25:26: clusters[4].health_check.http: missing required field 'path' (the path to request, e.g. /healthz)",
        "t.yaml:25:55: clusters[4].health_check.http.expected_statuses: an empty expected_statuses list accepts no status, so every check would fail; leave it out for any 2xx",
        "t.yaml:27:48: clusters[5].health_check.grpc: set only one of http, tcp or grpc",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn outlier_detection_problems() {
    let yaml = "\
listeners: []
clusters:
  - name: a
    outlier_detection:
      consecutive_5xx: 0
      consecutive_gateway_failure: 1001
      base_ejection_time: 2m
      max_ejection_time: 1m
      max_ejection_percent: 100.5%
      require_health_check_to_return: true
  - name: b
    outlier_detection: {base_ejection_time: 10m, max_ejection_time: 2h}
  - name: c
    outlier_detection: {base_ejection_time: 10m}
  - name: d
    outlier_detection: {enabled: false, require_health_check_to_return: true, consecutive_5xx: 0}
  - name: e
    health_check: {tcp: {}}
    outlier_detection: {require_health_check_to_return: true, enabled: maybe}
";
    let expected = [
        "t.yaml:5:24: clusters[0].outlier_detection.consecutive_5xx: 0 is out of range; expected 1 to 1000",
        "t.yaml:6:36: clusters[0].outlier_detection.consecutive_gateway_failure: 1001 is out of range; expected 1 to 1000",
        "t.yaml:8:26: clusters[0].outlier_detection.max_ejection_time: 1m is shorter than base_ejection_time (2m), which the first ejection already lasts",
        "t.yaml:9:29: clusters[0].outlier_detection.max_ejection_percent: 100.5% is out of range; expected 0% to 100%",
        "t.yaml:10:39: clusters[0].outlier_detection.require_health_check_to_return: 'require_health_check_to_return: true' needs a health_check on this cluster; without one, an ejected endpoint would never return",
        "t.yaml:12:69: clusters[1].outlier_detection.max_ejection_time: 2h is out of range; expected 1s to 1h",
        "t.yaml:14:45: clusters[2].outlier_detection.base_ejection_time: 10m is longer than max_ejection_time (5m, the default); raise max_ejection_time too",
        // Turned off, the settings are still checked (turning it back on must be safe), but
        // needing a health check no longer applies.
        "t.yaml:16:96: clusters[3].outlier_detection.consecutive_5xx: 0 is out of range; expected 1 to 1000",
        "t.yaml:19:72: clusters[4].outlier_detection.enabled: expected true or false, found 'maybe'",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn range_bounds_are_accepted() {
    for section in [
        "health_check: {tcp: {}, interval: 100ms, timeout: 10ms}",
        "health_check: {tcp: {}, interval: 1h, timeout: 1m}",
        "health_check: {tcp: {}, jitter: 0%, unhealthy_threshold: 1, healthy_threshold: 100}",
        "health_check: {tcp: {}, jitter: 100%, unhealthy_threshold: 100, healthy_threshold: 1}",
        "health_check: {http: {path: /, expected_statuses: [100, '100-599', 599]}}",
        "outlier_detection: {consecutive_5xx: 1, consecutive_gateway_failure: 1000}",
        "outlier_detection: {consecutive_5xx: 1000, consecutive_gateway_failure: 1}",
        "outlier_detection: {base_ejection_time: 1s, max_ejection_time: 1s, max_ejection_percent: 0%}",
        "outlier_detection: {base_ejection_time: 1h, max_ejection_time: 1h, max_ejection_percent: 100%}",
    ] {
        load(&format!("{BASE}    {section}\n"));
    }
}

#[test]
fn schema_knows_health_checks_and_outlier_detection() {
    let schema = schema();
    let defs = &schema["definitions"];
    let hc = &defs["HealthCheck"];
    let props = &hc["properties"];
    assert_eq!(props["interval"]["default"], "5s");
    assert_eq!(props["jitter"]["default"], "10%");
    assert_eq!(props["timeout"]["default"], "1s");
    assert_eq!(props["unhealthy_threshold"]["default"], 3);
    assert_eq!(props["unhealthy_threshold"]["maximum"], 100);
    assert_eq!(props["healthy_threshold"]["default"], 2);
    assert_eq!(props["initial_state"]["default"], "healthy");
    assert_eq!(hc["oneOf"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        defs["HttpHealthCheck"]["properties"]["expected_statuses"]["default"],
        serde_json::json!(["200-299"])
    );
    assert_eq!(
        defs["HttpHealthCheck"]["required"],
        serde_json::json!(["path"])
    );
    assert_eq!(
        defs["GrpcHealthCheck"]["properties"]["service"]["default"],
        ""
    );
    let od = &defs["OutlierDetection"]["properties"];
    assert_eq!(od["enabled"]["default"], true);
    assert_eq!(od["consecutive_5xx"]["default"], 5);
    assert_eq!(od["consecutive_5xx"]["maximum"], 1000);
    assert_eq!(od["consecutive_gateway_failure"]["default"], 5);
    assert_eq!(od["base_ejection_time"]["default"], "30s");
    assert_eq!(od["max_ejection_time"]["default"], "5m");
    assert_eq!(od["max_ejection_percent"]["default"], "10%");
    assert_eq!(od["require_health_check_to_return"]["default"], false);
    for (definition, props) in [("HealthCheck", props), ("OutlierDetection", od)] {
        for (field, value) in props.as_object().unwrap() {
            assert!(
                value["description"].is_string(),
                "{definition}.{field} has no description"
            );
        }
    }
}
