//! `fault:` on a route, and `rate_limit:` on a route or listener.

mod common;

use common::{BASE, errors, load, ms, routes};
use remora_config::model::{FaultAbort, FaultDelay, HeaderValueMatch, RateLimit};
use remora_config::{defaults, load_str, schema, to_yaml};

const FAULTY: &str = "\
listeners:
  - address: 127.0.0.1:8080
    rate_limit: {rate: 100/s, burst: 200}
    routes:
      - name: both
        cluster: api
        fault:
          delay: {fixed: 100ms, percent: 10%}
          abort: {http_status: 503, grpc_status: 14, percent: 5%}
          headers: [{name: X-Chaos, exact: '1'}]
          expires: 2026-12-01T00:00:00Z
          header_triggered: false
        rate_limit: {rate: 2.5/s}
      - name: range
        cluster: api
        fault: {delay: {min: 50ms, max: 200ms, percent: 100%}}
        rate_limit: {rate: 10/m}
      - name: abort
        cluster: api
        fault: {abort: {http_status: 200, percent: 0.5%}}
        rate_limit: {rate: 1/h, burst: 3}
      - name: triggered
        cluster: api
        fault: {header_triggered: true}
      - name: plain
        cluster: api
  - address: 127.0.0.1:5432
    protocol: tcp
    cluster: api
    rate_limit: {rate: 50/s}
  - address: 127.0.0.1:8081
    protocol: auto
    routes: [{cluster: api}]
    rate_limit: {rate: 1000000000/s}
clusters:
  - name: api
";

#[test]
fn faults_map_to_the_model() {
    let config = load(FAULTY);
    let routes = routes(&config);
    let both = routes[0].fault.as_ref().unwrap();
    assert_eq!(
        both.delay,
        Some(FaultDelay {
            min: ms(100),
            max: ms(100),
            percent: 0.1,
        })
    );
    assert_eq!(
        both.abort,
        Some(FaultAbort {
            http_status: 503,
            grpc_status: Some(14),
            percent: 0.05,
        })
    );
    assert_eq!(both.headers.len(), 1);
    assert_eq!(both.headers[0].name, "x-chaos");
    assert!(matches!(&both.headers[0].value, HeaderValueMatch::Exact(v) if v == "1"));
    assert_eq!(both.expires_at, Some(1_796_083_200));
    assert!(!both.header_triggered);
    let range = routes[1].fault.as_ref().unwrap();
    assert_eq!(
        range.delay,
        Some(FaultDelay {
            min: ms(50),
            max: ms(200),
            percent: 1.0,
        })
    );
    assert_eq!(range.abort, None);
    assert!(range.headers.is_empty());
    assert_eq!(range.expires_at, None);
    let abort = routes[2].fault.as_ref().unwrap();
    assert_eq!(abort.delay, None);
    assert_eq!(
        abort.abort,
        Some(FaultAbort {
            http_status: 200,
            grpc_status: None,
            percent: 0.005,
        })
    );
    let triggered = routes[3].fault.as_ref().unwrap();
    assert!(triggered.header_triggered);
    assert!(triggered.delay.is_none() && triggered.abort.is_none());
    assert!(routes[4].fault.is_none());
}

#[test]
fn rate_limits_map_to_the_model() {
    let config = load(FAULTY);
    let limit = |rate, burst| Some(RateLimit { rate, burst });
    assert_eq!(config.listeners[0].rate_limit, limit(100.0, 200));
    let routes = routes(&config);
    // Left out, the burst is a second's worth of the rate, rounded up, at least 1.
    assert_eq!(routes[0].rate_limit, limit(2.5, 3));
    assert_eq!(routes[1].rate_limit, limit(10.0 / 60.0, 1));
    assert_eq!(routes[2].rate_limit, limit(1.0 / 3600.0, 3));
    assert_eq!(routes[4].rate_limit, None);
    // On tcp and auto listeners too.
    assert_eq!(config.listeners[1].rate_limit, limit(50.0, 50));
    assert_eq!(config.listeners[2].rate_limit, limit(1e9, 1_000_000_000));
    assert_eq!(load(BASE).listeners[0].rate_limit, None);
    assert_eq!(defaults::rate_limit_burst(0.001), 1);
    assert_eq!(defaults::rate_limit_burst(1.0), 1);
    assert_eq!(defaults::rate_limit_burst(1.01), 2);
}

#[test]
fn faults_and_rate_limits_round_trip_through_to_yaml() {
    let config = load(FAULTY);
    let yaml = to_yaml(&config);
    for expected in [
        "          delay:\n            fixed: 100ms\n            percent: 10%\n",
        "          abort:\n            http_status: 503\n            grpc_status: 14\n            \
         percent: 5%\n",
        "          headers:\n            - name: x-chaos\n              exact: \"1\"\n",
        "expires: \"2026-12-01T00:00:00Z\"",
        "          delay:\n            min: 50ms\n            max: 200ms\n            percent: \
         100%\n",
        "          header_triggered: true\n",
        // The burst is always written, the default included.
        "        rate_limit:\n          rate: 2.5/s\n          burst: 3\n",
        "        rate_limit:\n          rate: 10/m\n          burst: 1\n",
        "        rate_limit:\n          rate: 1/h\n          burst: 3\n",
        "    rate_limit:\n      rate: 50/s\n      burst: 50\n",
    ] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
    for (a, b) in routes(&config).iter().zip(routes(&again)) {
        let (fa, fb) = (a.fault.as_ref(), b.fault.as_ref());
        assert_eq!(fa.map(|f| f.delay), fb.map(|f| f.delay), "{}", a.name);
        assert_eq!(fa.map(|f| f.abort), fb.map(|f| f.abort), "{}", a.name);
        assert_eq!(fa.map(|f| f.expires_at), fb.map(|f| f.expires_at));
        assert_eq!(a.rate_limit, b.rate_limit, "{}", a.name);
    }
    for (a, b) in config.listeners.iter().zip(&again.listeners) {
        assert_eq!(a.rate_limit, b.rate_limit, "{}", a.name);
    }
}

#[test]
fn to_yaml_leaves_out_faults_and_limits_that_are_not_set() {
    let yaml = to_yaml(&load(BASE));
    assert!(!yaml.contains("fault:"), "{yaml}");
    assert!(!yaml.contains("rate_limit:"), "{yaml}");
}

#[test]
fn fault_problems() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: api
        fault:
          delay: {fixed: 2h, min: 1s, percent: 10}
          abort: {http_status: 199, grpc_status: 17, percent: 101%}
          headers: [{name: 'x chaos', exact: '1'}]
          expires: 2026-12-01
      - cluster: api
        fault: {header_triggered: false}
      - cluster: api
        fault: {delay: {min: 2s, max: 1s, percent: 10%}, expires: '2026-12-01T01:00:00+01:00'}
      - cluster: api
        fault: {delay: {max: 1s, percent: 1%}, abort: {percent: 5%}, expires: 2026-02-30T00:00:00Z}
      - cluster: api
        fault: {delay: {percent: 5%}, abort: {http_status: 503}, expires: '2026-12-01T00:00:00'}
      - cluster: api
        fault: {dealy: {fixed: 1s, percent: 5%}}
      - cluster: api
        fault: {abort: {http_status: 503, percent: 5%}, expires: 1796083200}
clusters:
  - name: api
";
    let expected = [
        // Both a fixed delay and a range: which was meant is unknown, so neither is checked.
        "t.yaml:6:35: listeners[0].routes[0].fault.delay.min: set either 'fixed' or 'min' and 'max', not both",
        "t.yaml:6:48: listeners[0].routes[0].fault.delay.percent: '10' has no '%'; write a percentage, e.g. '10%'",
        "t.yaml:7:32: listeners[0].routes[0].fault.abort.http_status: 199 is out of range; expected 200 to 599",
        "t.yaml:7:50: listeners[0].routes[0].fault.abort.grpc_status: 17 is out of range; expected 0 to 16",
        "t.yaml:7:63: listeners[0].routes[0].fault.abort.percent: 101% is out of range; expected 0% to 100%",
        "t.yaml:8:28: listeners[0].routes[0].fault.headers[0].name: 'x chaos' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        "t.yaml:9:20: listeners[0].routes[0].fault.expires: '2026-12-01' has no time of day; write e.g. '2026-12-01T00:00:00Z'",
        "t.yaml:11:16: listeners[0].routes[1].fault: this fault does nothing; set delay, abort or header_triggered: true",
        "t.yaml:13:39: listeners[0].routes[2].fault.delay.max: 1s is shorter than min (2s)",
        "t.yaml:13:67: listeners[0].routes[2].fault.expires: '2026-12-01T01:00:00+01:00' is not in UTC; write the time in UTC with a 'Z', e.g. '2026-12-01T00:00:00Z'",
        "t.yaml:15:30: listeners[0].routes[3].fault.delay.max: 'max' needs 'min' too, for a delay drawn between them; or write 'fixed' for one delay",
        "t.yaml:15:55: listeners[0].routes[3].fault.abort: missing required field 'http_status' (the status the proxy answers with, e.g. 503)",
        "t.yaml:15:79: listeners[0].routes[3].fault.expires: '2026-02-30T00:00:00Z' is not a valid date and time",
        "t.yaml:17:24: listeners[0].routes[4].fault.delay: set fixed, or min and max",
        "t.yaml:17:46: listeners[0].routes[4].fault.abort: missing required field 'percent' (the share of matching requests to fail, e.g. 10%; 100% for all)",
        "t.yaml:17:75: listeners[0].routes[4].fault.expires: '2026-12-01T00:00:00' has no time zone; add 'Z' for UTC, e.g. '2026-12-01T00:00:00Z'",
        // A misspelled delay is not also "does nothing".
        "t.yaml:19:17: listeners[0].routes[5].fault.dealy: unknown field 'dealy', expected one of: delay, abort, headers, expires, header_triggered (did you mean 'delay'?)",
        "t.yaml:21:66: listeners[0].routes[6].fault.expires: '1796083200' is not a timestamp; write a UTC date and time, e.g. '2026-12-01T00:00:00Z'",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn rate_limit_problems() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    rate_limit: {rate: 100, burst: 0}
    routes:
      - cluster: api
        rate_limit: {rate: 0/s}
      - cluster: api
        rate_limit: {rate: 1000000001/s, burst: -1}
      - cluster: api
        rate_limit: {rate: 100/d}
      - cluster: api
        rate_limit: {burst: 10}
      - cluster: api
        rate_limit: {rate: 1e3/s, brust: 5}
  - address: 127.0.0.1:5432
    protocol: tcp
    cluster: api
    rate_limit: 100/s
clusters:
  - name: api
";
    let expected = [
        "t.yaml:3:24: listeners[0].rate_limit.rate: '100' has no unit; write e.g. '100/s' or '100/m'",
        "t.yaml:3:36: listeners[0].rate_limit.burst: a burst of 0 lets nothing through; expected at least 1",
        "t.yaml:6:28: listeners[0].routes[0].rate_limit.rate: 0/s lets nothing through; the rate must be above 0",
        "t.yaml:8:28: listeners[0].routes[1].rate_limit.rate: 1000000001/s is out of range; expected at most 1000000000/s",
        "t.yaml:8:49: listeners[0].routes[1].rate_limit.burst: -1 is out of range; expected 0 to 4294967295",
        "t.yaml:10:28: listeners[0].routes[2].rate_limit.rate: unknown unit 'd' in '100/d'; use s, m or h (per second, minute or hour)",
        "t.yaml:12:21: listeners[0].routes[3].rate_limit: missing required field 'rate' (how many are let through, e.g. 100/s)",
        "t.yaml:14:28: listeners[0].routes[4].rate_limit.rate: '1e3/s' is not a rate; write e.g. '100/s', '2.5/s' or '30/m'",
        "t.yaml:14:35: listeners[0].routes[4].rate_limit.brust: unknown field 'brust', expected one of: rate, burst (did you mean 'burst'?)",
        "t.yaml:18:17: listeners[1].rate_limit: expected a mapping with fields rate, burst; found '100/s'",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn range_bounds_are_accepted() {
    let route = |section: &str| {
        BASE.replace(
            "      - cluster: api\n",
            &format!("      - cluster: api\n        {section}\n"),
        )
    };
    for section in [
        "fault: {delay: {fixed: 0s, percent: 0%}, abort: {http_status: 200, grpc_status: 0, percent: 0%}}",
        "fault: {delay: {fixed: 1h, percent: 100%}, abort: {http_status: 599, grpc_status: 16, percent: 100%}}",
        "fault: {delay: {min: 0s, max: 0s, percent: 1%}}",
        "fault: {delay: {min: 1h, max: 1h, percent: 1%}}",
        "fault: {abort: {http_status: 503, percent: 1%}, expires: 1970-01-01T00:00:00Z}",
        "fault: {abort: {http_status: 503, percent: 1%}, expires: 9999-12-31T23:59:59.000z}",
        "rate_limit: {rate: 0.001/h, burst: 1}",
        "rate_limit: {rate: 1000000000/s, burst: 4294967295}",
    ] {
        load(&route(section));
    }
}

#[test]
fn schema_knows_faults_and_rate_limits() {
    let schema = schema();
    let defs = &schema["definitions"];
    let fault = &defs["Fault"];
    assert_eq!(fault["anyOf"].as_array().map(Vec::len), Some(3));
    assert_eq!(fault["properties"]["header_triggered"]["default"], false);
    assert_eq!(
        fault["properties"]["expires"]["format"], "date-time",
        "{fault}"
    );
    let delay = &defs["FaultDelay"];
    assert_eq!(delay["oneOf"].as_array().map(Vec::len), Some(2));
    assert_eq!(delay["required"], serde_json::json!(["percent"]));
    let abort = &defs["FaultAbort"];
    assert_eq!(
        abort["required"],
        serde_json::json!(["http_status", "percent"])
    );
    assert_eq!(abort["properties"]["http_status"]["minimum"], 200);
    assert_eq!(abort["properties"]["http_status"]["maximum"], 599);
    assert_eq!(abort["properties"]["grpc_status"]["maximum"], 16);
    let limit = &defs["RateLimit"];
    assert_eq!(limit["required"], serde_json::json!(["rate"]));
    assert_eq!(limit["properties"]["burst"]["minimum"], 1);
    let pattern = limit["properties"]["rate"]["pattern"].as_str().unwrap();
    let rate = regex::Regex::new(pattern).unwrap();
    assert!(rate.is_match("100/s") && rate.is_match("2.5/m") && !rate.is_match("100"));
    for definition in ["Fault", "FaultDelay", "FaultAbort", "RateLimit"] {
        for (field, value) in defs[definition]["properties"].as_object().unwrap() {
            assert!(
                value["description"].is_string(),
                "{definition}.{field} has no description"
            );
        }
    }
    for (definition, field) in [
        ("Route", "fault"),
        ("Route", "rate_limit"),
        ("Listener", "rate_limit"),
    ] {
        assert!(
            defs[definition]["properties"][field]["description"].is_string(),
            "{definition}.{field}"
        );
    }
}
