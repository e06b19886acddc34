//! The proxy as a child process: the real program, started the way users start it.
//!
//! [`ProxyProcess::start`] writes a config to a temp dir and runs
//! `remora-proxy --config FILE --write-addrs FILE`; the proxy writes the addresses it bound
//! (port 0 resolved) to the second file, and the harness then polls the admin `/ready` until it
//! answers 200. No fixed ports, no sleeps.
//!
//! Tests of hot reload change the config with [`ProxyProcess::write_config`] and re-read the
//! addresses with [`ProxyProcess::refresh_addrs`]; tests of draining send signals with
//! [`ProxyProcess::signal`] and wait with [`ProxyProcess::wait_exit`].
//!
//! Output is captured line by line: access-log lines on stdout by default, the proxy's own logs
//! on stderr. The child is killed on drop; if the test is panicking, its stderr is printed first.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clusters::Clusters;
use crate::metrics::Metrics;
use crate::raw::{self, RawResponse};
use crate::util::{TempDir, wait_for};

/// How long a proxy gets to bind and become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`ProxyProcess::wait_metric`] waits for a value.
pub const METRIC_TIMEOUT: Duration = Duration::from_secs(5);

/// Name of the config file the harness writes in the proxy's directory.
const CONFIG_FILE: &str = "remora.yaml";

/// Name of the `--write-addrs` file in the proxy's directory.
const ADDRS_FILE: &str = "addrs.json";

/// Name of the proxy program built by this package (see `src/bin/e2e-remora-proxy.rs`).
pub const BIN_NAME: &str = "e2e-remora-proxy";

/// Path of the proxy program.
///
/// `REMORA_PROXY_BIN` wins when set (to run the suite against another build, e.g. release).
/// Otherwise it is found next to the running test executable, where Cargo puts a package's
/// binaries (`target/<profile>/deps/<test>` -> `target/<profile>/e2e-remora-proxy`); nextest's
/// `NEXTEST_BIN_EXE_*` is used when present. Integration tests can compare this with
/// `env!("CARGO_BIN_EXE_e2e-remora-proxy")`, which only they can see.
pub fn proxy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REMORA_PROXY_BIN") {
        return PathBuf::from(p);
    }
    for var in [
        format!("NEXTEST_BIN_EXE_{BIN_NAME}"),
        format!("NEXTEST_BIN_EXE_{}", BIN_NAME.replace('-', "_")),
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
    dir.join(format!("{BIN_NAME}{}", std::env::consts::EXE_SUFFIX))
}

/// Lines a child process wrote on one stream, as they arrive.
#[derive(Debug, Default)]
pub struct Captured {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Captured {
    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Everything so far, joined with newlines.
    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until at least `n` lines have arrived and returns all of them. Panics on timeout.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {timeout:?} waiting for {n} lines; have {}:\n{}",
                lines.len(),
                lines.join("\n")
            );
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
        lines.clone()
    }

    /// Waits until a line satisfies `pred` and returns it. Panics on timeout, showing every line.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| pred(l)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {timeout:?} waiting for a line; have {}:\n{}",
                lines.len(),
                lines.join("\n")
            );
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }

    pub(crate) fn pump(self: Arc<Self>, from: impl Read + Send + 'static) -> JoinHandle<()> {
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                match line {
                    Ok(line) => self.push(line),
                    Err(_) => break,
                }
            }
        })
    }
}

/// The addresses a proxy bound, as written to its `--write-addrs` file.
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub admin: Option<SocketAddr>,
    /// The admin status listener (`admin.status_address`, `--status`).
    pub status: Option<SocketAddr>,
    /// `(listener name, address)`.
    pub listeners: Vec<(String, SocketAddr)>,
}

impl BoundAddrs {
    /// As [`BoundAddrs::parse`], `None` for text that is not (yet) an addrs file.
    pub fn try_parse(text: &str) -> Option<BoundAddrs> {
        let doc: serde_json::Value = serde_json::from_str(text).ok()?;
        let addr = |v: &serde_json::Value| v.as_str()?.parse::<SocketAddr>().ok();
        let optional = |key: &str| match &doc[key] {
            serde_json::Value::Null => Some(None),
            a => Some(Some(addr(a)?)),
        };
        let listeners = doc["listeners"]
            .as_object()?
            .iter()
            .map(|(name, a)| Some((name.clone(), addr(a)?)))
            .collect::<Option<Vec<_>>>()?;
        Some(BoundAddrs {
            admin: optional("admin")?,
            status: optional("status")?,
            listeners,
        })
    }

    fn parse(text: &str) -> BoundAddrs {
        BoundAddrs::try_parse(text).unwrap_or_else(|| panic!("not an addrs file: {text:?}"))
    }
}

/// How to start a proxy: config text and/or extra command-line arguments.
#[derive(Debug, Default, Clone)]
pub struct ProxyBuilder {
    config: Option<String>,
    /// A config file the test manages itself (a symlink chain, say); wins over `config`.
    config_file: Option<PathBuf>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ProxyBuilder {
    /// Run with `--config` pointing at a file holding `yaml`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    /// Run with `--config path`, a file the test writes and changes itself (for layouts the
    /// harness does not make, such as a Kubernetes ConfigMap's symlinks).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// An extra command-line argument (zero-config flags, `--workers`, ...).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Spawns the proxy and waits until it is ready: its addresses are written and, if it has
    /// an admin listener, `/ready` answers 200. Panics (with the proxy's stderr) if it exits or
    /// is not ready within [`START_TIMEOUT`].
    ///
    /// Blocks the calling thread for the few milliseconds that takes, which is harmless in an
    /// async test too: upstreams and client connections run on runtimes of their own.
    pub fn start(self) -> ProxyProcess {
        let mut proxy = self.spawn();
        if proxy.addrs.admin.is_some() {
            proxy.wait_ready(START_TIMEOUT);
        }
        proxy
    }

    /// Spawns the proxy and waits only for its addresses file, not for `/ready`: for a sidecar
    /// that has no config yet (it binds its admin listener and waits for the control plane).
    pub fn spawn(self) -> ProxyProcess {
        let dir = TempDir::new("proxy");
        let addrs_file = dir.path().join(ADDRS_FILE);
        let mut cmd = Command::new(proxy_bin());
        let config_file = match (&self.config_file, &self.config) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(yaml)) => {
                let path = dir.path().join(CONFIG_FILE);
                std::fs::write(&path, yaml).expect("write config");
                Some(path)
            }
            (None, None) => None,
        };
        if let Some(path) = &config_file {
            cmd.arg("--config").arg(path);
        }
        let config = match &self.config_file {
            Some(path) => std::fs::read_to_string(path).ok(),
            None => self.config,
        };
        cmd.arg("--write-addrs")
            .arg(&addrs_file)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", proxy_bin().display()));
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        let pumps = vec![
            stdout.clone().pump(child.stdout.take().unwrap()),
            stderr.clone().pump(child.stderr.take().unwrap()),
        ];
        let mut proxy = ProxyProcess {
            child,
            addrs: BoundAddrs {
                admin: None,
                status: None,
                listeners: Vec::new(),
            },
            stdout,
            stderr,
            pumps,
            config,
            config_file,
            dir,
        };
        proxy.addrs = proxy.wait_for_addrs(&addrs_file);
        proxy
    }
}

/// A running `remora-proxy` child process.
pub struct ProxyProcess {
    child: Child,
    addrs: BoundAddrs,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    pumps: Vec<JoinHandle<()>>,
    /// The config it was started with, if any, for failure messages.
    config: Option<String>,
    /// The `--config` path, which the proxy watches for changes.
    config_file: Option<PathBuf>,
    /// Holds the config and addrs files; removed on drop.
    dir: TempDir,
}

impl ProxyProcess {
    /// Starts a proxy from config text. See [`ProxyBuilder::start`].
    pub fn start(yaml: &str) -> ProxyProcess {
        ProxyProcess::builder().config(yaml).start()
    }

    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    fn wait_for_addrs(&mut self, file: &Path) -> BoundAddrs {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.assert_running("waiting for the addrs file");
            if let Ok(text) = std::fs::read_to_string(file) {
                return BoundAddrs::parse(&text);
            }
            assert!(
                Instant::now() < deadline,
                "proxy wrote no addrs file within {START_TIMEOUT:?}; stderr:\n{}",
                self.stderr.text()
            );
            std::thread::sleep(crate::util::POLL_INTERVAL);
        }
    }

    /// Whether the admin `/ready` answers 200 now.
    pub fn is_ready(&self) -> bool {
        raw::get(self.admin(), "/ready").is_ok_and(|r| r.status == 200)
    }

    /// Waits (blocking the thread) until the admin `/ready` answers 200. Panics (with the
    /// proxy's stderr) if it exits or is not ready within `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running("waiting for /ready");
            if self.is_ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready after {timeout:?}; stderr:\n{}",
                self.stderr.text()
            );
            std::thread::sleep(crate::util::POLL_INTERVAL);
        }
    }

    fn assert_running(&mut self, doing: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Let the pumps collect the last words.
            for p in self.pumps.drain(..) {
                let _ = p.join();
            }
            panic!(
                "proxy exited with {status} while {doing}\nconfig:\n{}\nstderr:\n{}",
                self.config.as_deref().unwrap_or("(none)"),
                self.stderr.text()
            );
        }
    }

    /// The bound address of listener `name`. Panics if there is no such listener.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.addrs
            .listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no listener {name:?} in {:?}", self.addrs.listeners))
    }

    /// The admin address. Panics if the config has no admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.addrs.admin.expect("this proxy has no admin listener")
    }

    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding this proxy's config file; tests may put other files there.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `--config` file the proxy watches. Panics if it was started without one.
    pub fn config_file(&self) -> &Path {
        self.config_file
            .as_deref()
            .expect("this proxy was started without --config")
    }

    /// Replaces the config file the way editors and `kubectl cp` do: writes a temporary file
    /// next to it and renames it over the old one, so the proxy never sees half a file. The
    /// proxy applies (or rejects) it shortly after; see `remora_proxy::reload`.
    pub fn write_config(&self, yaml: &str) {
        let path = self.config_file();
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write the new config");
        std::fs::rename(&tmp, path).expect("rename the new config into place");
    }

    /// The `--write-addrs` file as it is now: the proxy rewrites it after every applied reload.
    pub fn read_addrs_file(&self) -> BoundAddrs {
        let file = self.dir.path().join(ADDRS_FILE);
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        BoundAddrs::parse(&text)
    }

    /// The `--write-addrs` file as it is now, `None` if it cannot be read or parsed: for a
    /// caller that polls while the proxy may be rewriting it.
    pub fn try_read_addrs_file(&self) -> Option<BoundAddrs> {
        let text = std::fs::read_to_string(self.dir.path().join(ADDRS_FILE)).ok()?;
        BoundAddrs::try_parse(&text)
    }

    /// Takes the listener addresses from the `--write-addrs` file again, after a reload added,
    /// removed or moved listeners; [`ProxyProcess::listener`] answers from them. The admin
    /// address stays the one read at start: it only changes at a restart.
    pub fn refresh_addrs(&mut self) -> &BoundAddrs {
        self.addrs.listeners = self.read_addrs_file().listeners;
        &self.addrs
    }

    /// Sends `signal` (a name `kill` knows: `TERM`, `INT`, ...) and returns at once.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// The exit status if the proxy has exited, without waiting.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (blocking the thread) for the proxy to exit on its own; afterwards all of its
    /// output has been captured. Panics if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.exit_status() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy is still running after {timeout:?}; stderr:\n{}",
                self.stderr.text()
            );
            std::thread::sleep(crate::util::POLL_INTERVAL);
        };
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        status
    }

    /// How many file descriptors the proxy has open (entries of `/proc/PID/fd`): sockets,
    /// epoll and event fds, pipes, the watcher's inotify fd.
    pub fn open_fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .count()
    }

    /// Resident memory of the proxy process in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Samples the proxy's RSS every few milliseconds on a thread until [`RssSampler::stop`].
    pub fn rss_sampler(&self) -> RssSampler {
        RssSampler::start(self.pid())
    }

    /// `GET path` on the admin listener.
    pub fn admin_get(&self, path: &str) -> RawResponse {
        raw::get(self.admin(), path).unwrap_or_else(|e| panic!("admin GET {path}: {e}"))
    }

    /// The `/metrics` page as text.
    pub fn metrics(&self) -> String {
        let resp = self.admin_get("/metrics");
        assert_eq!(resp.status, 200, "/metrics: {}", resp.text());
        resp.text()
    }

    /// The `/metrics` page, parsed into samples.
    pub fn scrape(&self) -> Metrics {
        Metrics::parse(&self.metrics())
    }

    /// The admin `/clusters` page: every cluster's endpoints with state, load and picks.
    pub fn clusters(&self) -> Clusters {
        let resp = self.admin_get("/clusters");
        assert_eq!(resp.status, 200, "/clusters: {}", resp.text());
        Clusters::parse(&resp.text())
    }

    /// One sample: the value of `name` with exactly these labels, `None` if absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape().get(name, labels)
    }

    /// Waits (blocking the thread) until `name{labels}` equals `want`. Panics after 5 s,
    /// showing the last value. An exchange is counted when its response body ends, which can be
    /// a moment after the client has read that body.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let deadline = Instant::now() + METRIC_TIMEOUT;
        loop {
            let got = self.metric(name, labels);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} is {got:?} after {METRIC_TIMEOUT:?}, want {want}"
            );
            std::thread::sleep(crate::util::POLL_INTERVAL);
        }
    }

    /// Lines the proxy wrote to stdout (access-log lines by default).
    pub fn stdout(&self) -> &Captured {
        &self.stdout
    }

    /// Lines the proxy wrote to stderr (its own logs).
    pub fn stderr(&self) -> &Captured {
        &self.stderr
    }

    /// Asks the proxy to shut down (SIGTERM) and waits for it to exit; afterwards all of its
    /// output has been captured. Panics if it does not exit within 10 s.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
        let status = wait_for("the proxy to exit", Duration::from_secs(10), || {
            self.child.try_wait().expect("try_wait")
        });
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
        status
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- remora-proxy (pid {}) stderr ---\n{}\n--- end ---",
                self.pid(),
                self.stderr.text()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in self.pumps.drain(..) {
            let _ = p.join();
        }
    }
}

/// `VmRSS` of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Peak resident memory of a process over a span of time, sampled on a thread.
pub struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl RssSampler {
    /// How often the RSS is read.
    pub const INTERVAL: Duration = Duration::from_millis(2);

    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut peak = rss_kib(pid);
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    peak = peak.max(rss_kib(pid));
                    std::thread::sleep(Self::INTERVAL);
                }
                peak.max(rss_kib(pid))
            })
        };
        RssSampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the peak RSS seen, in KiB.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .take()
            .expect("not stopped yet")
            .join()
            .expect("sampler thread")
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}
