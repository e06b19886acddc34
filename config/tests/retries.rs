//! `retries:` on a route or cluster, and a cluster's `retry_budget:` and `circuit_breakers:`.

mod common;

use std::time::Duration;

use common::{BASE, errors, load, ms, routes};
use remora_config::model::{CircuitBreakers, FailureBreaker, RetryBudget, RetryOn, RetryPolicy};
use remora_config::{defaults, load_str, schema, to_yaml};

const RETRYING: &str = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - name: everything
        cluster: api
        timeout: 5s
        retries:
          max_attempts: 3
          retry_on: [connect-failure, refused-stream, reset, 5xx, gateway-error, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, unavailable]
          retriable_status_codes: [409, 429]
          per_try_timeout: 2s
          backoff: {base_interval: 10ms, max_interval: 1s}
          max_retry_after: 0s
          buffer_limit: 1MiB
          retry_non_idempotent: true
          hedge_after: 50ms
      - name: defaults
        cluster: api
        retries: {}
      - name: inherits
        cluster: api
clusters:
  - name: api
    retries: {max_attempts: 1}
    retry_budget: {ratio: 50%, min_per_second: 0, window: 1m}
    circuit_breakers:
      max_connections: 10
      max_pending_requests: 20
      max_requests: 30
      max_retries: 3
      consecutive_failures: {threshold: 20, base_open: 5s, max_open: 1m}
  - name: on
    circuit_breakers: {consecutive_failures: true}
  - name: partial
    circuit_breakers: {max_requests: 5, consecutive_failures: {threshold: 3}}
";

#[test]
fn retries_map_to_the_model() {
    let config = load(RETRYING);
    let routes = routes(&config);
    assert_eq!(
        routes[0].retries,
        Some(RetryPolicy {
            max_attempts: 3,
            retry_on: vec![
                RetryOn::ConnectFailure,
                RetryOn::RefusedStream,
                RetryOn::Reset,
                RetryOn::FiveXx,
                RetryOn::GatewayError,
                RetryOn::RetriableStatusCodes,
                RetryOn::Cancelled,
                RetryOn::DeadlineExceeded,
                RetryOn::ResourceExhausted,
                RetryOn::Unavailable,
            ],
            retriable_status_codes: vec![409, 429],
            per_try_timeout: Some(ms(2000)),
            base_interval: ms(10),
            max_interval: ms(1000),
            max_retry_after: Duration::ZERO,
            buffer_limit: 1 << 20,
            retry_non_idempotent: true,
            hedge_after: Some(ms(50)),
        })
    );
    // A route's `retries: {}` is the defaults, not the cluster's policy.
    assert_eq!(routes[1].retries, Some(RetryPolicy::default()));
    assert_eq!(routes[2].retries, None);
    let api = config.cluster("api").unwrap();
    assert_eq!(api.retries.max_attempts, 1);
    assert_eq!(api.retries.retry_on, defaults::RETRY_ON);
    assert_eq!(
        api.retry_budget,
        RetryBudget {
            ratio: 0.5,
            min_per_second: 0,
            window: Duration::from_secs(60),
        }
    );
    assert_eq!(
        api.circuit_breakers,
        CircuitBreakers {
            max_connections: 10,
            max_pending_requests: 20,
            max_requests: 30,
            max_retries: 3,
            consecutive_failures: Some(FailureBreaker {
                threshold: 20,
                base_open: Duration::from_secs(5),
                max_open: Duration::from_secs(60),
            }),
        }
    );
    let breakers = |name: &str| config.cluster(name).unwrap().circuit_breakers;
    assert_eq!(
        breakers("on").consecutive_failures,
        Some(FailureBreaker::default())
    );
    assert_eq!(
        breakers("partial"),
        CircuitBreakers {
            max_requests: 5,
            consecutive_failures: Some(FailureBreaker {
                threshold: 3,
                ..FailureBreaker::default()
            }),
            ..CircuitBreakers::default()
        }
    );
}

#[test]
fn defaults_fill_every_left_out_setting() {
    let config = load(BASE);
    assert_eq!(routes(&config)[0].retries, None);
    let api = config.cluster("api").unwrap();
    let r = &api.retries;
    assert_eq!(*r, RetryPolicy::default());
    assert_eq!(r.max_attempts, defaults::MAX_ATTEMPTS);
    assert_eq!(
        r.retry_on,
        [RetryOn::ConnectFailure, RetryOn::RefusedStream]
    );
    assert!(r.retriable_status_codes.is_empty());
    assert_eq!(r.per_try_timeout, defaults::PER_TRY_TIMEOUT);
    assert_eq!(r.base_interval, defaults::BACKOFF_BASE_INTERVAL);
    assert_eq!(r.max_interval, defaults::BACKOFF_MAX_INTERVAL);
    assert_eq!(r.max_retry_after, defaults::MAX_RETRY_AFTER);
    assert_eq!(r.buffer_limit, 64 * 1024);
    assert_eq!(r.retry_non_idempotent, defaults::RETRY_NON_IDEMPOTENT);
    assert_eq!(r.hedge_after, defaults::HEDGE_AFTER);
    assert_eq!(
        api.retry_budget,
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    );
    assert_eq!(
        api.circuit_breakers,
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 64,
            consecutive_failures: None,
        }
    );
    assert_eq!(
        FailureBreaker::default(),
        FailureBreaker {
            threshold: defaults::BREAKER_THRESHOLD,
            base_open: defaults::BREAKER_BASE_OPEN,
            max_open: defaults::BREAKER_MAX_OPEN,
        }
    );
    // Empty sections are the defaults too; a half-written backoff keeps the other default.
    let config = load(&format!(
        "{BASE}    retries: {{backoff: {{max_interval: 1s}}}}\n    retry_budget: {{}}\n    \
         circuit_breakers: {{consecutive_failures: false}}\n"
    ));
    let api = config.cluster("api").unwrap();
    assert_eq!(api.retries.base_interval, defaults::BACKOFF_BASE_INTERVAL);
    assert_eq!(api.retries.max_interval, ms(1000));
    assert_eq!(api.retry_budget, RetryBudget::default());
    assert_eq!(api.circuit_breakers, CircuitBreakers::default());
}

#[test]
fn to_yaml_writes_cluster_defaults_and_route_retries_only_when_set() {
    let yaml = to_yaml(&load(BASE));
    assert!(
        yaml.contains(
            "    retries:
      max_attempts: 2
      retry_on:
        - connect-failure
        - refused-stream
      backoff:
        base_interval: 25ms
        max_interval: 250ms
      max_retry_after: 10s
      buffer_limit: 64KiB
      retry_non_idempotent: false
    retry_budget:
      ratio: 20%
      min_per_second: 10
      window: 10s
    circuit_breakers:
      max_connections: 1024
      max_pending_requests: 1024
      max_requests: 1024
      max_retries: 64
      consecutive_failures: false
"
        ),
        "{yaml}"
    );
    // The route takes its cluster's retries: nothing to write under the route.
    assert_eq!(yaml.matches(" retries:").count(), 1, "{yaml}");
    assert!(!yaml.contains("per_try_timeout"), "{yaml}");
    assert!(!yaml.contains("hedge_after"), "{yaml}");
}

#[test]
fn retries_round_trip_through_to_yaml() {
    let config = load(RETRYING);
    let yaml = to_yaml(&config);
    for expected in [
        "          retriable_status_codes:\n            - 409\n            - 429\n",
        "per_try_timeout: 2s",
        "max_retry_after: 0s",
        "buffer_limit: 1MiB",
        "retry_non_idempotent: true",
        "hedge_after: 50ms",
        "ratio: 50%",
        "window: 1m",
        "      consecutive_failures:\n        threshold: 20\n        base_open: 5s\n        \
         max_open: 1m\n",
    ] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
    for (a, b) in routes(&config).iter().zip(routes(&again)) {
        assert_eq!(a.retries, b.retries, "{}", a.name);
    }
    assert_eq!(config.clusters, again.clusters);
}

#[test]
fn retry_problems() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: api
        timeout: 1s
        retries:
          max_attempts: 0
          retry_on: [5xx, connect-failur, 5xx, 4xx]
          retriable_status_codes: [99, 429, 429, 600]
          per_try_timeout: 2s
          backoff: {base_interval: 1s, max_interval: 500ms}
          max_retry_after: 11m
          buffer_limit: 17MiB
          retry_non_idempotent: sometimes
          hedge_after: 0s
      - cluster: api
        retries: {retry_on: [retriable-status-codes, reset]}
      - cluster: api
        retries: {retriable_status_codes: [409]}
      - cluster: api
        retries: {retry_on: [], per_try_timeout: 20s}
      - cluster: api
        timeout: forever
        retries: {retry_on: [reset], retriable_status_codes: [], per_try_timeout: 1h}
      - cluster: api
        retries: {retry_on: [retriable-status-codes], retriable_status_codes: []}
clusters:
  - name: api
    retries:
      max_attempts: 11
      per_try_timeout: 2h
      backoff: {base_interval: 11s, max_interval: 6m}
  - name: b
    retries: {backoff: {base_interval: 1s}, retry_on: [unavailable], retriable_status_codes: [503]}
";
    let expected = [
        "t.yaml:7:25: listeners[0].routes[0].retries.max_attempts: 0 is out of range; expected 1 to 10",
        "t.yaml:8:27: listeners[0].routes[0].retries.retry_on[1]: unknown value 'connect-failur', expected one of: connect-failure, refused-stream, reset, 5xx, gateway-error, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, unavailable (did you mean 'connect-failure'?)",
        "t.yaml:8:43: listeners[0].routes[0].retries.retry_on[2]: '5xx' is listed twice (also listeners[0].routes[0].retries.retry_on[0]); list it once",
        "t.yaml:8:48: listeners[0].routes[0].retries.retry_on[3]: unknown value '4xx', expected one of: connect-failure, refused-stream, reset, 5xx, gateway-error, retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, unavailable (did you mean '5xx'?)",
        // retry_on is invalid, so whether it lists retriable-status-codes is unknown: the
        // codes are checked, not refused.
        "t.yaml:9:36: listeners[0].routes[0].retries.retriable_status_codes[0]: 99 is not an HTTP status; expected 100 to 599",
        "t.yaml:9:45: listeners[0].routes[0].retries.retriable_status_codes[2]: 429 is listed twice (also listeners[0].routes[0].retries.retriable_status_codes[1]); list it once",
        "t.yaml:9:50: listeners[0].routes[0].retries.retriable_status_codes[3]: 600 is not an HTTP status; expected 100 to 599",
        "t.yaml:10:28: listeners[0].routes[0].retries.per_try_timeout: 2s is longer than the route's timeout (1s), which bounds all attempts together; one attempt could never use it",
        "t.yaml:11:54: listeners[0].routes[0].retries.backoff.max_interval: 500ms is shorter than base_interval (1s), which the first retry may already wait",
        "t.yaml:12:28: listeners[0].routes[0].retries.max_retry_after: 11m is out of range; expected 0s to 10m",
        "t.yaml:13:25: listeners[0].routes[0].retries.buffer_limit: 17MiB is out of range; expected 0B to 16MiB",
        "t.yaml:14:33: listeners[0].routes[0].retries.retry_non_idempotent: expected true or false, found 'sometimes'",
        "t.yaml:15:24: listeners[0].routes[0].retries.hedge_after: 0s is out of range; expected 1ms to 1m",
        "t.yaml:17:18: listeners[0].routes[1].retries: missing required field 'retriable_status_codes' (retry_on lists retriable-status-codes; say which statuses, e.g. [409, 429])",
        "t.yaml:19:43: listeners[0].routes[2].retries.retriable_status_codes: 'retriable_status_codes' only applies with retriable-status-codes in retry_on, and the default retry_on (connect-failure, refused-stream) does not list it; add it there, or remove this list",
        "t.yaml:21:29: listeners[0].routes[3].retries.retry_on: an empty retry_on list retries nothing; to turn retries off, set max_attempts: 1",
        "t.yaml:21:50: listeners[0].routes[3].retries.per_try_timeout: 20s is longer than the route's timeout (15s, the default), which bounds all attempts together; one attempt could never use it",
        // An invalid route timeout is not compared with.
        "t.yaml:23:18: listeners[0].routes[4].timeout: 'forever' is not a duration; write e.g. '250ms', '1.5s' or '1m30s'",
        "t.yaml:24:62: listeners[0].routes[4].retries.retriable_status_codes: 'retriable_status_codes' only applies with retriable-status-codes in retry_on, and retry_on does not list it; add it there, or remove this list",
        "t.yaml:26:79: listeners[0].routes[5].retries.retriable_status_codes: an empty retriable_status_codes list retries no status; list the statuses to retry, e.g. [409, 429]",
        "t.yaml:30:21: clusters[0].retries.max_attempts: 11 is out of range; expected 1 to 10",
        // No route timeout to compare with on a cluster: only the range.
        "t.yaml:31:24: clusters[0].retries.per_try_timeout: 2h is out of range; expected 1ms to 1h",
        "t.yaml:32:32: clusters[0].retries.backoff.base_interval: 11s is out of range; expected 1ms to 10s",
        "t.yaml:32:51: clusters[0].retries.backoff.max_interval: 6m is out of range; expected 1ms to 5m",
        "t.yaml:34:40: clusters[1].retries.backoff.base_interval: 1s is longer than max_interval (250ms, the default); raise max_interval too",
        "t.yaml:34:94: clusters[1].retries.retriable_status_codes: 'retriable_status_codes' only applies with retriable-status-codes in retry_on, and retry_on does not list it; add it there, or remove this list",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn budget_and_breaker_problems() {
    let yaml = "\
listeners: []
clusters:
  - name: a
    retry_budget: {ratio: 120%, min_per_second: 100001, window: 11m}
    circuit_breakers:
      max_connections: 0
      max_pending_requests: 1000001
      max_requests: lots
      max_retries: -1
      consecutive_failures: {threshold: 0, base_open: 2m, max_open: 1m}
  - name: b
    retry_budget: {ratio: 0.2, window: 500ms}
    circuit_breakers: {consecutive_failures: {base_open: 2m}}
  - name: c
    circuit_breakers: {consecutive_failures: {threshold: 10001, base_open: 50ms, max_open: 2h}}
  - name: d
    circuit_breakers: {consecutive_failures: maybe}
    retry_budget: 20%
";
    let expected = [
        "t.yaml:4:27: clusters[0].retry_budget.ratio: 120% is out of range; expected 0% to 100%",
        "t.yaml:4:49: clusters[0].retry_budget.min_per_second: 100001 is out of range; expected 0 to 100000",
        "t.yaml:4:65: clusters[0].retry_budget.window: 11m is out of range; expected 1s to 10m",
        "t.yaml:6:24: clusters[0].circuit_breakers.max_connections: 0 is out of range; expected 1 to 1000000",
        "t.yaml:7:29: clusters[0].circuit_breakers.max_pending_requests: 1000001 is out of range; expected 1 to 1000000",
        "t.yaml:8:21: clusters[0].circuit_breakers.max_requests: expected a whole number from 0 to 4294967295, found 'lots'",
        "t.yaml:9:20: clusters[0].circuit_breakers.max_retries: -1 is out of range; expected 0 to 4294967295",
        "t.yaml:10:41: clusters[0].circuit_breakers.consecutive_failures.threshold: 0 is out of range; expected 1 to 10000",
        "t.yaml:10:69: clusters[0].circuit_breakers.consecutive_failures.max_open: 1m is shorter than base_open (2m), which the breaker already stays open the first time",
        "t.yaml:12:27: clusters[1].retry_budget.ratio: '0.2' has no '%'; write a percentage, e.g. '10%'",
        "t.yaml:12:40: clusters[1].retry_budget.window: 500ms is out of range; expected 1s to 10m",
        "t.yaml:13:58: clusters[1].circuit_breakers.consecutive_failures.base_open: 2m is longer than max_open (1m, the default); raise max_open too",
        "t.yaml:15:58: clusters[2].circuit_breakers.consecutive_failures.threshold: 10001 is out of range; expected 1 to 10000",
        "t.yaml:15:76: clusters[2].circuit_breakers.consecutive_failures.base_open: 50ms is out of range; expected 100ms to 1h",
        "t.yaml:15:92: clusters[2].circuit_breakers.consecutive_failures.max_open: 2h is out of range; expected 100ms to 1h",
        "t.yaml:17:46: clusters[3].circuit_breakers.consecutive_failures: expected true, false or a mapping of settings, found 'maybe'",
        "t.yaml:18:19: clusters[3].retry_budget: expected a mapping with fields ratio, min_per_second, window; found '20%'",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn misspelled_fields_are_not_also_missing() {
    let yaml = format!(
        "{BASE}    retries: {{retry_on: [retriable-status-codes], retriable_status_code: [409]}}\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:51: clusters[0].retries.retriable_status_code: unknown field 'retriable_status_code', expected one of: max_attempts, retry_on, retriable_status_codes, per_try_timeout, backoff, max_retry_after, buffer_limit, retry_non_idempotent, hedge_after (did you mean 'retriable_status_codes'?)"
        ]
    );
}

#[test]
fn range_bounds_are_accepted() {
    for section in [
        "retries: {max_attempts: 1, per_try_timeout: 1ms, hedge_after: 1ms, max_retry_after: 0s}",
        "retries: {max_attempts: 10, per_try_timeout: 1h, hedge_after: 1m, max_retry_after: 10m}",
        "retries: {buffer_limit: 0, backoff: {base_interval: 1ms, max_interval: 1ms}}",
        "retries: {buffer_limit: 16MiB, backoff: {base_interval: 10s, max_interval: 5m}}",
        "retries: {retry_on: [retriable-status-codes], retriable_status_codes: [100, 599]}",
        "retry_budget: {ratio: 0%, min_per_second: 0, window: 1s}",
        "retry_budget: {ratio: 100%, min_per_second: 100000, window: 10m}",
        "circuit_breakers: {max_connections: 1, max_pending_requests: 1, max_requests: 1, max_retries: 1}",
        "circuit_breakers: {max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000, max_retries: 1000000}",
        "circuit_breakers: {consecutive_failures: {threshold: 1, base_open: 100ms, max_open: 100ms}}",
        "circuit_breakers: {consecutive_failures: {threshold: 10000, base_open: 1h, max_open: 1h}}",
    ] {
        load(&format!("{BASE}    {section}\n"));
    }
    // A route's per-try timeout may equal its timeout.
    load(&BASE.replace(
        "      - cluster: api\n",
        "      - cluster: api\n        timeout: 2s\n        retries: {per_try_timeout: 2s}\n",
    ));
}

#[test]
fn schema_knows_retries_and_breakers() {
    let schema = schema();
    let defs = &schema["definitions"];
    let retries = &defs["RetryPolicy"];
    let props = &retries["properties"];
    assert_eq!(props["max_attempts"]["default"], 2);
    assert_eq!(props["max_attempts"]["minimum"], 1);
    assert_eq!(props["max_attempts"]["maximum"], 10);
    assert_eq!(
        props["retry_on"]["default"],
        serde_json::json!(["connect-failure", "refused-stream"])
    );
    assert_eq!(props["retriable_status_codes"]["items"]["maximum"], 599);
    assert_eq!(props["max_retry_after"]["default"], "10s");
    assert_eq!(props["buffer_limit"]["default"], "64KiB");
    assert_eq!(props["retry_non_idempotent"]["default"], false);
    assert!(props["per_try_timeout"].get("default").is_none());
    assert_eq!(
        retries["then"]["required"],
        serde_json::json!(["retriable_status_codes"])
    );
    assert_eq!(
        defs["RetryOn"]["enum"].as_array().map(Vec::len),
        Some(10),
        "{}",
        defs["RetryOn"]
    );
    let backoff = &defs["Backoff"]["properties"];
    assert_eq!(backoff["base_interval"]["default"], "25ms");
    assert_eq!(backoff["max_interval"]["default"], "250ms");
    let budget = &defs["RetryBudget"]["properties"];
    assert_eq!(budget["ratio"]["default"], "20%");
    assert_eq!(budget["min_per_second"]["default"], 10);
    assert_eq!(budget["min_per_second"]["maximum"], 100_000);
    assert_eq!(budget["window"]["default"], "10s");
    let breakers = &defs["CircuitBreakers"]["properties"];
    for (field, default) in [
        ("max_connections", 1024),
        ("max_pending_requests", 1024),
        ("max_requests", 1024),
        ("max_retries", 64),
    ] {
        assert_eq!(breakers[field]["default"], default, "{field}");
        assert_eq!(breakers[field]["minimum"], 1, "{field}");
        assert_eq!(breakers[field]["maximum"], 1_000_000, "{field}");
    }
    assert_eq!(breakers["consecutive_failures"]["default"], false);
    let breaker = &defs["FailureBreaker"]["properties"];
    assert_eq!(breaker["threshold"]["default"], 7);
    assert_eq!(breaker["base_open"]["default"], "1s");
    assert_eq!(breaker["max_open"]["default"], "1m");
    for definition in [
        "RetryPolicy",
        "Backoff",
        "RetryBudget",
        "CircuitBreakers",
        "FailureBreaker",
    ] {
        for (field, value) in defs[definition]["properties"].as_object().unwrap() {
            assert!(
                value["description"].is_string(),
                "{definition}.{field} has no description"
            );
        }
    }
    for (definition, field) in [
        ("Route", "retries"),
        ("Cluster", "retries"),
        ("Cluster", "retry_budget"),
        ("Cluster", "circuit_breakers"),
    ] {
        assert!(
            defs[definition]["properties"][field]["description"].is_string(),
            "{definition}.{field}"
        );
    }
}
