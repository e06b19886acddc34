//! The control plane as a child process, the mesh directory it reads, and sidecars that take
//! their config from it: `remora control-plane` and `remora-proxy --control-plane`, started the
//! way users start them, on `127.0.0.1:0`.
//!
//! - [`ControlPlaneProcess`]: `remora control-plane --config-dir DIR`; its addresses, `/status`,
//!   `/metrics`, `remora status` against it, and kill / restart on the same ports;
//! - [`MeshDir`]: the directory, with files replaced the way editors do (temp file + rename);
//! - [`Sidecar`]: a [`ProxyProcess`] in control-plane mode, with a node name, and its listener
//!   addresses re-read from the `--write-addrs` file the proxy rewrites on every change;
//! - [`Traffic`]: GET loops with a chosen `Host` (what a workload sends to its outbound
//!   listener), checking every answer, for tests that break things under load;
//! - [`Forwarder`]: a TCP forwarder whose backend can be switched, standing for a Kubernetes
//!   Service in front of control-plane replicas.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{self, Client, Proto, Reply};
use crate::metrics::Metrics;
use crate::process::{Captured, ProxyProcess, START_TIMEOUT};
use crate::raw;
use crate::util::{POLL_INTERVAL, TempDir, wait_for};

mod forwarder;
mod traffic;

pub use forwarder::Forwarder;
pub use traffic::{Traffic, TrafficReport};

/// How long a test waits for the mesh to converge (every sidecar SYNCED): well under a second
/// normally, far longer on a loaded 2-core machine with dozens of proxies.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The `remora` program as built in this package (`src/bin/e2e-remora.rs`).
pub const CONTROL_PLANE_BIN: &str = "e2e-remora";

/// Path of the `remora` program.
///
/// `REMORA_BIN` wins when set. Otherwise it is the one Cargo built next to the test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/remora`): this package cannot build
/// another package's binary, so run `cargo build -p remora-control-plane` first.
pub fn control_plane_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REMORA_BIN") {
        return PathBuf::from(p);
    }
    for var in [
        format!("NEXTEST_BIN_EXE_{CONTROL_PLANE_BIN}"),
        format!("NEXTEST_BIN_EXE_{}", CONTROL_PLANE_BIN.replace('-', "_")),
    ] {
        if let Some(p) = std::env::var_os(var) {
            return PathBuf::from(p);
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps has a parent");
    }
    dir.join(format!(
        "{CONTROL_PLANE_BIN}{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// Runs `remora ARGS` to completion (for `remora status`, `remora validate`).
pub fn remora(args: &[&str]) -> Output {
    Command::new(control_plane_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "run {}: {e} (build it with `cargo build -p remora-control-plane`)",
                control_plane_bin().display()
            )
        })
}

/// A mesh config directory, removed on drop.
pub struct MeshDir {
    dir: TempDir,
}

impl MeshDir {
    pub fn new() -> MeshDir {
        MeshDir {
            dir: TempDir::new("mesh"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path of file `name`, as the control plane names it in diagnostics.
    pub fn file(&self, name: &str) -> String {
        self.dir.file(name)
    }

    /// Writes file `name` the way editors and `kubectl cp` do: a hidden temp file (which the
    /// control plane ignores) renamed over the old one, so a half-written file is never read.
    pub fn write(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write the mesh file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename the mesh file");
    }
}

impl Default for MeshDir {
    fn default() -> Self {
        MeshDir::new()
    }
}

/// The addresses a control plane bound, as written to its `--write-addrs` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpAddrs {
    /// Where sidecars connect.
    pub listen: SocketAddr,
    /// `/status`, `/metrics`, `/ready`, `/live`.
    pub admin: SocketAddr,
}

/// A running `remora control-plane`. Killed on drop; if the test is panicking, its stderr is
/// printed first.
pub struct ControlPlaneProcess {
    /// `None` once killed.
    child: Option<Child>,
    config_dir: PathBuf,
    /// Flags after the harness's own (`--bootstrap-tokens`, CA files...); a restart may change
    /// them.
    args: Vec<String>,
    addrs: CpAddrs,
    stderr: Arc<Captured>,
    pumps: Vec<JoinHandle<()>>,
    /// Holds the addrs file.
    own: TempDir,
}

impl ControlPlaneProcess {
    /// Starts a control plane serving `config_dir`, both listeners on port 0, and waits until
    /// it answers `/live`.
    pub fn start(config_dir: &Path) -> ControlPlaneProcess {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        Self::start_on(config_dir, loopback, loopback)
    }

    /// As [`ControlPlaneProcess::start`], with extra flags (`--bootstrap-tokens FILE`,
    /// `--dev-ca-dir DIR`, `--cert-lifetime 60s`...).
    pub fn start_with(config_dir: &Path, args: &[&str]) -> ControlPlaneProcess {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut cp = Self::new(config_dir, loopback, loopback);
        cp.args = args.iter().map(|a| (*a).to_owned()).collect();
        cp.spawn(loopback, loopback);
        cp
    }

    /// As [`ControlPlaneProcess::start`], on the given addresses.
    pub fn start_on(config_dir: &Path, listen: SocketAddr, admin: SocketAddr) -> Self {
        let mut cp = Self::new(config_dir, listen, admin);
        cp.spawn(listen, admin);
        cp
    }

    fn new(config_dir: &Path, listen: SocketAddr, admin: SocketAddr) -> Self {
        ControlPlaneProcess {
            child: None,
            config_dir: config_dir.to_owned(),
            args: Vec::new(),
            addrs: CpAddrs { listen, admin },
            stderr: Arc::default(),
            pumps: Vec::new(),
            own: TempDir::new("control-plane"),
        }
    }

    fn spawn(&mut self, listen: SocketAddr, admin: SocketAddr) {
        let addrs_file = self.own.path().join("addrs.json");
        let _ = std::fs::remove_file(&addrs_file);
        let mut child = Command::new(control_plane_bin())
            .arg("control-plane")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(["--listen", &listen.to_string()])
            .args(["--admin", &admin.to_string()])
            .arg("--write-addrs")
            .arg(&addrs_file)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn {}: {e} (build it with `cargo build -p remora-control-plane`)",
                    control_plane_bin().display()
                )
            });
        self.stderr = Arc::new(Captured::default());
        self.pumps
            .push(self.stderr.clone().pump(child.stderr.take().unwrap()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        // The file is written in place, not renamed: it may be seen empty or half written.
        self.addrs = loop {
            self.assert_running("waiting for the addrs file");
            if let Some(addrs) = std::fs::read_to_string(&addrs_file)
                .ok()
                .and_then(|t| parse_addrs(&t))
            {
                break addrs;
            }
            assert!(
                Instant::now() < deadline,
                "control plane wrote no addrs file within {START_TIMEOUT:?}; stderr:\n{}",
                self.stderr.text()
            );
            std::thread::sleep(POLL_INTERVAL);
        };
        loop {
            self.assert_running("waiting for /live");
            if raw::get(self.addrs.admin, "/live").is_ok_and(|r| r.status == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "control plane not live");
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn assert_running(&mut self, doing: &str) {
        let child = self.child.as_mut().expect("the control plane was killed");
        if let Ok(Some(status)) = child.try_wait() {
            for p in self.pumps.drain(..) {
                let _ = p.join();
            }
            panic!(
                "control plane exited with {status} while {doing}; stderr:\n{}",
                self.stderr.text()
            );
        }
    }

    /// Kills it (SIGKILL: no goodbye to the sidecars) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same addresses and directory (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        let CpAddrs { listen, admin } = self.addrs;
        self.spawn(listen, admin);
        assert_eq!(self.addrs, CpAddrs { listen, admin });
    }

    /// As [`ControlPlaneProcess::restart`], with these extra flags instead of the ones it ran
    /// with (another CA, another trust bundle).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.restart();
    }

    pub fn addrs(&self) -> CpAddrs {
        self.addrs
    }

    /// Where `--webhook-listen` bound (port 0 resolved), from its addrs file; `None` without a
    /// webhook.
    pub fn webhook(&self) -> Option<SocketAddr> {
        self.written_addr("webhook")
    }

    /// Where `--listen-tls` bound (port 0 resolved); `None` without it.
    pub fn listen_tls(&self) -> Option<SocketAddr> {
        self.written_addr("listen_tls")
    }

    fn written_addr(&self, key: &str) -> Option<SocketAddr> {
        let text = std::fs::read_to_string(self.own.path().join("addrs.json")).ok()?;
        let doc: Value = serde_json::from_str(&text).ok()?;
        doc[key].as_str()?.parse().ok()
    }

    /// What sidecars are given as `--control-plane`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addrs.listen)
    }

    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin
    }

    pub fn admin_get(&self, path: &str) -> raw::RawResponse {
        raw::get(self.addrs.admin, path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// `GET /status`, parsed.
    pub fn status(&self) -> Value {
        let resp = self.admin_get("/status");
        assert_eq!(resp.status, 200, "/status: {}", resp.text());
        serde_json::from_str(&resp.text())
            .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", resp.text()))
    }

    /// The version served now; panics if there is none.
    pub fn version(&self) -> String {
        let status = self.status();
        status["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no version served: {status}"))
            .to_owned()
    }

    /// `GET /metrics`, parsed.
    pub fn metrics(&self) -> Metrics {
        let resp = self.admin_get("/metrics");
        assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
        Metrics::parse(&resp.text())
    }

    /// One sample of `/metrics` (0 when absent, as for a counter never incremented).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics().get(name, labels).unwrap_or(0.0)
    }

    /// `remora status --admin ADDR [args]`: exit code and stdout. Panics on anything on stderr
    /// when it succeeds.
    pub fn status_text(&self, args: &[&str]) -> (i32, String) {
        let admin = self.addrs.admin.to_string();
        let mut all = vec!["status", "--admin", &admin];
        all.extend_from_slice(args);
        let out = remora(&all);
        let code = out.status.code().unwrap_or(-1);
        (code, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `/status` until `pred` holds; returns that status. Panics after `timeout`,
    /// showing the last status.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if pred(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; /status:\n{status:#}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until a version other than `old` is served (an edit was accepted); returns it.
    pub fn wait_new_version(&self, old: &str) -> String {
        let status = self.wait_status(
            &format!("a version other than {old}"),
            CONVERGE_TIMEOUT,
            |s| s["version"].as_str().is_some_and(|v| v != old),
        );
        status["version"].as_str().unwrap().to_owned()
    }

    /// Waits until exactly `nodes` are connected, each SYNCED at the version served, which is
    /// `version` when given; returns that status.
    pub fn wait_synced(&self, nodes: &[&str], version: Option<&str>) -> Value {
        let mut want: Vec<&str> = nodes.to_vec();
        want.sort_unstable();
        self.wait_status(
            &format!("{nodes:?} SYNCED at {version:?}"),
            CONVERGE_TIMEOUT,
            |s| {
                let Some(served) = s["version"].as_str() else {
                    return false;
                };
                let mut connected: Vec<&str> = sidecars(s)
                    .iter()
                    .filter(|r| r["connected"] == true)
                    .map(|r| r["node"].as_str().unwrap_or(""))
                    .collect();
                connected.sort_unstable();
                version.is_none_or(|v| v == served)
                    && connected == want
                    && want.iter().all(|n| {
                        let r = sidecar_row(s, n);
                        r["state"] == "SYNCED" && r["version"] == served
                    })
            },
        )
    }

    pub fn stderr(&self) -> &Captured {
        &self.stderr
    }
}

impl Drop for ControlPlaneProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- remora control-plane ({}) stderr ---\n{}\n--- end ---",
                self.addrs.listen,
                self.stderr.text()
            );
        }
        self.kill();
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
    }
}

fn parse_addrs(text: &str) -> Option<CpAddrs> {
    let doc: Value = serde_json::from_str(text).ok()?;
    Some(CpAddrs {
        listen: doc["listen"].as_str()?.parse().ok()?,
        admin: doc["admin"].as_str()?.parse().ok()?,
    })
}

/// The `sidecars` rows of a `/status`.
pub fn sidecars(status: &Value) -> &[Value] {
    status["sidecars"].as_array().map_or(&[], Vec::as_slice)
}

/// The row of `node` in a `/status`; panics if there is none.
pub fn sidecar_row(status: &Value, node: &str) -> Value {
    sidecars(status)
        .iter()
        .find(|r| r["node"] == node)
        .cloned()
        .unwrap_or_else(|| panic!("no sidecar {node} in /status: {status:#}"))
}

/// A sidecar: `remora-proxy --control-plane URL --node NODE --service SERVICE`, admin on port 0,
/// access log off. Derefs to its [`ProxyProcess`].
pub struct Sidecar {
    proxy: ProxyProcess,
    node: String,
}

/// Extra arguments for a sidecar that binds both listeners on port 0, so any number of them
/// run on one host.
pub const ANY_PORTS: [&str; 4] = ["--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0"];

impl Sidecar {
    /// Starts a sidecar and waits until it is ready (its first config version applied).
    pub fn start(control_plane: &str, node: &str, service: &str, extra: &[&str]) -> Sidecar {
        let mut sidecar = Sidecar::spawn(control_plane, node, service, extra);
        sidecar.proxy.wait_ready(CONVERGE_TIMEOUT);
        sidecar
    }

    /// Starts a sidecar and returns once its admin listener is up, ready or not.
    pub fn spawn(control_plane: &str, node: &str, service: &str, extra: &[&str]) -> Sidecar {
        let proxy = ProxyProcess::builder()
            .args(["--control-plane", control_plane])
            .args(["--node", node, "--service", service])
            .args(["--admin", "127.0.0.1:0", "--access-log", "off"])
            .args(extra.iter().copied())
            .spawn();
        Sidecar {
            proxy,
            node: node.to_owned(),
        }
    }

    /// Starts `n` sidecars of `service` at once (nodes `{prefix}-0`, `{prefix}-1`, ...), on
    /// [`ANY_PORTS`], and waits until every one is ready.
    pub fn start_many(control_plane: &str, prefix: &str, service: &str, n: usize) -> Vec<Sidecar> {
        std::thread::scope(|s| {
            let spawned: Vec<_> = (0..n)
                .map(|i| {
                    s.spawn(move || {
                        Sidecar::start(control_plane, &format!("{prefix}-{i}"), service, &ANY_PORTS)
                    })
                })
                .collect();
            spawned
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn proxy(&self) -> &ProxyProcess {
        &self.proxy
    }

    pub fn proxy_mut(&mut self) -> &mut ProxyProcess {
        &mut self.proxy
    }

    /// Where listener `name` (`inbound` or `outbound`) is bound now, from the `--write-addrs`
    /// file, which the sidecar rewrites whenever its listeners change; `None` if it has no
    /// such listener (yet).
    pub fn try_listener(&self, name: &str) -> Option<SocketAddr> {
        self.proxy
            .try_read_addrs_file()?
            .listeners
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// As [`Sidecar::try_listener`]; panics if there is no such listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        wait_for(
            &format!("listener {name} of sidecar {}", self.node),
            START_TIMEOUT,
            || self.try_listener(name),
        )
    }

    /// `remora_config_reloads_total{result}` of this sidecar: versions applied or refused.
    pub fn reloads(&self, result: &str) -> f64 {
        self.proxy
            .scrape()
            .get("remora_config_reloads_total", &[("result", result)])
            .unwrap_or(0.0)
    }
}

impl Deref for Sidecar {
    type Target = ProxyProcess;

    fn deref(&self) -> &ProxyProcess {
        &self.proxy
    }
}

/// `GET target` with `Host: host` on a new HTTP/1.1 connection to `addr`; `Err` on a transport
/// error (nothing listening yet, say) instead of a panic.
pub async fn get_host(addr: SocketAddr, host: &str, target: &str) -> Result<Reply, String> {
    let host = host.to_owned();
    let target = target.to_owned();
    client::background()
        .spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect {addr}: {e}"))?;
            drop(stream);
            let mut c = Client::connect(addr, Proto::Http1).await;
            let req = client::request("GET", &target)
                .header(http::header::HOST, host)
                .body(client::empty())
                .expect("valid request");
            let resp = c.send(req).await.map_err(|e| e.to_string())?;
            Reply::read(resp).await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("request task: {e}"))?
}

/// Polls the async `check` until it returns `Some`; panics with `what` after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
