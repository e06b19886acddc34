//! `fault:` on a route (delays and errors injected on purpose) and `rate_limit:` on a route
//! or listener: traffic the proxy holds back or fails by design, not because an upstream did.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DurationValue, Field, HeaderMatch, List, Percent, Rate, Timestamp};

/// Delays and errors injected into matching requests, to test how clients cope with a slow
/// or failing service. At least one of `delay`, `abort` or `header_triggered: true`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("anyOf" = [
    {"required": ["delay"]},
    {"required": ["abort"]},
    {"properties": {"header_triggered": {"const": true}}, "required": ["header_triggered"]}
]))]
pub struct Fault {
    /// Hold a share of the requests for a while before sending them upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Field<FaultDelay>,
    /// Answer a share of the requests with an error, without sending them upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Field<FaultAbort>,
    /// Only requests with all of these headers get faults (the same conditions as a route's
    /// `match.headers`). Left out: every request on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<List<HeaderMatch>>,
    /// The fault turns itself off at this moment: a UTC date and time such as
    /// `2026-12-01T00:00:00Z`, so a forgotten experiment does not run forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Field<Timestamp>,
    /// `true`: a request may ask for its own fault with `x-remora-fault-delay-ms: <ms>` or
    /// `x-remora-fault-abort: <status>`. Any client can send those headers, so turn this on
    /// only where clients are trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_triggered: Field<bool>,
}

/// `fixed`, or `min` and `max` for a delay drawn at random between them; and `percent`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["fixed"]}, {"required": ["min", "max"]}]))]
pub struct FaultDelay {
    /// Every delayed request waits this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Field<DurationValue>,
    /// The shortest delay (with `max`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Field<DurationValue>,
    /// The longest delay (with `min`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Field<DurationValue>,
    /// The share of matching requests to delay, e.g. `10%`; `100%` for all.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Field<Percent>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// The status the proxy answers with, e.g. `503`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Field<u16>,
    /// gRPC requests get this gRPC status instead (e.g. `14`, UNAVAILABLE). Left out, they
    /// get `http_status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Field<u32>,
    /// The share of matching requests to fail, e.g. `5%`; `100%` for all.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Field<Percent>,
}

/// A token bucket: requests (on a tcp or auto listener, connections) past the rate are
/// refused; `burst` lets short spikes through.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// How many are let through, per second, minute or hour: `100/s`, `2.5/s`, `600/m`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Field<Rate>,
    /// How many may go through at once after a quiet spell. Left out: one second's worth
    /// of the rate (at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Field<u32>,
}
