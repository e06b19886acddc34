//! Workload identities: SPIFFE IDs of the form
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, carried in a certificate's
//! URI SAN. Compared exactly, or by prefix on whole path segments (`/sa/web` never matches
//! `/sa/web2`).

use std::fmt;

/// A workload's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }
    }

    /// Parses `spiffe://td/ns/NS/sa/SA`, exactly that shape (lowercase scheme and trust
    /// domain, no query, fragment, port, user info, empty or dot segments).
    pub fn parse(uri: &str) -> Result<SpiffeId, String> {
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("'{uri}' is not a spiffe:// URI"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("'{uri}' has no path"))?;
        if !valid_trust_domain(td) {
            return Err(format!(
                "'{td}' is not a valid trust domain (lowercase letters, digits, '.', '-', '_')"
            ));
        }
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => {
                Ok(SpiffeId::new(td, ns, sa))
            }
            _ => Err(format!(
                "'{uri}' is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
            )),
        }
    }

    pub fn uri(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// A path segment as SPIFFE allows it (letters, digits, '.', '-', '_'), and not `.` or `..`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Whether `id` (a SPIFFE URI) is `pattern` exactly, or lies under it when `pattern` ends with
/// `/*` on whole segments: `spiffe://td/*` matches the trust domain, `spiffe://td/ns/shop/*`
/// the namespace. `spiffe://td/ns/shop/sa/web` never matches `.../sa/web2`, nor the reverse.
pub fn id_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => id
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1),
        None => pattern == id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_workload_shape() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "shop", "web"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
        for bad in [
            "https://cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web/extra",
            "spiffe://cluster.local/ns/shop/sa/",
            "spiffe://cluster.local/ns/../sa/web",
            "spiffe://Cluster.local/ns/shop/sa/web",
            "spiffe://cluster.local:8443/ns/shop/sa/web",
            "spiffe://cluster.local/ns/shop/sa/web?x=1",
            "spiffe:///ns/shop/sa/web",
            "spiffe://cluster.local/sa/web/ns/shop",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let web = "spiffe://td/ns/shop/sa/web";
        assert!(id_matches(web, web));
        assert!(!id_matches(web, "spiffe://td/ns/shop/sa/web2"));
        assert!(!id_matches("spiffe://td/ns/shop/sa/web2", web));
        assert!(id_matches("spiffe://td/ns/shop/*", web));
        assert!(!id_matches("spiffe://td/ns/sh/*", web));
        assert!(!id_matches(
            "spiffe://td/ns/shop/*",
            "spiffe://td/ns/shopping/sa/web"
        ));
        assert!(id_matches("spiffe://td/*", web));
        assert!(!id_matches("spiffe://td/*", "spiffe://td2/ns/shop/sa/web"));
        assert!(!id_matches("spiffe://td/ns/shop/*", "spiffe://td/ns/shop/"));
    }
}
