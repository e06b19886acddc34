//! The JSON Schema of the YAML surface, for editors (see docs/config-schema.md).
//!
//! Generated from the raw types, then given the defaults and integer ranges from
//! [`crate::defaults`], so that an editor's hover shows the same values the proxy uses.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::defaults::{self, ranges};
use crate::emit;
use crate::model;
use crate::raw;
use crate::units::{format_duration, format_percent};

pub(crate) fn schema() -> Value {
    // Draft 7: the newest draft that every YAML editor plugin understands fully.
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<raw::Config>().to_value();
    if let Some(definitions) = schema.get_mut("definitions") {
        for (definition, property, default) in defaults() {
            if let Some(p) =
                definitions.pointer_mut(&format!("/{definition}/properties/{property}"))
            {
                p["default"] = default;
            }
        }
        for (definition, property, (min, max)) in integer_ranges() {
            if let Some(p) =
                definitions.pointer_mut(&format!("/{definition}/properties/{property}"))
            {
                p["minimum"] = min;
                p["maximum"] = max;
            }
        }
        let codes = "/RetryPolicy/properties/retriable_status_codes/items";
        if let Some(items) = definitions.pointer_mut(codes) {
            let (min, max) = range(ranges::HTTP_STATUS);
            items["minimum"] = min;
            items["maximum"] = max;
        }
    }
    schema
}

/// `(definition, property, default)` for every field that has a default.
fn defaults() -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    let sections = [
        (
            "Runtime",
            to_json(emit::runtime(&model::Runtime::default())),
        ),
        (
            "AccessLog",
            to_json(emit::access_log(&model::AccessLog::default())),
        ),
        ("Limits", to_json(emit::limits(&model::Limits::default()))),
    ];
    for (definition, value) in sections {
        if let Value::Object(fields) = value {
            out.extend(fields.into_iter().map(|(k, v)| (definition, k, v)));
        }
    }
    let duration = |d| json!(format_duration(d));
    out.extend([
        (
            "Listener",
            "protocol".into(),
            to_json(defaults::LISTENER_PROTOCOL),
        ),
        (
            "Listener",
            "direction".into(),
            json!(defaults::LISTENER_DIRECTION.as_str()),
        ),
        (
            "Listener",
            "detect_timeout".into(),
            duration(defaults::DETECT_TIMEOUT),
        ),
        ("Route", "timeout".into(), duration(defaults::ROUTE_TIMEOUT)),
        ("Backend", "weight".into(), json!(defaults::WEIGHT)),
        (
            "Cluster",
            "protocol".into(),
            json!(defaults::UPSTREAM_PROTOCOL.as_str()),
        ),
        (
            "Cluster",
            "connect_timeout".into(),
            duration(defaults::CONNECT_TIMEOUT),
        ),
        (
            "Cluster",
            "idle_timeout".into(),
            duration(defaults::UPSTREAM_IDLE_TIMEOUT),
        ),
        ("Endpoint", "weight".into(), json!(defaults::WEIGHT)),
        ("Cluster", "type".into(), to_json(defaults::CLUSTER_TYPE)),
        (
            "DnsDiscovery",
            "record".into(),
            to_json(defaults::DNS_RECORD),
        ),
        (
            "DnsDiscovery",
            "min_ttl".into(),
            duration(defaults::DNS_MIN_TTL),
        ),
        (
            "DnsDiscovery",
            "max_ttl".into(),
            duration(defaults::DNS_MAX_TTL),
        ),
    ]);
    out.extend(cluster_defaults());
    out.extend(resilience_defaults());
    out
}

/// Defaults of `retries`, `retry_budget`, `circuit_breakers` and `fault`.
fn resilience_defaults() -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    let retries = model::RetryPolicy::default();
    let breakers = model::CircuitBreakers::default();
    let sections = [
        ("RetryPolicy", to_json(emit::retry_policy(&retries))),
        (
            "RetryBudget",
            to_json(emit::retry_budget(&model::RetryBudget::default())),
        ),
        (
            "CircuitBreakers",
            to_json(emit::circuit_breakers(&breakers)),
        ),
        (
            "FailureBreaker",
            to_json(emit::failure_breaker(&model::FailureBreaker::default())),
        ),
    ];
    for (definition, value) in sections {
        if let Value::Object(fields) = value {
            out.extend(fields.into_iter().map(|(k, v)| (definition, k, v)));
        }
    }
    let duration = |d| json!(format_duration(d));
    out.extend([
        (
            "Backoff",
            "base_interval".into(),
            duration(defaults::BACKOFF_BASE_INTERVAL),
        ),
        (
            "Backoff",
            "max_interval".into(),
            duration(defaults::BACKOFF_MAX_INTERVAL),
        ),
        (
            "Fault",
            "header_triggered".into(),
            json!(defaults::FAULT_HEADER_TRIGGERED),
        ),
    ]);
    out
}

/// Defaults of `load_balancer`, `health_check` and `outlier_detection`.
fn cluster_defaults() -> Vec<(&'static str, String, Value)> {
    let mut out = Vec::new();
    let sections = [
        (
            "LoadBalancer",
            to_json(emit::load_balancer(&model::LoadBalancer::default())),
        ),
        (
            "OutlierDetection",
            to_json(emit::outlier_detection(Some(
                &model::OutlierDetection::default(),
            ))),
        ),
    ];
    for (definition, value) in sections {
        if let Value::Object(fields) = value {
            out.extend(fields.into_iter().map(|(k, v)| (definition, k, v)));
        }
    }
    let duration = |d| json!(format_duration(d));
    let percent = |p| json!(format_percent(p));
    let statuses = emit::http_health_check("/", None, defaults::EXPECTED_STATUSES);
    out.extend([
        (
            "OutlierDetection",
            "enabled".into(),
            json!(defaults::OUTLIER_DETECTION_ENABLED),
        ),
        (
            "LoadBalancer",
            "choice_count".into(),
            json!(defaults::CHOICE_COUNT),
        ),
        ("LoadBalancer", "peak_ewma".into(), json!(false)),
        (
            "LoadBalancer",
            "minimum_ring_size".into(),
            json!(defaults::MINIMUM_RING_SIZE),
        ),
        (
            "LoadBalancer",
            "table_size".into(),
            json!(defaults::MAGLEV_TABLE_SIZE),
        ),
        (
            "PeakEwma",
            "decay".into(),
            duration(defaults::PEAK_EWMA_DECAY),
        ),
        (
            "PeakEwma",
            "default_rtt".into(),
            duration(defaults::PEAK_EWMA_DEFAULT_RTT),
        ),
        (
            "HealthCheck",
            "interval".into(),
            duration(defaults::HEALTH_CHECK_INTERVAL),
        ),
        (
            "HealthCheck",
            "jitter".into(),
            percent(defaults::HEALTH_CHECK_JITTER),
        ),
        (
            "HealthCheck",
            "timeout".into(),
            duration(defaults::HEALTH_CHECK_TIMEOUT),
        ),
        (
            "HealthCheck",
            "unhealthy_threshold".into(),
            json!(defaults::UNHEALTHY_THRESHOLD),
        ),
        (
            "HealthCheck",
            "healthy_threshold".into(),
            json!(defaults::HEALTHY_THRESHOLD),
        ),
        (
            "HealthCheck",
            "initial_state".into(),
            json!(if defaults::INITIALLY_HEALTHY {
                "healthy"
            } else {
                "unhealthy"
            }),
        ),
        (
            "HttpHealthCheck",
            "expected_statuses".into(),
            to_json(statuses.expected_statuses),
        ),
        ("GrpcHealthCheck", "service".into(), json!("")),
    ]);
    out
}

/// Plain integer fields whose range the schema can state (sizes and durations are strings).
fn integer_ranges() -> Vec<(&'static str, &'static str, (Value, Value))> {
    let breaker = |property| ("CircuitBreakers", property, range(ranges::CIRCUIT_BREAKER));
    vec![
        ("Runtime", "workers", range(ranges::WORKERS)),
        (
            "Limits",
            "max_request_headers",
            range(ranges::MAX_REQUEST_HEADERS),
        ),
        (
            "Limits",
            "max_concurrent_streams",
            range(ranges::MAX_CONCURRENT_STREAMS),
        ),
        ("LoadBalancer", "choice_count", range(ranges::CHOICE_COUNT)),
        ("DnsDiscovery", "port", (json!(1), json!(65535))),
        (
            "LoadBalancer",
            "minimum_ring_size",
            range(ranges::MINIMUM_RING_SIZE),
        ),
        // Only the bounds: that the size must be prime is beyond JSON Schema.
        (
            "LoadBalancer",
            "table_size",
            range(ranges::MAGLEV_TABLE_SIZE),
        ),
        (
            "HealthCheck",
            "unhealthy_threshold",
            range(ranges::HEALTH_THRESHOLD),
        ),
        (
            "HealthCheck",
            "healthy_threshold",
            range(ranges::HEALTH_THRESHOLD),
        ),
        (
            "OutlierDetection",
            "consecutive_5xx",
            range(ranges::CONSECUTIVE_FAILURES),
        ),
        (
            "OutlierDetection",
            "consecutive_gateway_failure",
            range(ranges::CONSECUTIVE_FAILURES),
        ),
        ("RetryPolicy", "max_attempts", range(ranges::MAX_ATTEMPTS)),
        (
            "RetryBudget",
            "min_per_second",
            range(ranges::RETRY_BUDGET_MIN_PER_SECOND),
        ),
        breaker("max_connections"),
        breaker("max_pending_requests"),
        breaker("max_requests"),
        breaker("max_retries"),
        (
            "FailureBreaker",
            "threshold",
            range(ranges::BREAKER_THRESHOLD),
        ),
        (
            "FaultAbort",
            "http_status",
            range(ranges::FAULT_HTTP_STATUS),
        ),
        ("FaultAbort", "grpc_status", range(ranges::GRPC_STATUS)),
        ("RateLimit", "burst", range(ranges::RATE_LIMIT_BURST)),
    ]
}

fn range<N: serde::Serialize>((min, max): (N, N)) -> (Value, Value) {
    (json!(min), json!(max))
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
