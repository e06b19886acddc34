//! `authorization:` on a listener or route: who may call what.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Field, List};

/// Rules checked on each request (and each TCP connection): a request matching a `deny`
/// rule is refused; otherwise, when there are `allow` rules, it must match one of them.
/// Refused requests get 403 (`x-remora-error: unauthorized`); refused TCP connections are
/// closed. Paths are matched after normalization (see `docs/identity.md`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<List<AuthzRule>>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// `allow` or `deny`.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Field<AuthzAction>,
    /// Who the rule is about. Left out: every caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Field<AuthzFrom>,
    /// What the rule is about. Left out: every request (and every TCP connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Field<AuthzTo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthzAction {
    Allow,
    Deny,
}

/// The caller: any of these.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzFrom {
    /// SPIFFE IDs proved by an mTLS client certificate: exact
    /// (`spiffe://cluster.local/ns/shop/sa/web`), a namespace (`spiffe://cluster.local/ns/shop/*`)
    /// or a trust domain (`spiffe://cluster.local/*`), matched on whole path segments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identities: Option<List<String>>,
    /// `true`: callers without a verified identity (plaintext, on a permissive listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Field<bool>,
}

/// The request: all of these that are given.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzTo {
    /// Paths, any of: exact (`/admin`), or a prefix on whole segments (`/admin/*` matches
    /// `/admin` and everything under it). Compared case-insensitively, on the normalized path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<List<String>>,
    /// Methods, any of: `GET`, `POST`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<List<String>>,
    /// The ports the connection was for, any of: the original destination's port when
    /// iptables redirected it (a sidecar's inbound listener takes every port of the pod), else
    /// the listener's own. Known for opaque TCP too, so a rule about paths on the HTTP port
    /// (`ports: [8080], paths: [/admin]`) leaves the pod's other ports alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<List<u32>>,
}
