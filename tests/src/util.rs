//! Small pieces every test needs: free ports, temporary directories, and polling instead of
//! sleeping.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the polling helpers look again. Short enough that a test waits at most a few
/// milliseconds past the moment the condition holds.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// A loopback address nobody listens on right now: bound on port 0, then released.
///
/// Use it for a "dead" endpoint (connect-failed) or for flags that need a fixed port (zero-config
/// mode). Another process could take the port in between, which on a test machine does not
/// happen in practice; prefer port 0 in configs wherever the proxy reports the bound address.
pub fn free_addr() -> SocketAddr {
    free_addrs(1)[0]
}

/// Ports handed out here lie below Linux's ephemeral range (32768 and up), where no other
/// socket bound to port 0, and no outgoing connection, is ever given one: a port picked here
/// and released stays free for the process it is meant for, instead of being taken by the next
/// port-0 listener of the test (a sidecar's admin port took a picked inbound port once).
const PICK_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// `n` distinct free loopback addresses: all bound at once, then released, so no two are
/// equal. Picked below the ephemeral range (see [`PICK_RANGE`]), from a start that differs
/// per process and per call, so concurrent tests rarely try the same ports.
pub fn free_addrs(n: usize) -> Vec<SocketAddr> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(PICK_RANGE.end - PICK_RANGE.start);
    let seed = u64::from(std::process::id()) * 7919
        + CALLS.fetch_add(1, Ordering::Relaxed) * 104_729
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut held: Vec<TcpListener> = Vec::with_capacity(n);
    for i in 0..span {
        if held.len() == n {
            break;
        }
        let port = PICK_RANGE.start + ((seed + i) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(held.len(), n, "no {n} free ports in {PICK_RANGE:?}");
    held.iter()
        .map(|l| l.local_addr().expect("local_addr"))
        .collect()
}

/// A directory under the system temp dir, removed (best effort) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "remora-e2e-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`, as a string ready to paste into YAML.
    pub fn file(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Polls `check` until it returns `Some`, blocking the thread between tries. Panics with `what`
/// after `timeout`.
///
/// Use it from synchronous code only; inside an async test use [`eventually`], which lets the
/// test's own tasks (client connections) run while it waits.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `check` until it returns `Some`, yielding to the runtime between tries. Panics with
/// `what` after `timeout`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
