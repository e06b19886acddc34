//! Asking DNS: a hickory resolver per dns cluster, and its answer turned into endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use remora_config::model::{DnsDiscovery, DnsRecord, Endpoint};

/// A resolution that gave no endpoint: the last good answer stays.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
    #[error("{0}")]
    Lookup(String),
    #[error("no usable records")]
    Empty,
}

/// What one resolution gave: endpoints sorted by address (DNS servers rotate their answers; a
/// reordering alone must not look like a change) and the answer's shortest TTL.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub endpoints: Vec<Endpoint>,
    pub ttl: Duration,
}

/// A resolver for `dns`: its `servers`, or the system's (/etc/resolv.conf, /etc/hosts).
/// Without a cache: the discovery loop decides when to ask again, and must get fresh answers
/// when it does.
pub fn resolver(dns: &DnsDiscovery) -> Result<TokioResolver, DnsError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if dns.servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?
    } else {
        let servers = dns
            .servers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                server
            })
            .collect();
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            provider,
        );
        let options = builder.options_mut();
        // Named servers are the whole truth: /etc/hosts would shadow them.
        options.use_hosts_file = ResolveHosts::Never;
        // resolv.conf's defaults (5 s, 2 attempts) are for a lookup someone waits on; the
        // discovery loop retries on its own schedule.
        options.timeout = QUERY_TIMEOUT;
        options.attempts = 1;
        builder
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.cache_size = 0;
    builder.build().map_err(|e| DnsError::Setup(e.to_string()))
}

/// How long one query to a named server may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one whole resolution may take (SRV: the targets' lookups included), whatever the
/// resolver's own retries: past it, the resolution has failed and the last answer stays.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves `dns` once, within [`RESOLVE_TIMEOUT`].
pub async fn resolve(resolver: &TokioResolver, dns: &DnsDiscovery) -> Result<Answer, DnsError> {
    tokio::time::timeout(RESOLVE_TIMEOUT, resolve_unbounded(resolver, dns))
        .await
        .unwrap_or_else(|_| {
            Err(DnsError::Lookup(format!(
                "no answer within {RESOLVE_TIMEOUT:?}"
            )))
        })
}

async fn resolve_unbounded(
    resolver: &TokioResolver,
    dns: &DnsDiscovery,
) -> Result<Answer, DnsError> {
    let lookup_error = |e: hickory_resolver::net::NetError| DnsError::Lookup(e.to_string());
    match dns.record {
        DnsRecord::Ip { port } => {
            let lookup = resolver
                .lookup_ip(dns.name.as_str())
                .await
                .map_err(lookup_error)?;
            let ttl = min_ttl(lookup.as_lookup().answers().iter().map(|r| r.ttl));
            let addrs = lookup.iter().map(|ip| (SocketAddr::new(ip, port), 1));
            answer(addrs, ttl)
        }
        DnsRecord::Srv => {
            let lookup = resolver
                .srv_lookup(dns.name.as_str())
                .await
                .map_err(lookup_error)?;
            let mut ttl = min_ttl(lookup.answers().iter().map(|r| r.ttl));
            let srvs: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            // RFC 2782: the lowest priority is used; higher ones are fallbacks for when it is
            // unreachable, which health checks and outlier detection handle here.
            let Some(best) = srvs.iter().map(|s| s.priority).min() else {
                return Err(DnsError::Empty);
            };
            let mut addrs = Vec::new();
            for srv in srvs.iter().filter(|s| s.priority == best) {
                // A target that does not resolve is left out; the others still serve.
                match resolver.lookup_ip(srv.target.clone()).await {
                    Ok(ips) => {
                        let t = min_ttl(ips.as_lookup().answers().iter().map(|r| r.ttl));
                        ttl = ttl.min(t);
                        let weight = u32::from(srv.weight);
                        addrs.extend(ips.iter().map(|ip| (SocketAddr::new(ip, srv.port), weight)));
                    }
                    Err(e) => {
                        tracing::warn!(name = %dns.name, target = %srv.target, error = %e, "SRV target does not resolve");
                    }
                }
            }
            answer(addrs.into_iter(), ttl)
        }
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> Duration {
    Duration::from_secs(u64::from(ttls.min().unwrap_or(0)))
}

/// Endpoints from `(address, weight)` pairs: an address given twice (two SRV records for one
/// target) gets the combined weight; all weights 0 (allowed in SRV, which then picks among them
/// at random) become 1 each, so the cluster still takes traffic.
fn answer(
    addrs: impl Iterator<Item = (SocketAddr, u32)>,
    ttl: Duration,
) -> Result<Answer, DnsError> {
    let mut by_addr: BTreeMap<SocketAddr, u32> = BTreeMap::new();
    for (addr, weight) in addrs {
        let w = by_addr.entry(addr).or_default();
        *w = w.saturating_add(weight);
    }
    if by_addr.is_empty() {
        return Err(DnsError::Empty);
    }
    let all_zero = by_addr.values().all(|w| *w == 0);
    let endpoints = by_addr
        .into_iter()
        .map(|(address, weight)| Endpoint {
            address,
            weight: if all_zero { 1 } else { weight },
        })
        .collect();
    Ok(Answer { endpoints, ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_are_sorted_merged_and_never_all_zero() {
        let ttl = Duration::from_secs(5);
        let a = answer(
            [
                (addr("10.0.0.2:80"), 3),
                (addr("10.0.0.1:80"), 1),
                (addr("10.0.0.2:80"), 2),
            ]
            .into_iter(),
            ttl,
        )
        .unwrap();
        assert_eq!(
            a.endpoints,
            [
                Endpoint {
                    address: addr("10.0.0.1:80"),
                    weight: 1
                },
                Endpoint {
                    address: addr("10.0.0.2:80"),
                    weight: 5
                },
            ]
        );
        let zero = answer(
            [(addr("10.0.0.1:80"), 0), (addr("10.0.0.2:80"), 0)].into_iter(),
            ttl,
        );
        assert!(zero.unwrap().endpoints.iter().all(|e| e.weight == 1));
        assert!(matches!(
            answer(std::iter::empty(), ttl),
            Err(DnsError::Empty)
        ));
    }
}
