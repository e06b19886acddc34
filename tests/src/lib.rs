//! End-to-end test harness: the real `remora-proxy` program, scripted upstreams and real clients,
//! all on `127.0.0.1:0`. The tests themselves are in `tests/e2e/`, one file per theme.
//!
//! A test reads top to bottom as what a user would do:
//!
//! ```no_run
//! use remora_tests::{Behaviour, Client, ProxyProcess, Proto, Upstream};
//!
//! # async fn example() {
//! let upstream = Upstream::start(Behaviour::Echo);
//! let proxy = ProxyProcess::start(&format!(
//!     r#"
//! admin: {{ address: 127.0.0.1:0 }}
//! listeners:
//!   - name: main
//!     address: 127.0.0.1:0
//!     routes: [{{ name: all, cluster: app }}]
//! clusters:
//!   - name: app
//!     endpoints: [{{ address: "{}" }}]
//! "#,
//!     upstream.addr()
//! ));
//! let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
//! let reply = client.get("/hello?x=1").await;
//! assert_eq!(reply.echo().uri(), "/hello?x=1");
//! proxy.wait_metric(
//!     "remora_requests_total",
//!     &[("listener", "main"), ("direction", "inbound"), ("route", "all"),
//!       ("cluster", "app"), ("status_class", "2xx")],
//!     1.0,
//! );
//! # }
//! ```
//!
//! The rooms:
//! - [`process`]: [`ProxyProcess`], the proxy as a child process (config, addresses, readiness,
//!   metrics, captured output, RSS, shutdown);
//! - [`clusters`]: the admin `/clusters` page read back, endpoint by endpoint;
//! - [`control_plane`]: [`ControlPlaneProcess`] (`remora control-plane`), the [`MeshDir`] it
//!   reads, and [`Sidecar`]s that take their config from it;
//! - [`mtls`]: mutual TLS from outside: bootstrap tokens and CA files, certificates made in the
//!   test, a TLS client that presents them, a forwarder that records the wire;
//! - [`dns`]: [`dns::Dnsmasq`], a real DNS server whose records a test changes;
//! - [`upstream`]: [`Upstream`], scripted HTTP/1.1 + h2c servers driven by a [`Behaviour`], and
//!   [`Echo`], the request description they answer with;
//! - [`client`]: [`Client`], HTTP/1.1 and h2c clients on hyper's connection API;
//! - [`raw`]: byte-level HTTP and TCP: malformed requests, TCP echo, misbehaving servers;
//! - [`raw_h2`]: HTTP/2 frame by frame: floods and other things no client library sends;
//! - [`body`]: large bodies generated and checked chunk by chunk, never held whole;
//! - [`load`]: request loops on keep-alive HTTP/1.1 and h2c connections, checking every
//!   response, for tests that change the proxy under traffic;
//! - [`metrics`]: the `/metrics` text parsed into samples;
//! - [`python`]: real gRPC and WebSocket peers, Python scripts in `tests/python/` run in the
//!   venv `scripts/test.sh` sets up;
//! - [`util`]: free ports, temp dirs, polling.

pub mod body;
pub mod client;
pub mod clusters;
pub mod control_plane;
pub mod dns;
pub mod load;
pub mod metrics;
pub mod mtls;
pub mod netns;
pub mod process;
pub mod python;
pub mod raw;
pub mod raw_h2;
pub mod upstream;
pub mod util;

pub use body::{ChannelBody, PatternBody, PatternCheck};
pub use client::{Client, Proto, Reply};
pub use clusters::Clusters;
pub use control_plane::{ControlPlaneProcess, MeshDir, Sidecar};
pub use metrics::Metrics;
pub use process::{ProxyProcess, proxy_bin};
pub use raw::RawServer;
pub use upstream::{Behaviour, Echo, Gate, Upstream};
pub use util::{TempDir, eventually, free_addr, free_addrs, wait_for};

/// The config of a proxy with one HTTP listener `main` whose route `all` sends everything to
/// cluster `app` (protocol `http1` or `http2`) with the given endpoints; admin on, access log
/// off. The common case for tests that are not about config.
pub fn simple_config(protocol: &str, endpoints: &[std::net::SocketAddr]) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{ address: \"{a}\" }}"))
        .collect();
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - name: all
        cluster: app
clusters:
  - name: app
    protocol: {protocol}
    endpoints: [{}]
"#,
        endpoints.join(", ")
    )
}
