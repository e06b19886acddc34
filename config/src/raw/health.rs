//! `health_check:` and `outlier_detection:` under a cluster: which endpoints get traffic.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DurationValue, Field, List, Percent, StatusRange};

/// Active health checking: the proxy probes every endpoint on a timer and sends requests only
/// to endpoints that pass. Exactly one of `http`, `tcp` or `grpc`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [{"required": ["http"]}, {"required": ["tcp"]}, {"required": ["grpc"]}]))]
pub struct HealthCheck {
    /// Send `GET path`; the endpoint is healthy if the status is one of `expected_statuses`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Field<HttpHealthCheck>,
    /// Open a TCP connection; optionally send bytes and check the reply. `tcp: {}` only
    /// connects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Field<TcpHealthCheck>,
    /// Call the standard gRPC health service (`grpc.health.v1.Health/Check`); the endpoint is
    /// healthy if it answers SERVING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Field<GrpcHealthCheck>,
    /// Time between checks of one endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Field<DurationValue>,
    /// Each interval is made longer or shorter by a random amount up to this share, so that
    /// proxies started together do not all check at the same moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Field<Percent>,
    /// A check without an answer for this long fails. Shorter than `interval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Field<DurationValue>,
    /// Failed checks in a row that take a healthy endpoint out of service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Field<u32>,
    /// Passed checks in a row that put an unhealthy endpoint back in service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Field<u32>,
    /// What an endpoint is before its first check: `healthy` (traffic flows at once, as after
    /// a restart under load) or `unhealthy` (no traffic until a check passes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_state: Field<InitialState>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    /// The path (and query) to request, e.g. `/healthz`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Field<String>,
    /// The Host header to send; left out, the endpoint's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Field<String>,
    /// Statuses that mean healthy: codes (`204`) and inclusive ranges (`"200-299"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_statuses: Option<List<StatusRange>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {
    /// Bytes to send once connected (YAML escapes work in double quotes: `"PING\r\n"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Field<String>,
    /// The reply must start with these bytes. Left out, connecting is enough.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Field<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service name to ask about; `""` asks about the server as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Field<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    Healthy,
    Unhealthy,
}

/// Passive health checking: endpoints that fail real requests are taken out of service for
/// a while. On unless `enabled: false`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// `false` turns ejection off for this cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Field<bool>,
    /// 5xx responses in a row that eject an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_5xx: Field<u32>,
    /// Gateway failures in a row (connect failure, reset or timeout) that eject an endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_failure: Field<u32>,
    /// The first ejection lasts this long; each further ejection of the same endpoint lasts
    /// this much longer than the one before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Field<DurationValue>,
    /// No ejection lasts longer than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Field<DurationValue>,
    /// At most this share of the cluster's endpoints is ejected at once (one endpoint always
    /// may be), so a cluster-wide problem does not eject everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Field<Percent>,
    /// `true`: an ejected endpoint returns only once its time is up and a health check has
    /// passed. Needs `health_check` on the cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_health_check_to_return: Field<bool>,
}
