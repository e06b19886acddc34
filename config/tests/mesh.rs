//! The mesh config: files checked together, problems reported in their own files, and the
//! sidecar config each service gets.

use std::path::Path;

use remora_config::mesh::{self, Source};
use remora_config::model::{Direction, HostMatch, ListenerKind};

fn example() -> Vec<Source> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mesh");
    mesh::read_dir(&dir).expect("readable")
}

fn source(name: &str, text: &str) -> Source {
    Source {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

fn errors(sources: &[Source]) -> Vec<String> {
    match mesh::load(sources) {
        Ok(_) => panic!("expected problems"),
        Err(d) => d.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_example_mesh_is_valid_and_each_sidecar_gets_only_what_it_calls() {
    let sources = example();
    let names: Vec<&str> = sources
        .iter()
        .map(|s| s.name.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["orders.yaml", "payments.yaml", "web.yaml"]);
    let mesh = mesh::load(&sources).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(mesh.services.len(), 3);

    let web = mesh.service("web").unwrap();
    assert!(web.defined_at.ends_with("web.yaml:4"), "{}", web.defined_at);
    let clusters: Vec<&str> = web
        .config
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(clusters, ["inbound", "orders", "orders-canary"]);
    let inbound = &web.config.listeners[0];
    assert_eq!(inbound.direction, Direction::Inbound);
    assert_eq!(inbound.address.to_string(), "0.0.0.0:15006");
    assert_eq!(
        web.config.cluster("inbound").unwrap().endpoints[0]
            .address
            .to_string(),
        "127.0.0.1:8080"
    );
    let outbound = &web.config.listeners[1];
    assert_eq!(outbound.direction, Direction::Outbound);
    let ListenerKind::Http { routes } = &outbound.kind else {
        panic!("{:?}", outbound.kind)
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].name, "orders/split");
    assert_eq!(
        routes[0].matches.hosts,
        [
            "orders",
            "orders.shop",
            "orders.shop.svc",
            "orders.shop.svc.cluster.local"
        ]
        .map(|h| HostMatch::Exact(h.to_owned()))
    );
    let weights: Vec<(&str, u32)> = routes[0]
        .backends
        .iter()
        .map(|b| (b.cluster.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("orders", 90), ("orders-canary", 10)]);
    assert_eq!(routes[0].timeout.as_secs(), 5);

    // Where each route came from, for `remora explain`.
    let origin = web.route_origin("outbound", "orders/split").unwrap();
    assert!(origin.ends_with("orders.yaml:18"), "{origin}");
    let origin = web.route_origin("inbound", "inbound").unwrap();
    assert!(origin.ends_with("web.yaml:4"), "{origin}");

    // Payments calls nobody: an outbound listener with no routes (the pod's calls outside
    // the mesh still go through it), and no clusters but its own workload.
    let payments = mesh.service("payments").unwrap();
    assert_eq!(payments.config.listeners.len(), 2);
    let outbound = &payments.config.listeners[1];
    assert!(outbound.transparent);
    assert!(
        matches!(&outbound.kind, ListenerKind::Http { routes } if routes.is_empty()),
        "{:?}",
        outbound.kind
    );
    assert_eq!(payments.config.clusters.len(), 1);

    // What a sidecar receives reads back to the same config.
    let again = remora_config::load_str("sent", &web.yaml).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(remora_config::to_yaml(&again), web.yaml);
}

#[test]
fn the_version_names_the_content() {
    let sources = example();
    let a = mesh::load(&sources).unwrap().version;
    assert_eq!(a, mesh::load(&sources).unwrap().version, "stable");
    assert_eq!(a.len(), 16);
    // The directory's path is not part of it: replicas may mount it elsewhere.
    let moved: Vec<Source> = sources
        .iter()
        .map(|s| {
            source(
                &s.name.replace("examples/mesh", "examples/../examples/mesh"),
                &s.text,
            )
        })
        .collect();
    assert_eq!(a, mesh::load(&moved).unwrap().version);
    let mut edited = sources.clone();
    edited[0].text.push_str("\n# a comment\n");
    assert_ne!(a, mesh::load(&edited).unwrap().version);
}

#[test]
fn problems_are_reported_in_their_own_files_all_at_once() {
    let a = source(
        "a.yaml",
        "services:\n  - name: web\n    app: 127.0.0.1:8080\n    calls: [ordrs, api]\n",
    );
    let b = source(
        "b.yaml",
        "services:\n  - name: api\n    app: 127.0.0.1:9090\n    cluster:\n      connect_timeout: 0s\n      endpoints: [{ address: 10.0.0.1:80 }]\n  - name: web\n    app: 127.0.0.1:1\n",
    );
    let found = errors(&[a, b]);
    assert_eq!(
        found,
        [
            "a.yaml:4:13: services[0].calls[0]: no service named 'ordrs' (services: web, api)",
            "b.yaml:5:24: services[0].cluster.connect_timeout: 0s is out of range; expected 1ms to 1m",
            "b.yaml:7:11: services[1].name: duplicate service name 'web' (already defined at a.yaml:2:5)",
        ],
        "{found:#?}"
    );
}

#[test]
fn references_and_reserved_names_are_checked_across_files() {
    let found = errors(&[
        source(
            "a.yaml",
            "services:\n  - name: inbound\n    app: 127.0.0.1:1\n  - name: client\n    app: 127.0.0.1:2\n    calls: [quiet]\n",
        ),
        source(
            "b.yaml",
            "services:\n  - name: quiet\n    app: 127.0.0.1:3\n    clusters:\n      - name: client\n        endpoints: []\n",
        ),
        source("c.yaml", "services:\n  - name: x\n    apps: 1\n"),
    ]);
    let joined = found.join("\n");
    for expected in [
        "a.yaml:2:11: services[0].name: 'inbound' is reserved",
        "a.yaml:6:13: services[1].calls[0]: service 'quiet' (at b.yaml:2:5) has no 'cluster' or 'routes'",
        "b.yaml:5:15: services[0].clusters[0].name: cluster name 'client' is the name of the service at a.yaml:4:5",
        "c.yaml:3:5: services[0].apps: unknown field 'apps'",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
}

#[test]
fn an_empty_directory_is_an_empty_mesh() {
    let mesh = mesh::load(&[source("empty.yaml", "")]).unwrap();
    assert!(mesh.services.is_empty());
}

#[test]
fn opaque_ports_reach_the_service_inbound_and_its_callers_outbound() {
    let text = "\
services:
  - name: db
    app: 127.0.0.1:5432
    opaque_ports: [5432, 9187]
    cluster: { endpoints: [{ address: 10.0.0.7:5432 }] }
  - name: cache
    app: 127.0.0.1:6379
    opaque_ports: [6379, 5432]
    cluster: { endpoints: [{ address: 10.0.0.8:6379 }] }
  - name: web
    app: 127.0.0.1:8080
    calls: [db, cache]
    passthrough: http
";
    let mesh = mesh::load(&[source("m.yaml", text)]).unwrap_or_else(|d| panic!("{d}"));
    let db = mesh.service("db").unwrap();
    assert_eq!(db.config.listeners[0].name, "inbound");
    assert_eq!(db.config.listeners[0].opaque_ports, [5432, 9187]);
    assert!(
        db.config.listeners[0].follow_original_port,
        "the pod's other ports reach the app"
    );
    let web = mesh.service("web").unwrap();
    assert!(web.config.listeners[0].opaque_ports.is_empty());
    let outbound = &web.config.listeners[1];
    assert!(outbound.transparent);
    assert_eq!(
        outbound.opaque_ports,
        [5432, 6379, 9187],
        "sorted, once each"
    );

    let bad = text.replace("[5432, 9187]", "[5432, 0, 5432]");
    assert_eq!(
        errors(&[source("m.yaml", &bad)]),
        [
            "m.yaml:4:26: services[0].opaque_ports[1]: 0 is not a TCP port; expected 1 to 65535",
            "m.yaml:4:29: services[0].opaque_ports[2]: port 5432 is listed twice",
        ]
    );
}
