//! `listeners:`: addresses that do not collide, and the right body for each protocol.

use std::net::SocketAddr;
use std::time::Duration;

use super::{Cx, Names, addr, elements, join, name_text, rate_limit, routes, value};
use crate::defaults::{self, ranges};
use crate::model;
use crate::raw::{self, Item, ListenerProtocol, Pos};

/// The cluster (and route) name of HTTP passed through to an original destination, in
/// metrics and the access log.
pub const PASSTHROUGH_CLUSTER: &str = "passthrough";

/// An address some listener (or the admin listener) binds, and who binds it.
pub(super) struct Bound {
    pub address: SocketAddr,
    pub owner: String,
}

pub(super) fn listeners(
    cx: &Cx,
    list: Option<&raw::List<raw::Listener>>,
    admin: Option<&(model::Admin, Pos)>,
) -> Vec<model::Listener> {
    let mut bound: Vec<Bound> = Vec::new();
    if let Some((admin, _)) = admin {
        bound.push(Bound {
            address: admin.address,
            owner: "the admin listener".to_owned(),
        });
        if let Some(status) = admin.status_address {
            bound.push(Bound {
                address: status,
                owner: "the admin status listener".to_owned(),
            });
        }
    }
    let mut names = Names::new("listener");
    let mut listeners = Vec::new();
    for (_, path, item) in elements(list, "listeners") {
        if let Some(raw) = item.get()
            && let Some(listener) = listener(cx, raw, item.pos, &path, &mut bound, &mut names)
        {
            listeners.push(listener);
        }
    }
    listeners
}

fn listener(
    cx: &Cx,
    raw: &raw::Listener,
    pos: Pos,
    path: &str,
    bound: &mut Vec<Bound>,
    names: &mut Names,
) -> Option<model::Listener> {
    let address = cx
        .required(&raw.address, pos, path, "address", "")
        .and_then(|item| {
            let address_path = join(path, "address");
            let parsed = addr::listen_address(item.get()?)
                .map_err(|message| cx.report(item.pos, &address_path, message))
                .ok()?;
            check_collision(cx, parsed, item.pos, &address_path, bound);
            bound.push(Bound {
                address: parsed,
                owner: path.to_owned(),
            });
            Some(parsed)
        });
    let name = match &raw.name {
        Some(item) => {
            let name_path = join(path, "name");
            name_text(cx, item, &name_path)
                .filter(|name| names.claim(cx, name, item.pos, &name_path, path))
        }
        // Two listeners on one address are reported as such; their default names would
        // collide too, but saying so again would only repeat it.
        None => address.map(|a| a.to_string()).inspect(|name| {
            names.taken.push((name.clone(), path.to_owned()));
        }),
    };
    let direction = match value(&raw.direction) {
        None => defaults::LISTENER_DIRECTION,
        Some((raw::Direction::Inbound, _)) => model::Direction::Inbound,
        Some((raw::Direction::Outbound, _)) => model::Direction::Outbound,
    };
    let kind = kind(cx, raw, pos, path);
    let rate_limit = rate_limit::rate_limit(cx, &raw.rate_limit, &join(path, "rate_limit"));
    let mtls = match value(&raw.mtls) {
        None => model::MtlsMode::default(),
        Some((raw::MtlsMode::Strict, _)) => model::MtlsMode::Strict,
        Some((raw::MtlsMode::Permissive, _)) => model::MtlsMode::Permissive,
        Some((raw::MtlsMode::Disabled, _)) => model::MtlsMode::Disabled,
    };
    let authorization =
        super::authz::authorization(cx, &raw.authorization, &join(path, "authorization"));
    let transparent = value(&raw.transparent).is_some_and(|(t, _)| *t);
    let opaque_ports = opaque_ports(cx, raw, path, transparent);
    let follow_original_port = follow_original_port(cx, raw, path);
    let passthrough = passthrough(cx, raw, path, transparent);
    Some(model::Listener {
        name: name?,
        address: address?,
        direction,
        kind: kind?,
        rate_limit: rate_limit?,
        mtls,
        authorization: authorization?,
        transparent,
        opaque_ports: opaque_ports?,
        follow_original_port,
        passthrough: passthrough?,
    })
}

/// `passthrough`: for transparent listeners only; `http` gets its cluster's defaults here.
fn passthrough(
    cx: &Cx,
    raw: &raw::Listener,
    path: &str,
    transparent: bool,
) -> Option<model::Passthrough> {
    let Some(item) = &raw.passthrough else {
        return Some(model::Passthrough::Tcp);
    };
    let mode = *item.get()?;
    if !transparent {
        let msg = "'passthrough' is for transparent listeners (transparent: true), whose \
                   connections to destinations outside the mesh it passes on";
        cx.report(item.pos, &join(path, "passthrough"), msg);
        return None;
    }
    match mode {
        raw::Passthrough::Tcp => Some(model::Passthrough::Tcp),
        raw::Passthrough::Http => {
            let template = raw::Cluster {
                name: Some(raw::Item::new(PASSTHROUGH_CLUSTER.to_owned())),
                ..raw::Cluster::default()
            };
            let mut names = Names::new("cluster");
            super::clusters::cluster(
                cx,
                &template,
                item.pos,
                &join(path, "passthrough"),
                &mut names,
            )
            .map(|c| model::Passthrough::Http(Box::new(c)))
        }
    }
}

/// `follow_original_port` needs the listener's cluster: tcp, or auto with one.
fn follow_original_port(cx: &Cx, raw: &raw::Listener, path: &str) -> bool {
    let Some((&on, pos)) = value(&raw.follow_original_port) else {
        return false;
    };
    let protocol = match &raw.protocol {
        None => Some(defaults::LISTENER_PROTOCOL),
        Some(item) => item.get().copied(),
    };
    let has_cluster = raw.cluster.is_some() && protocol != Some(ListenerProtocol::Http);
    if on && !has_cluster {
        let msg = "'follow_original_port' sends other ports to the host of the listener's \
                   'cluster', and it has none: use it on a tcp listener or an auto listener \
                   with a cluster";
        cx.report(pos, &join(path, "follow_original_port"), msg);
        return false;
    }
    on
}

/// `opaque_ports`: real ports, each once, on a listener that has somewhere to send them.
fn opaque_ports(cx: &Cx, raw: &raw::Listener, path: &str, transparent: bool) -> Option<Vec<u16>> {
    let Some(list) = &raw.opaque_ports else {
        return Some(Vec::new());
    };
    let list_path = join(path, "opaque_ports");
    let protocol = match &raw.protocol {
        None => Some(defaults::LISTENER_PROTOCOL),
        Some(item) => item.get().copied(),
    };
    let nowhere = match protocol {
        Some(ListenerProtocol::Tcp) => Some(
            "a tcp listener forwards every connection as opaque TCP already; leave \
             'opaque_ports' out",
        ),
        Some(ListenerProtocol::Http) if !transparent => Some(
            "an http listener has no cluster for opaque connections: set protocol: auto with a \
             'cluster', or transparent: true to send each to its destination's cluster",
        ),
        Some(ListenerProtocol::Auto) if !transparent && raw.cluster.is_none() => {
            Some("opaque connections go to the listener's 'cluster', and it has none; add one")
        }
        _ => None,
    };
    if let Some(msg) = nowhere {
        cx.report(list.pos, &list_path, msg);
        return None;
    }
    ports(cx, list, &list_path)
}

/// A list of TCP ports: each 1 to 65535, none twice. Sorted.
pub(super) fn ports(cx: &Cx, list: &raw::List<u32>, path: &str) -> Option<Vec<u16>> {
    let mut ports: Vec<u16> = Vec::new();
    let mut complete = true;
    for (_, port_path, item) in elements(Some(list), path) {
        let Some(&n) = item.get() else {
            complete = false;
            continue;
        };
        match u16::try_from(n).ok().filter(|p| *p != 0) {
            None => {
                let msg = format!("{n} is not a TCP port; expected 1 to 65535");
                cx.report(item.pos, &port_path, msg);
                complete = false;
            }
            Some(p) if ports.contains(&p) => {
                cx.report(item.pos, &port_path, format!("port {p} is listed twice"));
                complete = false;
            }
            Some(p) => ports.push(p),
        }
    }
    ports.sort_unstable();
    complete.then_some(ports)
}

/// Two listeners cannot bind the same port on the same IP, nor on a wildcard IP (`0.0.0.0`,
/// `::`) and a specific IP of the same family. Port 0 never collides: the OS picks a free port.
/// Whether it collided (and was reported).
pub(super) fn check_collision(
    cx: &Cx,
    address: SocketAddr,
    pos: Pos,
    path: &str,
    bound: &[Bound],
) -> bool {
    if address.port() == 0 {
        return false;
    }
    for other in bound {
        let (a, b) = (address, other.address);
        if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
            continue;
        }
        if a.ip() == b.ip() {
            let msg = format!("address {a} is already used by {}", other.owner);
            cx.report(pos, path, msg);
            return true;
        }
        if a.ip().is_unspecified() || b.ip().is_unspecified() {
            let msg = format!(
                "address {a} overlaps {b} of {}: a wildcard address takes the port on every \
                 interface",
                other.owner
            );
            cx.report(pos, path, msg);
            return true;
        }
    }
    false
}

/// What the listener does with a connection: route HTTP requests, forward TCP bytes, or look
/// at the first bytes to choose between the two.
fn kind(cx: &Cx, raw: &raw::Listener, pos: Pos, path: &str) -> Option<model::ListenerKind> {
    let protocol = match &raw.protocol {
        None => Some(defaults::LISTENER_PROTOCOL),
        Some(item) => item.get().copied(),
    };
    match protocol {
        Some(ListenerProtocol::Http) => http(cx, raw, pos, path),
        Some(ListenerProtocol::Tcp) => tcp(cx, raw, pos, path),
        Some(ListenerProtocol::Auto) => auto(cx, raw, pos, path),
        None => {
            // The protocol is invalid and reported; still check whatever else is there.
            if let Some(list) = &raw.routes {
                routes::routes(cx, list, &join(path, "routes"), "http");
            }
            if let Some(cluster) = &raw.cluster {
                cx.cluster_ref(cluster, &join(path, "cluster"));
            }
            detect_timeout(cx, raw, path);
            None
        }
    }
}

fn http(cx: &Cx, raw: &raw::Listener, pos: Pos, path: &str) -> Option<model::ListenerKind> {
    if let Some(cluster) = &raw.cluster {
        // With routes written, the user most likely wants the HTTP routed and the rest
        // forwarded; without, every connection forwarded.
        let instead = if raw.routes.is_some() {
            "protocol: auto to forward connections that are not HTTP to this cluster"
        } else {
            "protocol: tcp"
        };
        let msg = format!(
            "'cluster' is for tcp and auto listeners; an http listener sends requests through \
             its routes (or set {instead})"
        );
        cx.report(cluster.pos, &join(path, "cluster"), msg);
    }
    not_detecting(cx, raw, path, "an http listener");
    // A transparent listener passes on whatever is not for the mesh: it may have no routes
    // (a sidecar whose workload calls no meshed service still gets its calls out).
    let transparent = value(&raw.transparent).is_some_and(|(t, _)| *t);
    let no_routes = raw
        .routes
        .as_ref()
        .and_then(Item::get)
        .is_none_or(Vec::is_empty);
    if transparent && no_routes {
        return Some(model::ListenerKind::Http { routes: Vec::new() });
    }
    let why = " (an http listener needs at least one route, unless it is transparent)";
    let list = cx.required(&raw.routes, pos, path, "routes", why)?;
    let routes = routes::routes(cx, list, &join(path, "routes"), "http")?;
    Some(model::ListenerKind::Http { routes })
}

fn tcp(cx: &Cx, raw: &raw::Listener, pos: Pos, path: &str) -> Option<model::ListenerKind> {
    if let Some(routes) = &raw.routes {
        let msg = "routes are for http and auto listeners; a tcp listener forwards every \
                   connection to its 'cluster' (or set protocol: auto to route HTTP and forward \
                   the rest)";
        cx.report(routes.pos, &join(path, "routes"), msg);
    }
    not_detecting(cx, raw, path, "a tcp listener");
    let why = " (a tcp listener forwards connections to one cluster)";
    let cluster = cx.required(&raw.cluster, pos, path, "cluster", why)?;
    let cluster = cx.cluster_ref(cluster, &join(path, "cluster"))?;
    Some(model::ListenerKind::Tcp { cluster })
}

/// Routes for what turns out to be HTTP, and an optional cluster for everything else.
fn auto(cx: &Cx, raw: &raw::Listener, pos: Pos, path: &str) -> Option<model::ListenerKind> {
    let why = " (an auto listener needs at least one route for the HTTP it detects)";
    let routes = cx
        .required(&raw.routes, pos, path, "routes", why)
        .and_then(|list| routes::routes(cx, list, &join(path, "routes"), "auto"));
    // No cluster is allowed: connections that are not HTTP are then closed.
    let cluster = match &raw.cluster {
        None => Some(None),
        Some(item) => cx.cluster_ref(item, &join(path, "cluster")).map(Some),
    };
    let detect_timeout = detect_timeout(cx, raw, path);
    Some(model::ListenerKind::Auto {
        routes: routes?,
        cluster: cluster?,
        detect_timeout,
    })
}

fn detect_timeout(cx: &Cx, raw: &raw::Listener, path: &str) -> Duration {
    cx.duration(
        &raw.detect_timeout,
        &join(path, "detect_timeout"),
        ranges::DETECT_TIMEOUT,
        defaults::DETECT_TIMEOUT,
    )
}

/// An http or tcp listener knows its protocol up front, so a detection timeout there is a
/// mistake: most likely `protocol: auto` was meant.
fn not_detecting(cx: &Cx, raw: &raw::Listener, path: &str, listener: &str) {
    if let Some(item) = &raw.detect_timeout {
        let msg = format!(
            "'detect_timeout' only applies to protocol: auto; {listener} knows its protocol \
             without waiting for the first bytes"
        );
        cx.report(item.pos, &join(path, "detect_timeout"), msg);
    }
}
