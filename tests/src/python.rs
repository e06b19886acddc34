//! Real gRPC and WebSocket peers: Python programs kept in `tests/python/`, run with the venv
//! that `scripts/test.sh` creates (grpcio, websockets; pinned in `tests/python/requirements.txt`).
//!
//! - [`PyServer`] starts a server script, which binds `127.0.0.1:0` and prints `{"port": N}` as
//!   its first line of output; later lines are events the test can wait for. Lines the test
//!   writes to its stdin ([`PyServer::send_line`]) are commands.
//! - [`run`] runs a client script to its end and returns the JSON it printed last.
//!
//! The interpreter is `REMORA_TEST_PYTHON` (set by `scripts/test.sh`), else `.venv/bin/python`
//! at the repository root. Without one, a test fails and says to run `scripts/test.sh`: these
//! tests never pass by being skipped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::process::Captured;

/// How long a server script gets to print its port (importing grpcio takes a moment).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client script may run before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run scripts/test.sh once: it creates .venv at the repository root \
     with the pinned packages of tests/python/requirements.txt and exports REMORA_TEST_PYTHON";

/// The Python interpreter of the test venv. Panics, saying how to get one, if there is none.
pub fn python() -> PathBuf {
    let (path, from) = match std::env::var_os("REMORA_TEST_PYTHON") {
        Some(p) => (PathBuf::from(p), "REMORA_TEST_PYTHON"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
            "the default .venv",
        ),
    };
    assert!(
        path.exists(),
        "no Python for the gRPC and WebSocket tests at {} ({from}); {SETUP_HINT}",
        path.display()
    );
    path
}

/// Path of a script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

fn command(name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    // Unbuffered, so every line arrives when printed; no proxies from the environment.
    cmd.arg("-u")
        .arg(script(name))
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("grpc_proxy")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY");
    cmd
}

/// A server script running as a child process. Killed on drop.
pub struct PyServer {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// Lines after the first (the port): events the script reports.
    events: Arc<Captured>,
    stderr: Arc<Captured>,
}

impl PyServer {
    /// Starts `tests/python/<name>` and waits for the port it bound.
    pub fn start(name: &str, args: &[&str]) -> PyServer {
        let mut child = command(name, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} with {}: {e}", python().display()));
        let stderr = Arc::new(Captured::default());
        stderr.clone().pump(child.stderr.take().unwrap());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let events = Arc::new(Captured::default());
        {
            let events = events.clone();
            std::thread::spawn(move || {
                let mut first = String::new();
                let _ = stdout.read_line(&mut first);
                let _ = tx.send(first);
                events.pump(stdout.into_inner());
            });
        }
        let first = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) if !line.is_empty() => line,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "{name} printed no port within {START_TIMEOUT:?}; stderr:\n{}\n({SETUP_HINT})",
                    stderr.text()
                );
            }
        };
        let doc: serde_json::Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("{name}: first line {first:?} is not JSON: {e}"));
        let port = doc["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: no port in {first:?}"));
        PyServer {
            name: name.to_owned(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port as u16)),
            events,
            stderr,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the script has reported an event (a JSON line) for which `pick` returns
    /// `Some`, and returns that. Panics after `timeout`, showing what it did report.
    pub fn wait_event<T>(
        &self,
        timeout: Duration,
        mut pick: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .events
                .lines()
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .find_map(|v| pick(&v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no such event within {timeout:?}; events:\n{}\nstderr:\n{}",
                self.name,
                self.events.text(),
                self.stderr.text()
            );
            std::thread::sleep(crate::util::POLL_INTERVAL);
        }
    }

    /// Writes one line to the script's stdin, for scripts that take commands there (see the
    /// script's docstring). Panics if the script has stopped reading.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("stdin is open until drop");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: writing to stdin: {e}", self.name));
    }

    /// What the script wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} stderr ---\n{}\n--- events ---\n{}\n--- end ---",
                self.name,
                self.stderr.text(),
                self.events.text()
            );
        }
        // Closing stdin asks the script to stop; the kill makes sure.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/python/<name> args...` to its end and returns the JSON object on the last line
/// it printed. Panics if it fails or runs longer than [`RUN_TIMEOUT`].
pub fn run(name: &str, args: &[&str]) -> serde_json::Value {
    let mut child = command(name, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name} with {}: {e}", python().display()));
    let stdout = Arc::new(Captured::default());
    let stderr = Arc::new(Captured::default());
    let pumps = [
        stdout.clone().pump(child.stdout.take().unwrap()),
        stderr.clone().pump(child.stderr.take().unwrap()),
    ];
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} {args:?} still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                stderr.text()
            );
        }
        std::thread::sleep(crate::util::POLL_INTERVAL);
    };
    for p in pumps {
        let _ = p.join();
    }
    assert!(
        status.success(),
        "{name} {args:?} exited with {status}; stdout:\n{}\nstderr:\n{}\n({SETUP_HINT})",
        stdout.text(),
        stderr.text()
    );
    let lines = stdout.lines();
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("{name} {args:?} printed nothing"));
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{name} {args:?}: last line {last:?} is not JSON: {e}"))
}
