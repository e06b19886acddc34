//! The control plane (`remora control-plane`) and sidecars in control-plane mode, as real
//! processes: the mesh directory is served to every sidecar, edits reach them through real
//! requests, bad edits are refused, a sidecar that cannot apply a version says why, and the
//! sidecars keep serving while the control plane dies, restarts, or moves to another replica.
//!
//! Most tests run the mesh `web -> api -> db` ([`Shop`]): one file per service, each app an
//! echo upstream named after its service, each sidecar's inbound listener on a port picked for
//! it and written in the mesh (callers' clusters point there), outbound listeners on port 0.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use remora_tests::control_plane::{
    ANY_PORTS, CONVERGE_TIMEOUT, Forwarder, Sidecar, Traffic, get_host, sidecar_row, sidecars,
    until,
};
use remora_tests::{
    Behaviour, ControlPlaneProcess, MeshDir, Metrics, TempDir, Upstream, free_addr, free_addrs,
};
use serde_json::Value;

mod outage;
mod push;
mod sync;

/// The most an edit may take to change what every sidecar does (debounce included).
const EDIT_DEADLINE: Duration = Duration::from_secs(1);

/// The mesh config of one service. Its callers reach it at its sidecar's `inbound`; its one
/// route `main` sets `x-mesh-rev: rev` on the requests callers send it. `extra` is pasted
/// after the `app:` line.
fn service_yaml(
    name: &str,
    app: SocketAddr,
    inbound: SocketAddr,
    calls: &[&str],
    rev: u32,
    extra: &str,
) -> String {
    let calls = match calls {
        [] => String::new(),
        c => format!("    calls: [{}]\n", c.join(", ")),
    };
    format!(
        r#"services:
  - name: {name}
    namespace: shop
    app: "{app}"
{extra}    inbound: "{inbound}"
{calls}    cluster:
      endpoints: [{{ address: "{inbound}" }}]
    routes:
      - name: main
        cluster: {name}
        request_headers: {{ set: {{ x-mesh-rev: "{rev}" }} }}
"#
    )
}

/// `file:line:col` of the first occurrence of `needle` in `text`, 1-based, as diagnostics say.
fn position(file: &str, text: &str, needle: &str) -> String {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"));
    format!("{file}:{}:{}", i + 1, line.find(needle).unwrap() + 1)
}

/// web calls api, api calls db. Their apps, and a second db app an edit can move db to.
struct Shop {
    web: Upstream,
    api: Upstream,
    db: Upstream,
    db_v2: Upstream,
    /// The inbound listeners of the web, api and db sidecars.
    inbound: [SocketAddr; 3],
}

impl Shop {
    fn new() -> Shop {
        let [w, a, d] = free_addrs(3)[..] else {
            unreachable!()
        };
        Shop {
            web: Upstream::start_named("web", Behaviour::Echo),
            api: Upstream::start_named("api", Behaviour::Echo),
            db: Upstream::start_named("db", Behaviour::Echo),
            db_v2: Upstream::start_named("db-v2", Behaviour::Echo),
            inbound: [w, a, d],
        }
    }

    fn web_yaml(&self) -> String {
        service_yaml("web", self.web.addr(), self.inbound[0], &["api"], 1, "")
    }

    fn api_yaml(&self, rev: u32) -> String {
        service_yaml("api", self.api.addr(), self.inbound[1], &["db"], rev, "")
    }

    /// db's file; `v2` moves db to its second app.
    fn db_yaml(&self, rev: u32, v2: bool) -> String {
        let app = if v2 { &self.db_v2 } else { &self.db };
        service_yaml("db", app.addr(), self.inbound[2], &[], rev, "")
    }

    /// Writes the first version: rev 1 everywhere, db on its first app.
    fn write(&self, dir: &MeshDir) {
        dir.write("web.yaml", &self.web_yaml());
        dir.write("api.yaml", &self.api_yaml(1));
        dir.write("db.yaml", &self.db_yaml(1, false));
    }

    /// Sidecars `web-1`, `api-1`, `db-1`, connected to `control_plane`, inbound where the
    /// mesh says; ready.
    fn sidecars(&self, control_plane: &str) -> Vec<Sidecar> {
        std::thread::scope(|s| {
            let started: Vec<_> = ["web", "api", "db"]
                .into_iter()
                .map(|svc| {
                    s.spawn(move || {
                        let args = ["--namespace", "shop", "--outbound", "127.0.0.1:0"];
                        Sidecar::start(control_plane, &format!("{svc}-1"), svc, &args)
                    })
                })
                .collect();
            started.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

const SHOP_NODES: [&str; 3] = ["web-1", "api-1", "db-1"];

/// What a request with `Host: host` through `sidecar`'s outbound listener reaches: the app
/// that answered and the `x-mesh-rev` it received; `None` if it was not a 200 echo.
async fn call(sidecar: &Sidecar, host: &str) -> Option<(String, String)> {
    let reply = get_host(sidecar.try_listener("outbound")?, host, "/call")
        .await
        .ok()?;
    if reply.status != 200 {
        return None;
    }
    let echo = reply.echo();
    Some((
        echo.upstream().to_owned(),
        echo.header("x-mesh-rev").unwrap_or("").to_owned(),
    ))
}

fn pair(app: &str, rev: &str) -> Option<(String, String)> {
    Some((app.to_owned(), rev.to_owned()))
}

/// The `remora status` table rows (after the header line `NODE ...`), by node.
fn status_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.starts_with("NODE"))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Checks `remora status` shows the version and generation of `status`, and every one of
/// `nodes` SYNCED at that version, one line each.
fn assert_status_text(cp: &ControlPlaneProcess, status: &Value, nodes: &[&str]) {
    let (code, text) = cp.status_text(&[]);
    assert_eq!(code, 0, "{text}");
    let version = status["version"].as_str().unwrap();
    let first = text.lines().next().unwrap_or("");
    assert_eq!(
        first,
        format!(
            "version {version} (generation {}) from {}",
            status["generation"],
            status["config_dir"].as_str().unwrap()
        ),
        "{text}"
    );
    assert!(!text.contains("REJECTED"), "{text}");
    let rows = status_rows(&text);
    assert_eq!(rows.len(), nodes.len(), "{text}");
    for node in nodes {
        let row = rows
            .iter()
            .find(|r| r[0] == *node)
            .unwrap_or_else(|| panic!("no line for {node}:\n{text}"));
        // NODE SERVICE NAMESPACE VERSION STATE LAST SEEN
        assert_eq!(row[3], version, "{text}");
        assert_eq!(row[4], "SYNCED", "{text}");
    }
}
