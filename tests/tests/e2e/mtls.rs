//! Mutual TLS between sidecars, end to end: a control plane that issues certificates
//! (`--bootstrap-tokens`, a dev CA or CA files made by `remora ca init`), sidecars that get
//! them (`--identity-token-file`), real apps behind them and real sockets between them.
//!
//! - [`identity`]: the caller's SPIFFE ID reaches the app and cannot be forged; plaintext is
//!   served or refused by the `mtls` mode; the wire between sidecars carries only TLS;
//! - [`scan`]: what a TLS scanner (sslyze) sees of a strict inbound listener;
//! - [`handshakes`]: each kind of bad certificate refused at a real inbound port, and a server
//!   whose identity only looks like the expected one refused by its caller;
//! - [`rotation`]: certificates renewed under load, and the root CA rolled over under load,
//!   without a failed request;
//! - [`outage`]: the control plane gone past expiry: callers fail closed, then recover.
//!
//! The mesh is `web -> api` in namespace `shop` ([`Mesh`]), plus `edge -> api` where a test
//! needs new connections between sidecars all the time: `edge` calls api once a second, longer
//! apart than the cluster's `idle_timeout`, so each of its calls is a new TLS handshake, while
//! `web`'s load keeps its pooled connections open.

use std::net::SocketAddr;
use std::time::Duration;

use remora_tests::client::{self, Client, Proto, Reply};
use remora_tests::control_plane::{CONVERGE_TIMEOUT, Sidecar};
use remora_tests::mtls::{MeshPki, spiffe_id};
use remora_tests::{Behaviour, ControlPlaneProcess, MeshDir, Upstream, free_addrs};

mod authorization;
mod control_tls;
mod handshakes;
mod health;
mod identity;
mod outage;
mod rotation;
mod scan;

/// The namespace of every test service.
const NS: &str = "shop";

/// The mesh config of one service in [`NS`]: its app, its sidecar's inbound listener, where
/// its callers send to (`endpoint`: the inbound listener, or a forwarder in front of it), and
/// the services it calls. `extra` is pasted after the `app:` line (`mtls:`,
/// `service_account:`), `cluster_extra` after the cluster's `endpoints:` line.
fn service_yaml(
    name: &str,
    app: SocketAddr,
    inbound: SocketAddr,
    endpoint: SocketAddr,
    calls: &[&str],
    extra: &str,
    cluster_extra: &str,
) -> String {
    let calls = match calls {
        [] => String::new(),
        c => format!("    calls: [{}]\n", c.join(", ")),
    };
    format!(
        r#"services:
  - name: {name}
    namespace: {NS}
    app: "{app}"
{extra}    inbound: "{inbound}"
{calls}    cluster:
      endpoints: [{{ address: "{endpoint}" }}]
{cluster_extra}"#
    )
}

/// `web` and `edge` call `api`; api's app is an echo upstream named `api`. Nobody calls web
/// or edge, so their apps are addresses nothing listens on.
struct Mesh {
    pki: MeshPki,
    dir: MeshDir,
    api_app: Upstream,
    /// The inbound listeners of web, api and edge.
    inbound: [SocketAddr; 3],
    /// Where nobody listens: the apps of web and edge.
    nowhere: SocketAddr,
}

impl Mesh {
    fn new() -> Mesh {
        let [web, api, edge, nowhere] = free_addrs(4)[..] else {
            unreachable!()
        };
        Mesh {
            pki: MeshPki::new(&[NS]),
            dir: MeshDir::new(),
            api_app: Upstream::start_named("api", Behaviour::Echo),
            inbound: [web, api, edge],
            nowhere,
        }
    }

    fn api_inbound(&self) -> SocketAddr {
        self.inbound[1]
    }

    /// Writes web.yaml, edge.yaml and api.yaml; `api_extra` goes into api's service (an
    /// `mtls:` line, say), `api_endpoint` replaces api's inbound as where callers send.
    fn write(&self, api_extra: &str, api_endpoint: Option<SocketAddr>) {
        let [web, api, edge] = self.inbound;
        let caller = |name: &str, inbound| {
            service_yaml(name, self.nowhere, inbound, inbound, &["api"], "", "")
        };
        self.dir.write("web.yaml", &caller("web", web));
        self.dir.write("edge.yaml", &caller("edge", edge));
        // Pooled connections to api close after a second unused: edge's calls, further apart,
        // each open a new one.
        let api_yaml = service_yaml(
            "api",
            self.api_app.addr(),
            api,
            api_endpoint.unwrap_or(api),
            &[],
            api_extra,
            "      idle_timeout: 1s\n",
        );
        self.dir.write("api.yaml", &api_yaml);
    }

    /// A control plane with the dev CA and this certificate lifetime.
    fn control_plane(&self, cert_lifetime: &str) -> ControlPlaneProcess {
        let args = self.pki.control_plane_args(cert_lifetime);
        ControlPlaneProcess::start_with(self.dir.path(), &strs(&args))
    }

    /// Sidecars `{service}-1` for each service, with the identity token, started at once;
    /// each ready (certificate and first config in).
    fn sidecars(&self, cp: &ControlPlaneProcess, services: &[&str]) -> Vec<Sidecar> {
        let url = cp.url();
        let args = self.pki.sidecar_args(NS);
        let args = strs(&args);
        std::thread::scope(|s| {
            let started: Vec<_> = services
                .iter()
                .map(|svc| {
                    let (url, args) = (&url, &args);
                    s.spawn(move || Sidecar::start(url, &format!("{svc}-1"), svc, args))
                })
                .collect();
            started.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

/// `GET path` with `Host: host` and extra headers on a new HTTP/1.1 connection to `addr`.
async fn get_with(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut req = client::request("GET", path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(client::empty()).expect("a valid request");
    client::background()
        .spawn(async move {
            let mut c = Client::connect(addr, Proto::Http1).await;
            let resp = c.send(req).await.map_err(|e| e.to_string())?;
            Reply::read(resp).await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("request task: {e}"))?
}

/// A call from `caller`'s workload to api through its outbound listener; panics unless api's
/// app answered it. Returns the identity api's app was told the caller has.
async fn call_api(caller: &Sidecar) -> String {
    let reply = get_with(caller.listener("outbound"), "api", "/call", &[])
        .await
        .unwrap_or_else(|e| panic!("{} -> api: {e}", caller.node()));
    assert_eq!(reply.status, 200, "{} -> api: {reply:?}", caller.node());
    let echo = reply.echo();
    assert_eq!(echo.upstream(), "api");
    echo.header("x-remora-peer-identity")
        .unwrap_or_default()
        .to_owned()
}

/// How long a test waits for something that takes one certificate lifetime or so.
fn lifetimes(n: u32, lifetime: Duration) -> Duration {
    lifetime * n + CONVERGE_TIMEOUT
}

/// web's SPIFFE ID.
fn web_id() -> String {
    spiffe_id(NS, "web")
}

/// Owned flags as the `&str`s the harness takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}
