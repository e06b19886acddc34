//! The mesh config: services spread over the files of a directory, checked together. Each
//! problem is reported in the file, and at the field, where it was written; a name defined in
//! one file may be used in another.

use std::net::SocketAddr;

use super::{Cx, Names, addr, clusters, did_you_mean, elements, join, list, name_text, routes};
use crate::defaults;
use crate::diag::Collector;
use crate::model;
use crate::raw::{self, Item, Pos};

/// The local workload's cluster in every sidecar config: reserved, so no service or cluster
/// of the mesh may take it.
pub(crate) const INBOUND_CLUSTER: &str = "inbound";

/// One parsed file of the mesh, and where its problems go.
pub(crate) struct MeshInput<'a> {
    pub file: &'a str,
    pub out: &'a Collector,
    pub raw: &'a raw::MeshFile,
}

/// A service that passed its checks (its sidecar config is built from `raw`).
pub(crate) struct ServiceDef<'a> {
    pub name: String,
    pub namespace: String,
    /// Index into the inputs.
    pub file: usize,
    pub pos: Pos,
    pub raw: &'a raw::Service,
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub calls: Vec<String>,
    pub service_account: String,
    pub mtls: model::MtlsMode,
    /// Sorted, no duplicates.
    pub opaque_ports: Vec<u16>,
}

/// A name defined somewhere in the mesh, and where.
struct Defined {
    name: String,
    file: usize,
    pos: Pos,
    /// A service without a cluster or routes cannot be called.
    callable: bool,
}

/// Checks every service of every file; returns those without problems. Names (services and
/// their extra clusters) are collected from all files first, so references across files
/// resolve.
pub(crate) fn services<'a>(inputs: &[MeshInput<'a>]) -> Vec<ServiceDef<'a>> {
    let (service_names, cluster_names) = defined(inputs);
    let mut names: Vec<String> = service_names.iter().map(|d| d.name.clone()).collect();
    names.extend(cluster_names.iter().map(|d| d.name.clone()));
    let mut checked = Vec::new();
    for (fi, input) in inputs.iter().enumerate() {
        let cx = Cx::with_names(input.out, names.clone());
        for (_, path, item) in elements(input.raw.services.as_ref(), "services") {
            let Some(raw) = item.get() else { continue };
            let first = |d: &&Defined| d.file == fi && d.pos == item.pos;
            let unique = service_names.iter().any(|d| first(&d));
            if let Some(def) = service(
                &cx,
                ServiceCx {
                    inputs,
                    file: fi,
                    unique,
                    services: &service_names,
                },
                raw,
                item.pos,
                &path,
            ) {
                checked.push(def);
            }
        }
    }
    checked
}

/// The first definition of every service and extra cluster name, and reports of the later
/// ones (duplicates, and cluster names that are service names).
fn defined(inputs: &[MeshInput<'_>]) -> (Vec<Defined>, Vec<Defined>) {
    let mut services: Vec<Defined> = Vec::new();
    let mut clusters: Vec<Defined> = Vec::new();
    let at = |d: &Defined| format!("{}:{}", inputs[d.file].file, d.pos);
    for (fi, input) in inputs.iter().enumerate() {
        for (_, path, item) in elements(input.raw.services.as_ref(), "services") {
            let Some(raw) = item.get() else { continue };
            let Some(name) = raw.name.as_ref().and_then(Item::get) else {
                continue;
            };
            let name_pos = raw.name.as_ref().map_or(item.pos, |n| n.pos);
            if let Some(first) = services.iter().find(|d| &d.name == name) {
                let msg = format!(
                    "duplicate service name '{name}' (already defined at {})",
                    at(first)
                );
                input.out.report(name_pos, &join(&path, "name"), msg);
                continue;
            }
            services.push(Defined {
                name: name.clone(),
                file: fi,
                pos: item.pos,
                callable: raw.cluster.is_some() || raw.routes.is_some(),
            });
        }
    }
    for (fi, input) in inputs.iter().enumerate() {
        for (_, path, item) in elements(input.raw.services.as_ref(), "services") {
            let Some(raw) = item.get() else { continue };
            for (_, cpath, citem) in elements(raw.clusters.as_ref(), &join(&path, "clusters")) {
                let Some(name) = citem.get().and_then(|c| c.name.as_ref()?.get().cloned()) else {
                    continue;
                };
                let name_path = join(&cpath, "name");
                let name_pos = citem
                    .get()
                    .and_then(|c| c.name.as_ref())
                    .map_or(citem.pos, |n| n.pos);
                let clash = services
                    .iter()
                    .find(|d| d.name == name)
                    .map(|d| format!("is the name of the service at {}", at(d)))
                    .or_else(|| {
                        let d = clusters.iter().find(|d| d.name == name)?;
                        Some(format!("is already defined at {}", at(d)))
                    });
                match clash {
                    Some(why) => {
                        let msg =
                            format!("cluster name '{name}' {why}; names are unique in the mesh");
                        input.out.report(name_pos, &name_path, msg);
                    }
                    None => clusters.push(Defined {
                        name,
                        file: fi,
                        pos: name_pos,
                        callable: true,
                    }),
                }
            }
        }
    }
    (services, clusters)
}

/// What checking one service needs to know about the rest of the mesh.
struct ServiceCx<'m, 'a> {
    inputs: &'m [MeshInput<'a>],
    file: usize,
    /// This is the first definition of its name (a duplicate was reported already).
    unique: bool,
    services: &'m [Defined],
}

fn service<'a>(
    cx: &Cx,
    mesh: ServiceCx<'_, 'a>,
    raw: &'a raw::Service,
    pos: Pos,
    path: &str,
) -> Option<ServiceDef<'a>> {
    let name = cx
        .required(&raw.name, pos, path, "name", "")
        .and_then(|item| {
            let name_path = join(path, "name");
            let name = name_text(cx, item, &name_path)?;
            if name == INBOUND_CLUSTER {
                let msg = format!(
                    "'{INBOUND_CLUSTER}' is reserved for each sidecar's cluster of its own \
                     workload; choose another name"
                );
                cx.report(item.pos, &name_path, msg);
                return None;
            }
            Some(name)
        });
    let namespace = match &raw.namespace {
        None => Some(defaults::MESH_NAMESPACE.to_owned()),
        Some(item) => identity_segment(cx, item, &join(path, "namespace")),
    };
    let service_account = match &raw.service_account {
        None => name.clone(),
        Some(item) => identity_segment(cx, item, &join(path, "service_account")),
    };
    let mtls = match raw.mtls.as_ref().and_then(Item::get) {
        None => defaults::MESH_MTLS,
        Some(raw::MtlsMode::Strict) => model::MtlsMode::Strict,
        Some(raw::MtlsMode::Permissive) => model::MtlsMode::Permissive,
        Some(raw::MtlsMode::Disabled) => model::MtlsMode::Disabled,
    };
    let app = cx
        .required(&raw.app, pos, path, "app", " (where the workload listens)")
        .and_then(|item| {
            addr::endpoint_address(item.get()?)
                .map_err(|m| cx.report(item.pos, &join(path, "app"), m))
                .ok()
        });
    let inbound = listen(cx, &raw.inbound, path, "inbound", defaults::MESH_INBOUND);
    let outbound = listen(cx, &raw.outbound, path, "outbound", defaults::MESH_OUTBOUND);
    if let (Some(i), Some(o), Some(item)) = (inbound, outbound, &raw.outbound)
        && i == o
    {
        let msg = format!("{o} is also the inbound listener's address");
        cx.report(item.pos, &join(path, "outbound"), msg);
    }
    let calls = calls(cx, &mesh, raw, path);
    let opaque_ports = match &raw.opaque_ports {
        None => Some(Vec::new()),
        Some(list) => super::listeners::ports(cx, list, &join(path, "opaque_ports")),
    };
    let mut complete = true;
    if let Some(item) = &raw.cluster
        && let Some(cluster) = item.get()
    {
        let cluster_path = join(path, "cluster");
        if let Some(n) = &cluster.name {
            let msg = "leave out 'name': a service's cluster is named after the service";
            cx.report(n.pos, &join(&cluster_path, "name"), msg);
        }
        let mut named = cluster.clone();
        named.name = Some(Item {
            pos: item.pos,
            value: name.clone(),
        });
        let mut names = Names::new("cluster");
        complete &= clusters::cluster(cx, &named, item.pos, &cluster_path, &mut names).is_some();
    }
    if let Some(list) = &raw.routes {
        complete &= routes::routes(cx, list, &join(path, "routes"), "http").is_some();
    }
    complete &=
        super::authz::authorization(cx, &raw.authorization, &join(path, "authorization")).is_some();
    for (_, cpath, item) in elements(raw.clusters.as_ref(), &join(path, "clusters")) {
        let Some(cluster) = item.get() else { continue };
        let mut names = Names::new("cluster");
        complete &= clusters::cluster(cx, cluster, item.pos, &cpath, &mut names).is_some();
    }
    if !(complete && mesh.unique) {
        return None;
    }
    Some(ServiceDef {
        name: name?,
        namespace: namespace?,
        file: mesh.file,
        pos,
        raw,
        app: app?,
        inbound: inbound?,
        outbound: outbound?,
        calls: calls?,
        service_account: service_account?,
        mtls,
        opaque_ports: opaque_ports?,
    })
}

/// A namespace or service account: a segment of a SPIFFE ID, so letters, digits, `.`, `-`
/// and `_`.
fn identity_segment(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = name_text(cx, item, path)?;
    let ok = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && text != "."
        && text != "..";
    if !ok {
        let msg = format!(
            "'{text}' cannot be part of an identity: use letters, digits, '.', '-' and '_'"
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(text)
}

/// A listener address, or its default.
fn listen(
    cx: &Cx,
    field: &raw::Field<String>,
    path: &str,
    name: &str,
    default: &str,
) -> Option<SocketAddr> {
    match field {
        None => Some(default.parse().expect("a valid default address")),
        Some(item) => addr::listen_address(item.get()?)
            .map_err(|m| cx.report(item.pos, &join(path, name), m))
            .ok(),
    }
}

/// The services called, each one defined and callable.
fn calls(cx: &Cx, mesh: &ServiceCx<'_, '_>, raw: &raw::Service, path: &str) -> Option<Vec<String>> {
    let mut calls = Vec::new();
    let mut ok = true;
    for (_, call_path, item) in elements(raw.calls.as_ref(), &join(path, "calls")) {
        let Some(callee) = item.get() else {
            ok = false;
            continue;
        };
        match mesh.services.iter().find(|d| &d.name == callee) {
            Some(d) if !d.callable => {
                let msg = format!(
                    "service '{callee}' (at {}:{}) has no 'cluster' or 'routes', so it cannot \
                     be called",
                    mesh.inputs[d.file].file, d.pos
                );
                cx.report(item.pos, &call_path, msg);
                ok = false;
            }
            Some(_) => {
                if !calls.contains(callee) {
                    calls.push(callee.clone());
                }
            }
            None => {
                let names: Vec<&str> = mesh.services.iter().map(|d| d.name.as_str()).collect();
                let hint = if names.is_empty() {
                    String::new()
                } else if names.len() <= 8 {
                    format!(" (services: {})", list(&names))
                } else {
                    did_you_mean(callee, &names)
                        .map_or_else(String::new, |n| format!(" (did you mean '{n}'?)"))
                };
                cx.report(
                    item.pos,
                    &call_path,
                    format!("no service named '{callee}'{hint}"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(calls)
}
