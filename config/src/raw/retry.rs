//! `retries:` (on a route or a cluster), and a cluster's `retry_budget:` and
//! `circuit_breakers:`: how failed requests are tried again, and what bounds the extra load.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ByteSize, DurationValue, Field, List, Percent, Toggle};

/// When and how a failed request is tried again. Fields left out take the defaults (on a
/// route too: not the cluster's values).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("if" = {
    "properties": {"retry_on": {"contains": {"const": "retriable-status-codes"}}},
    "required": ["retry_on"]
}))]
#[schemars(extend("then" = {"required": ["retriable_status_codes"]}))]
pub struct RetryPolicy {
    /// Attempts in all, the first one included: 1 turns retries off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Field<u32>,
    /// The failures that are retried: `connect-failure` and `refused-stream` (the upstream saw
    /// nothing, so always safe), `reset` (the connection broke before a whole response),
    /// `5xx`, `gateway-error` (502, 503, 504, and connect failures, resets, timeouts),
    /// `retriable-status-codes` (the statuses in `retriable_status_codes`), and the gRPC
    /// statuses `cancelled`, `deadline-exceeded`, `resource-exhausted`, `unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<List<RetryOn>>,
    /// With `retriable-status-codes` in `retry_on` (and only then): the response statuses to
    /// retry, e.g. `[409, 429]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retriable_status_codes: Option<List<u32>>,
    /// Time one attempt has until response headers; a slower attempt is abandoned and
    /// retried. The route's `timeout` still bounds all attempts together. Left out: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Field<DurationValue>,
    /// The wait before each retry: random, up to `base_interval` doubled for each attempt
    /// made so far, at most `max_interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Field<Backoff>,
    /// A `Retry-After` header (or gRPC `grpc-retry-pushback-ms`) from the upstream sets the
    /// wait before the retry instead of the backoff, up to this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retry_after: Field<DurationValue>,
    /// Request bodies up to this size are kept so they can be sent again; a longer body
    /// streams through and its request is not retried. `0` retries only bodiless requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_limit: Field<ByteSize>,
    /// `true`: also retry POST, PATCH and other non-idempotent requests on failures the
    /// upstream may have acted on (they may then run twice). They are always retried on
    /// `connect-failure` and `refused-stream`, where nothing reached the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_non_idempotent: Field<bool>,
    /// Send the request to a second endpoint when the first has not answered in this long
    /// (idempotent requests only); the first response wins. Cuts tail latency at the cost of
    /// extra load. Left out: no hedging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedge_after: Field<DurationValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    #[serde(rename = "5xx")]
    FiveXx,
    GatewayError,
    RetriableStatusCodes,
    Cancelled,
    DeadlineExceeded,
    ResourceExhausted,
    Unavailable,
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// The longest wait before the first retry; it doubles for each retry after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_interval: Field<DurationValue>,
    /// No wait is longer than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_interval: Field<DurationValue>,
}

/// Retries to this cluster may add at most `ratio` of its requests, plus `min_per_second`,
/// counted over `window`; past that, failures are returned instead of retried. This keeps
/// retries from multiplying the load on an upstream that is already failing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed as a share of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Field<Percent>,
    /// Retries per second allowed on top of the ratio, so that a cluster with little
    /// traffic can still retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_per_second: Field<u32>,
    /// The span over which requests and retries are counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Field<DurationValue>,
}

/// Limits past which requests to this cluster fail at once (503) instead of piling up.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Connections open to the cluster's endpoints, all together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Field<u32>,
    /// Requests waiting for a connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Field<u32>,
    /// Requests in flight to the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests: Field<u32>,
    /// Retries in flight to the cluster. The retry budget bounds how many retries are made;
    /// this bounds how many wait at once when the upstream slows down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Field<u32>,
    /// Stop sending requests to the cluster after this many failures in a row, then let one
    /// through now and then to see whether it has recovered. Off unless set; `true` uses
    /// the default settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Field<Toggle<FailureBreaker>>,
}

/// Opens after `threshold` failed requests in a row: requests then fail at once. After
/// `base_open`, one trial request is let through; if it succeeds the breaker closes, if it
/// fails the breaker opens again for twice as long, up to `max_open`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureBreaker {
    /// Failed requests in a row that open the breaker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Field<u32>,
    /// How long the breaker stays open the first time; each time a trial request fails, the
    /// time doubles (with jitter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_open: Field<DurationValue>,
    /// The breaker never stays open longer than this before a trial request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open: Field<DurationValue>,
}
