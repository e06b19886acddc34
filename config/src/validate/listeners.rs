//! `listeners:`: addresses that do not collide, and the right body for each protocol.

use std::net::SocketAddr;

use super::{Cx, Names, addr, elements, join, name_text, routes, value};
use crate::defaults;
use crate::model;
use crate::raw::{self, ListenerProtocol, Pos};

/// An address some listener (or the admin listener) binds, and who binds it.
struct Bound {
    address: SocketAddr,
    owner: String,
}

pub(super) fn listeners(
    cx: &Cx,
    list: Option<&raw::List<raw::Listener>>,
    admin: Option<&(model::Admin, Pos)>,
) -> Vec<model::Listener> {
    let mut bound: Vec<Bound> = admin
        .map(|(admin, _)| Bound {
            address: admin.address,
            owner: "the admin listener".to_owned(),
        })
        .into_iter()
        .collect();
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
    Some(model::Listener {
        name: name?,
        address: address?,
        direction,
        kind: kind?,
    })
}

/// Two listeners cannot bind the same port on the same IP, nor on a wildcard IP (`0.0.0.0`,
/// `::`) and a specific IP of the same family. Port 0 never collides: the OS picks a free port.
fn check_collision(cx: &Cx, address: SocketAddr, pos: Pos, path: &str, bound: &[Bound]) {
    if address.port() == 0 {
        return;
    }
    for other in bound {
        let (a, b) = (address, other.address);
        if a.port() != b.port() || a.is_ipv4() != b.is_ipv4() {
            continue;
        }
        if a.ip() == b.ip() {
            let msg = format!("address {a} is already used by {}", other.owner);
            cx.report(pos, path, msg);
            return;
        }
        if a.ip().is_unspecified() || b.ip().is_unspecified() {
            let msg = format!(
                "address {a} overlaps {b} of {}: a wildcard address takes the port on every \
                 interface",
                other.owner
            );
            cx.report(pos, path, msg);
            return;
        }
    }
}

/// What the listener does with a connection: route HTTP requests, or forward TCP bytes.
fn kind(cx: &Cx, raw: &raw::Listener, pos: Pos, path: &str) -> Option<model::ListenerKind> {
    let protocol = match &raw.protocol {
        None => Some(defaults::LISTENER_PROTOCOL),
        Some(item) => item.get().copied(),
    };
    let routes_path = join(path, "routes");
    let cluster_path = join(path, "cluster");
    match protocol {
        Some(ListenerProtocol::Http) => {
            if let Some(cluster) = &raw.cluster {
                let msg = "'cluster' is for tcp listeners; an http listener sends requests \
                           through its routes (or set protocol: tcp)";
                cx.report(cluster.pos, &cluster_path, msg);
            }
            let why = " (an http listener needs at least one route)";
            let list = cx.required(&raw.routes, pos, path, "routes", why)?;
            let routes = routes::routes(cx, list, &routes_path)?;
            Some(model::ListenerKind::Http { routes })
        }
        Some(ListenerProtocol::Tcp) => {
            if let Some(routes) = &raw.routes {
                let msg = "routes are for http listeners; a tcp listener forwards every \
                           connection to its 'cluster'";
                cx.report(routes.pos, &routes_path, msg);
            }
            let why = " (a tcp listener forwards connections to one cluster)";
            let cluster = cx.required(&raw.cluster, pos, path, "cluster", why)?;
            let cluster = cx.cluster_ref(cluster, &cluster_path)?;
            Some(model::ListenerKind::Tcp { cluster })
        }
        None => {
            // The protocol is invalid and reported; still check whatever else is there.
            if let Some(list) = &raw.routes {
                routes::routes(cx, list, &routes_path);
            }
            if let Some(cluster) = &raw.cluster {
                cx.cluster_ref(cluster, &cluster_path);
            }
            None
        }
    }
}
