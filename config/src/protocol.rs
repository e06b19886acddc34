//! The messages between the control plane and its sidecars (see docs/control-plane.md).
//!
//! A sidecar asks for its config with `POST /v1/watch` and a [`WatchRequest`]; the control
//! plane answers with a [`WatchResponse`] as soon as it has a version the sidecar does not,
//! or `304 Not Modified` after holding the request for `hold_ms` with nothing new. Each
//! request also reports what the sidecar did with the version it last received: applied
//! (ACK), or refused with a reason (NACK).

use serde::{Deserialize, Serialize};

/// The path of the watch.
pub const WATCH_PATH: &str = "/v1/watch";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The sidecar's name, unique in the mesh (in Kubernetes, the pod's).
    pub node: String,
    pub service: String,
    #[serde(default)]
    pub namespace: String,
    /// The version last received; empty on the first request.
    #[serde(default)]
    pub version: String,
    /// Why that version was refused (a NACK); `None` means it was applied (an ACK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The longest the control plane may hold the request, in milliseconds.
    #[serde(default)]
    pub hold_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// The content hash of the mesh config this came from.
    pub version: String,
    /// Grows with every accepted change of the mesh config.
    pub generation: u64,
    /// The sidecar's proxy config, as YAML.
    pub config: String,
    /// Every root the mesh trusts now, PEM; empty when the control plane issues no
    /// certificates.
    #[serde(default)]
    pub trust_bundle: String,
}

/// Where a sidecar reports the health of its endpoints: on a change (checked every second)
/// and at least every [`HEALTH_REFRESH_SECS`], so `remora explain` can show it.
pub const HEALTH_PATH: &str = "/v1/health";

/// A sidecar reports its endpoints' health at least this often, changed or not.
pub const HEALTH_REFRESH_SECS: u64 = 30;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub node: String,
    pub endpoints: Vec<EndpointHealth>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHealth {
    pub cluster: String,
    pub address: String,
    /// As the sidecar's `/clusters` says: `healthy`, `unhealthy`, `ejected`, `drained`...
    pub state: String,
}

/// Where a sidecar asks for its workload certificate (on the same port as the watch).
pub const CERTIFICATE_PATH: &str = "/v1/certificate";

/// A certificate signing request: the sidecar made the key pair and keeps the private key;
/// the control plane signs the identity the token proves, whatever the CSR itself asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRequest {
    /// The bootstrap token (locally), or in Kubernetes the service-account token.
    pub token: String,
    pub namespace: String,
    pub service_account: String,
    /// PKCS#10, PEM.
    pub csr: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The leaf first, then any intermediates, PEM.
    pub certificate_chain: String,
    /// Every root the mesh trusts now, PEM (more than one during a root rollover).
    pub trust_bundle: String,
    /// The leaf's validity, seconds since the epoch.
    pub not_before_unix: u64,
    pub not_after_unix: u64,
    /// The leaf's serial number, hex.
    pub serial: String,
}
