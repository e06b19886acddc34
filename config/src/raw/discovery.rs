//! A cluster's `type:` and `dns:`: where its endpoints come from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DurationValue, Field, List};

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterType {
    /// The `endpoints` listed in the file.
    Static,
    /// Resolved from DNS (`dns:`) and re-resolved as the records' TTL says.
    Dns,
}

/// DNS service discovery: the name to resolve, and how often. In Kubernetes, a headless
/// Service's name resolves to its ready pods' IPs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The name to resolve, e.g. `api.shop.svc.cluster.local` (for `record: srv`, the full
    /// SRV name, e.g. `_http._tcp.api.shop.svc.cluster.local`).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Field<String>,
    /// The endpoints' port, with `record: a` (and only then: SRV records carry their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Field<u32>,
    /// `a`: the name's A and AAAA records, one endpoint per address, all of weight 1.
    /// `srv`: its SRV records, for their targets' addresses, ports and weights (the lowest
    /// priority present only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Field<DnsRecordType>,
    /// The shortest wait before resolving again, whatever the records' TTL: a TTL of 0 must
    /// not turn into a query per millisecond.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ttl: Field<DurationValue>,
    /// The longest wait before resolving again, whatever the records' TTL: a long TTL must not
    /// keep gone endpoints for an hour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl: Field<DurationValue>,
    /// Nameservers to ask (`IP` or `IP:port`, port 53 when left out) instead of those in
    /// /etc/resolv.conf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<List<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsRecordType {
    /// A and AAAA records.
    A,
    /// SRV records.
    Srv,
}
