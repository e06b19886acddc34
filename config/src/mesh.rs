//! The mesh config: every YAML file of the control plane's directory, checked together, and
//! the proxy config each sidecar gets from it.
//!
//! A sidecar serving service S gets:
//! - an `inbound` listener (protocol `auto`) that sends everything to S's workload (`app`),
//!   through the reserved cluster `inbound`;
//! - an `outbound` listener with the routes of every service S `calls`, route names prefixed
//!   with the callee's (`payments/default`); a route without `match.hosts` matches the
//!   callee's names (`payments`, `payments.shop`, `payments.shop.svc`,
//!   `payments.shop.svc.cluster.local`);
//! - the clusters those routes send to, and no others.

use std::path::Path;

use crate::diag::Collector;
use crate::identity::SpiffeId;
use crate::node::{self, Kind};
use crate::raw::{self, Item};
use crate::validate::mesh::{INBOUND_CLUSTER, MeshInput, ServiceDef, services};
use crate::{Diagnostic, Diagnostics, de, model, validate};

/// One file of the mesh config, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The name used in diagnostics (the path as found in the directory).
    pub name: String,
    pub text: String,
}

/// A valid mesh: every service with its sidecar's config.
#[derive(Debug, Clone)]
pub struct Mesh {
    pub services: Vec<Service>,
    /// A hash of every file's name and content: the same files give the same version on any
    /// machine, so replicas of the control plane agree on it.
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// Where it was defined: `file:line`.
    pub defined_at: String,
    pub calls: Vec<String>,
    /// Its workload's identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<this>`.
    pub service_account: String,
    /// Its sidecar's config, validated.
    pub config: model::Config,
    /// The same, as the YAML sent to the sidecar.
    pub yaml: String,
    /// Where each route of the sidecar's config was written: `(listener, route, file:line)`.
    /// A route made from a service with no routes points at the service.
    pub route_origins: Vec<(String, String, String)>,
}

impl Service {
    /// Where the route `route` of listener `listener` was written (`file:line`).
    pub fn route_origin(&self, listener: &str, route: &str) -> Option<&str> {
        self.route_origins
            .iter()
            .find(|(l, r, _)| l == listener && r == route)
            .map(|(_, _, at)| at.as_str())
    }
}

impl Mesh {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Reads every `*.yaml` and `*.yml` file of `dir` (not hidden ones, nor subdirectories: the
/// `..data` directory of a Kubernetes ConfigMap volume is reached through the symlinks beside
/// it), sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<Source>, Diagnostics> {
    let problem = |name: String, e: std::io::Error| {
        Diagnostics(vec![Diagnostic {
            file: name,
            line: 0,
            column: 0,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    };
    let entries = std::fs::read_dir(dir).map_err(|e| problem(dir.display().to_string(), e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| problem(dir.display().to_string(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        // `metadata()` follows symlinks, as a ConfigMap volume needs.
        if name.starts_with('.') || !yaml || !entry.path().metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        paths.push(entry.path());
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Source { name, text }),
                Err(e) => Err(problem(name, e)),
            }
        })
        .collect()
}

/// Checks the files together and builds every sidecar's config. Every problem in every file
/// is reported at once, each in its own file. Plaintext between sidecars: see [`load_with`].
pub fn load(sources: &[Source]) -> Result<Mesh, Diagnostics> {
    load_with(sources, None)
}

/// As [`load`]; with a trust domain (the control plane issues certificates), sidecars talk
/// mutual TLS: each inbound listener gets its service's `mtls` mode, and each cluster of a
/// service with mTLS requires that service's SPIFFE ID.
pub fn load_with(sources: &[Source], trust_domain: Option<&str>) -> Result<Mesh, Diagnostics> {
    let outs: Vec<Collector> = sources.iter().map(|s| Collector::new(&s.name)).collect();
    let roots: Vec<Option<node::Node>> = sources
        .iter()
        .zip(&outs)
        .map(|(s, out)| match node::parse(&s.text) {
            Ok(root) => Some(root),
            Err(e) => {
                out.report(e.pos, "", e.message);
                None
            }
        })
        .collect();
    let raws: Vec<Option<raw::MeshFile>> = roots
        .iter()
        .zip(&outs)
        .map(|(root, out)| match root {
            Some(root) if root.kind == Kind::Null => Some(raw::MeshFile::default()),
            Some(root) => de::from_node(root, out),
            None => None,
        })
        .collect();
    let empty = raw::MeshFile::default();
    let inputs: Vec<MeshInput<'_>> = sources
        .iter()
        .zip(&outs)
        .zip(&raws)
        .map(|((s, out), raw)| MeshInput {
            file: &s.name,
            out,
            raw: raw.as_ref().unwrap_or(&empty),
        })
        .collect();
    let defs = services(&inputs);
    let found: Vec<Diagnostic> = outs.iter().flat_map(Collector::take).collect();
    if !found.is_empty() {
        return Err(Diagnostics(found));
    }
    let files: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    let mut services = Vec::with_capacity(defs.len());
    for def in &defs {
        let label = format!("<sidecar config of service {}>", def.name);
        let out = Collector::new(&label);
        let (raw, route_origins) = sidecar(def, &defs, &files, trust_domain);
        let built = validate::validate_built(&raw, &out);
        let config = out.finish(Some(built))?;
        services.push(Service {
            name: def.name.clone(),
            namespace: def.namespace.clone(),
            defined_at: format!("{}:{}", sources[def.file].name, def.pos.line),
            calls: def.calls.clone(),
            service_account: def.service_account.clone(),
            yaml: crate::to_yaml(&config),
            config,
            route_origins,
        });
    }
    Ok(Mesh {
        services,
        version: version(sources),
    })
}

/// FNV-1a over each file's name (without its directory: replicas may mount the directory at
/// different paths) and text, in order: stable across machines and builds (the standard
/// library's hasher is not), and cheap. It names content; it guards nothing.
fn version(sources: &[Source]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for s in sources {
        let name = Path::new(&s.name)
            .file_name()
            .map_or(s.name.as_str(), |n| n.to_str().unwrap_or(&s.name));
        for b in name.bytes().chain([0]).chain(s.text.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Where each route came from: `(listener, route, file:line)`.
type Origins = Vec<(String, String, String)>;

/// The raw config of `def`'s sidecar, from pieces of the mesh (keeping their positions), and
/// where its routes were written. `files` names the inputs.
fn sidecar(
    def: &ServiceDef<'_>,
    all: &[ServiceDef<'_>],
    files: &[&str],
    trust_domain: Option<&str>,
) -> (raw::Config, Origins) {
    // mTLS where the control plane issues certificates and the service has not opted out.
    let mtls_of = |d: &ServiceDef<'_>| match trust_domain {
        Some(td) if d.mtls != model::MtlsMode::Disabled => {
            Some(SpiffeId::new(td, &d.namespace, &d.service_account))
        }
        _ => None,
    };
    let at = |file: usize, pos: raw::Pos| format!("{}:{}", files[file], pos.line);
    let mut origins = vec![(
        "inbound".to_owned(),
        INBOUND_CLUSTER.to_owned(),
        at(def.file, def.pos),
    )];
    fn item<T>(value: T) -> Item<T> {
        Item::new(value)
    }
    let inbound_route = raw::Route {
        name: Some(item(INBOUND_CLUSTER.to_owned())),
        cluster: Some(item(INBOUND_CLUSTER.to_owned())),
        ..raw::Route::default()
    };
    let mut listeners = vec![item(raw::Listener {
        name: Some(item("inbound".to_owned())),
        address: Some(item(def.inbound.to_string())),
        protocol: Some(item(raw::ListenerProtocol::Auto)),
        direction: Some(item(raw::Direction::Inbound)),
        routes: Some(item(vec![item(inbound_route)])),
        cluster: Some(item(INBOUND_CLUSTER.to_owned())),
        authorization: def.raw.authorization.clone(),
        opaque_ports: ports_list(&def.opaque_ports),
        // Captured calls to the pod's other ports reach them, not the app's one.
        follow_original_port: Some(item(true)),
        mtls: mtls_of(def).map(|_| {
            item(match def.mtls {
                model::MtlsMode::Strict => raw::MtlsMode::Strict,
                _ => raw::MtlsMode::Permissive,
            })
        }),
        ..raw::Listener::default()
    })];
    let mut clusters = vec![item(raw::Cluster {
        name: Some(item(INBOUND_CLUSTER.to_owned())),
        endpoints: Some(item(vec![item(raw::Endpoint {
            address: Some(item(def.app.to_string())),
            ..raw::Endpoint::default()
        })])),
        ..raw::Cluster::default()
    })];
    let mut routes = Vec::new();
    let mut needed: Vec<String> = Vec::new();
    // The callees' opaque ports: what the app sends there is forwarded as bytes.
    let mut opaque: Vec<u16> = Vec::new();
    for callee in def
        .calls
        .iter()
        .filter_map(|c| all.iter().find(|d| &d.name == c))
    {
        opaque.extend(&callee.opaque_ports);
        for (route, pos) in callee_routes(callee) {
            let name = route
                .name
                .as_ref()
                .and_then(Item::get)
                .cloned()
                .unwrap_or_default();
            origins.push(("outbound".to_owned(), name, at(callee.file, pos)));
            for cluster in route_clusters(&route) {
                if !needed.contains(&cluster) {
                    needed.push(cluster);
                }
            }
            routes.push(item(route));
        }
    }
    for name in needed {
        if let Some((mut cluster, owner)) = find_cluster(all, &name) {
            if let Some(id) = mtls_of(owner) {
                cluster.mtls = Some(item(raw::ClusterMtls {
                    identity: Some(item(id.to_string())),
                }));
            }
            clusters.push(item(cluster));
        }
    }
    // Always, calls or none: iptables sends every outbound connection of the pod here, and
    // what is not for the mesh is passed on.
    opaque.sort_unstable();
    opaque.dedup();
    listeners.push(item(raw::Listener {
        name: Some(item("outbound".to_owned())),
        address: Some(item(def.outbound.to_string())),
        protocol: Some(item(raw::ListenerProtocol::Http)),
        direction: Some(item(raw::Direction::Outbound)),
        routes: Some(item(routes)),
        // In a pod whose traffic iptables captures, calls arrive here addressed to
        // wherever the app sent them.
        transparent: Some(item(true)),
        passthrough: def.raw.passthrough.clone(),
        opaque_ports: ports_list(&opaque),
        ..raw::Listener::default()
    }));
    let config = raw::Config {
        listeners: Some(item(listeners)),
        clusters: Some(item(clusters)),
        ..raw::Config::default()
    };
    (config, origins)
}

/// `opaque_ports` as a listener takes them; none: left out.
fn ports_list(ports: &[u16]) -> Option<raw::List<u32>> {
    (!ports.is_empty()).then(|| Item::new(ports.iter().map(|&p| Item::new(u32::from(p))).collect()))
}

/// A callee's routes as its callers get them: named after it, matching its names when they
/// match no hosts of their own. No routes: one to its cluster. Each with where it was written
/// (the service, for the one made up).
fn callee_routes(callee: &ServiceDef<'_>) -> Vec<(raw::Route, raw::Pos)> {
    let written: Vec<(raw::Route, raw::Pos)> = match &callee.raw.routes {
        Some(list) => list
            .get()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i.get()?.clone(), i.pos)))
            .collect(),
        None => vec![(
            raw::Route {
                name: Some(Item::new("default".to_owned())),
                cluster: Some(Item::new(callee.name.clone())),
                ..raw::Route::default()
            },
            callee.pos,
        )],
    };
    let hosts = host_names(&callee.name, &callee.namespace);
    written
        .into_iter()
        .enumerate()
        .map(|(i, (mut route, pos))| {
            let own = route
                .name
                .as_ref()
                .and_then(Item::get)
                .cloned()
                .unwrap_or_else(|| format!("route-{i}"));
            route.name = Some(Item::new(format!("{}/{own}", callee.name)));
            let matches = route
                .matches
                .get_or_insert_with(|| Item::new(raw::RouteMatch::default()));
            if let Some(m) = matches.value.as_mut()
                && m.hosts.is_none()
            {
                m.hosts = Some(Item::new(hosts.iter().cloned().map(Item::new).collect()));
            }
            (route, pos)
        })
        .collect()
}

/// The names a service is called by: short, with its namespace, and Kubernetes' long forms.
pub fn host_names(name: &str, namespace: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        format!("{name}.{namespace}"),
        format!("{name}.{namespace}.svc"),
        format!("{name}.{namespace}.svc.cluster.local"),
    ]
}

/// The clusters a route sends to.
fn route_clusters(route: &raw::Route) -> Vec<String> {
    let mut names: Vec<String> = route
        .cluster
        .iter()
        .filter_map(|c| c.get().cloned())
        .collect();
    for backend in route
        .backends
        .iter()
        .flat_map(|l| l.get().into_iter().flatten())
    {
        if let Some(name) = backend
            .get()
            .and_then(|b| b.cluster.as_ref()?.get().cloned())
        {
            names.push(name);
        }
    }
    names
}

/// The raw cluster called `name`: a service's (named after it), or one of the extra ones;
/// with the service it belongs to (whose workloads its endpoints are).
fn find_cluster<'d, 'a>(
    all: &'d [ServiceDef<'a>],
    name: &str,
) -> Option<(raw::Cluster, &'d ServiceDef<'a>)> {
    for def in all {
        if def.name == name
            && let Some(cluster) = def.raw.cluster.as_ref().and_then(Item::get)
        {
            let mut named = cluster.clone();
            named.name = Some(Item::new(def.name.clone()));
            return Some((named, def));
        }
        for extra in def
            .raw
            .clusters
            .iter()
            .flat_map(|l| l.get().into_iter().flatten())
        {
            if let Some(c) = extra.get()
                && c.name
                    .as_ref()
                    .and_then(Item::get)
                    .is_some_and(|n| n == name)
            {
                return Some((c.clone(), def));
            }
        }
    }
    None
}
