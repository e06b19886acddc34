//! A cluster's `type:` and `dns:`: DNS service discovery.

use super::{Bound, Cx, addr, elements, in_order, join, pos_of};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, ClusterType, DnsRecordType, Pos};

/// The cluster's discovery, reporting a `dns:` without `type: dns`, a `type: dns` without
/// `dns:`, and endpoints listed for a cluster that resolves its own. `None` if invalid.
pub(super) fn discovery(
    cx: &Cx,
    raw: &raw::Cluster,
    pos: Pos,
    path: &str,
) -> Option<model::Discovery> {
    let kind = match &raw.kind {
        None => defaults::CLUSTER_TYPE,
        Some(item) => *item.get()?,
    };
    match kind {
        ClusterType::Static => {
            if let Some(dns) = &raw.dns {
                let msg = "dns is only used with `type: dns`; add it, or remove dns";
                cx.report(dns.pos, &join(path, "dns"), msg);
                return None;
            }
            Some(model::Discovery::Static)
        }
        ClusterType::Dns => {
            let mut valid = true;
            if let Some(list) = &raw.endpoints {
                let msg = "endpoints are not used with `type: dns`: DNS gives them; remove \
                           endpoints, or use `type: static`";
                cx.report(list.pos, &join(path, "endpoints"), msg);
                valid = false;
            }
            let why = " (type is dns: the name to resolve, e.g. {name: api.internal, port: 8080})";
            let item = cx.required(&raw.dns, pos, path, "dns", why)?;
            let dns = dns(cx, item.get()?, item.pos, &join(path, "dns"));
            valid.then_some(model::Discovery::Dns(dns?))
        }
    }
}

fn dns(cx: &Cx, raw: &raw::DnsDiscovery, pos: Pos, path: &str) -> Option<model::DnsDiscovery> {
    let name = cx
        .required(&raw.name, pos, path, "name", "")
        .and_then(|item| dns_name(cx, item.get()?, item.pos, &join(path, "name")));
    let record = record(cx, raw, pos, path);
    let ttl = |field, name, default| Bound {
        field,
        name,
        value: cx.duration(field, &join(path, name), ranges::DNS_TTL, default),
        range: ranges::DNS_TTL,
    };
    let min_ttl = ttl(&raw.min_ttl, "min_ttl", defaults::DNS_MIN_TTL);
    let max_ttl = ttl(&raw.max_ttl, "max_ttl", defaults::DNS_MAX_TTL);
    let (min, max) = (min_ttl.value, max_ttl.value);
    in_order(cx, min_ttl, max_ttl, path, "");
    let servers = servers(cx, raw.servers.as_ref(), &join(path, "servers"));
    Some(model::DnsDiscovery {
        name: name?,
        record: record?,
        min_ttl: min,
        max_ttl: max,
        servers: servers?,
    })
}

/// A name as resolvers take it: letters, digits, `-`, `_` (SRV labels), dots between labels
/// of at most 63 characters, 253 in all, with an optional final dot.
fn dns_name(cx: &Cx, text: &str, pos: Pos, path: &str) -> Option<String> {
    let name = text.trim();
    let bare = name.strip_suffix('.').unwrap_or(name);
    let problem = if bare.is_empty() {
        Some("empty name; write the name to resolve, e.g. api.shop.svc.cluster.local".to_owned())
    } else if bare.len() > 253 {
        Some(format!("'{name}' is longer than 253 characters"))
    } else if let Some(c) = bare
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let hint = if bare.contains(':') {
            " (the port goes in `port`)"
        } else {
            ""
        };
        Some(format!(
            "'{name}' is not a DNS name: '{c}' is not allowed{hint}"
        ))
    } else if bare.split('.').any(|l| l.is_empty() || l.len() > 63) {
        Some(format!(
            "'{name}' is not a DNS name: labels between dots are 1 to 63 characters"
        ))
    } else {
        None
    };
    match problem {
        Some(msg) => {
            cx.report(pos, path, msg);
            None
        }
        None => Some(name.to_owned()),
    }
}

/// `record` with its `port`: required for A/AAAA, refused for SRV, whose records carry theirs.
fn record(cx: &Cx, raw: &raw::DnsDiscovery, pos: Pos, path: &str) -> Option<model::DnsRecord> {
    let record = match &raw.record {
        None => defaults::DNS_RECORD,
        Some(item) => *item.get()?,
    };
    let port_path = join(path, "port");
    match record {
        DnsRecordType::A => {
            let why = " (record a: the port the resolved addresses serve on, e.g. 8080)";
            let item = cx.required(&raw.port, pos, path, "port", why)?;
            let port = *item.get()?;
            match u16::try_from(port) {
                Ok(port) if port > 0 => Some(model::DnsRecord::Ip { port }),
                _ => {
                    let msg = format!("{port} is out of range; expected 1 to 65535");
                    cx.report(item.pos, &port_path, msg);
                    None
                }
            }
        }
        DnsRecordType::Srv => {
            if let Some(at) = pos_of(&raw.port) {
                let msg = "port is not used with `record: srv`: each SRV record carries its own; \
                           remove port";
                cx.report(at, &port_path, msg);
                return None;
            }
            Some(model::DnsRecord::Srv)
        }
    }
}

fn servers(
    cx: &Cx,
    list: Option<&raw::List<String>>,
    path: &str,
) -> Option<Vec<std::net::SocketAddr>> {
    let mut complete = list.is_none_or(|l| l.get().is_some());
    let mut servers = Vec::new();
    for (_, server_path, item) in elements(list, path) {
        let Some(text) = item.get() else {
            complete = false;
            continue;
        };
        match addr::nameserver_address(text) {
            Ok(addr) => servers.push(addr),
            Err(msg) => {
                cx.report(item.pos, &server_path, msg);
                complete = false;
            }
        }
    }
    complete.then_some(servers)
}
