//! The mesh config the control plane reads: every YAML file in its config directory holds
//! some of the mesh's services. From them it builds each sidecar's proxy config.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Authorization, Cluster, Field, List, MtlsMode, Route};

/// One file of the mesh config. Services may be spread over any number of files; each name
/// is defined once in the whole directory.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Remora mesh configuration (one file of the control plane's directory)")]
pub struct MeshFile {
    /// The services of the mesh: each one's sidecar, and how other services reach it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<List<Service>>,
}

/// A service: the workload a sidecar runs beside, and how its callers reach it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique in the mesh. Sidecars say which service they serve with `--service`; callers
    /// reach it by this name as the request's host (`orders`, `orders.shop`,
    /// `orders.shop.svc`, `orders.shop.svc.cluster.local`).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// The Kubernetes namespace. Left out: `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Field<String>,
    /// Where the workload itself listens, as its sidecar reaches it, e.g. `127.0.0.1:8080`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Field<String>,
    /// The Kubernetes service account the workload runs as: its identity is
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service_account>`. Left out: the service's
    /// name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Field<String>,
    /// Mutual TLS on the sidecar's inbound listener, when the control plane issues
    /// certificates: `strict`, `permissive` (TLS or plaintext) or `disabled` (callers then
    /// connect in plaintext too). Left out: `permissive`, so a mesh can be adopted one service
    /// at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Field<MtlsMode>,
    /// Who may call this service, checked by its sidecar on every inbound request (by the
    /// caller's SPIFFE ID, path and method). Left out: everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Field<Authorization>,
    /// Ports of the workload that speak something other than HTTP (a database, a
    /// server-speaks-first protocol): connections to them are forwarded as opaque TCP, with
    /// no protocol detection, by this service's sidecar and by its callers' (still over mTLS
    /// between sidecars). In Kubernetes the `remora.io/opaque-ports` annotation adds to them
    /// for one workload. Left out: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque_ports: Option<List<u32>>,
    /// How the workload's calls to destinations outside the mesh leave its sidecar: `tcp`
    /// (as bytes, untouched) or `http` (HTTP proxied request by request, with metrics and
    /// access logs under `passthrough`; anything else as bytes, after the detect timeout of
    /// 1 s for a client that waits for the server to speak first). Left out: `tcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passthrough: Field<super::Passthrough>,
    /// The sidecar's inbound listener: traffic for the workload. Left out: `0.0.0.0:15006`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Field<String>,
    /// The sidecar's outbound listener: the workload's calls to `calls`. Left out:
    /// `127.0.0.1:15001`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Field<String>,
    /// The services this one may call. Its sidecar gets their routes and clusters, and no
    /// others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<List<String>>,
    /// How callers reach this service: a cluster (every field of `clusters[]` but `name`,
    /// which is the service's). Left out, the service cannot be called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Field<Cluster>,
    /// How callers' requests to this service are routed, most specific first. Routes without
    /// `match.hosts` match the service's names. Left out: every request goes to `cluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<List<Route>>,
    /// More clusters `routes` may send to, such as a canary for a traffic split. Names are
    /// unique in the mesh, and differ from every service's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<List<Cluster>>,
}
