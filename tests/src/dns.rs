//! [`Dnsmasq`]: a real DNS server for the DNS discovery tests, on 127.0.0.1 and a free port,
//! serving A records from a hosts file the test rewrites (dnsmasq rereads it on SIGHUP) and SRV
//! records fixed at start, all with a 1 s TTL.
//!
//! `dnsmasq` comes from the `dnsmasq-base` package, which `scripts/test.sh` installs. Without
//! it, starting one panics and says so: these tests never skip silently.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{POLL_INTERVAL, TempDir, free_addr};

/// How long dnsmasq gets to answer its first query.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One SRV record: `name` points at `target` (a name in the hosts file) on `port`.
#[derive(Debug, Clone)]
pub struct Srv {
    pub name: String,
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

/// A running dnsmasq. Killed on drop.
pub struct Dnsmasq {
    child: Option<Child>,
    addr: SocketAddr,
    hosts: PathBuf,
    /// Holds the config, hosts and log files.
    dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering A queries for `hosts` (name, address) and SRV queries for
    /// `srv`, and waits until it answers.
    pub fn start(hosts: &[(&str, IpAddr)], srv: &[Srv]) -> Dnsmasq {
        // A port picked free can still be taken before dnsmasq binds it (by a concurrent
        // test); dnsmasq then exits at once, and another port is tried.
        let mut last = String::new();
        for _ in 0..3 {
            match Dnsmasq::try_start(hosts, srv) {
                Ok(dns) => return dns,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("{log}"),
            }
        }
        panic!("{last}")
    }

    fn try_start(hosts: &[(&str, IpAddr)], srv: &[Srv]) -> Result<Dnsmasq, String> {
        let dir = TempDir::new("dnsmasq");
        // dnsmasq started as root reads its files as `nobody`.
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        let hosts_file = dir.path().join("hosts");
        let conf = dir.path().join("dnsmasq.conf");
        let conf_text: String = srv
            .iter()
            .map(|s| {
                format!(
                    "srv-host={},{},{},{},{}\n",
                    s.name, s.target, s.port, s.priority, s.weight
                )
            })
            .collect();
        write_readable(&conf, &conf_text);
        let mut dns = Dnsmasq {
            child: None,
            addr: free_udp_addr(),
            hosts: hosts_file,
            dir,
        };
        dns.write_hosts(hosts);
        let log = std::fs::File::create(dns.dir.path().join("dnsmasq.log")).expect("log file");
        let child = Command::new(binary())
            .args([
                "--no-daemon",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--local-ttl=1",
                "--log-queries",
                "--log-facility=-",
                &format!("--port={}", dns.addr.port()),
                &format!("--addn-hosts={}", dns.hosts.display()),
                &format!("--conf-file={}", conf.display()),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary()));
        dns.child = Some(child);
        dns.wait_answering()?;
        Ok(dns)
    }

    /// Where it answers, for a cluster's `dns.servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the A records: rewrites the hosts file and has dnsmasq reread it (SIGHUP).
    pub fn set_hosts(&self, hosts: &[(&str, IpAddr)]) {
        self.write_hosts(hosts);
        let pid = self.child.as_ref().expect("dnsmasq is running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {pid} failed");
    }

    /// Stops it for good: every query from now on fails.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What it logged (every query, with `--log-queries`), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    fn write_hosts(&self, hosts: &[(&str, IpAddr)]) {
        let text: String = hosts
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect();
        write_readable(&self.hosts, &text);
    }

    /// Polls with a real query until dnsmasq answers it (any answer will do). Err with its log
    /// if it exited.
    fn wait_answering(&mut self) -> Result<(), String> {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("dnsmasq exited with {status}:\n{}", self.log()));
            }
            let _ = socket.send_to(&probe_query(), self.addr);
            if socket.recv_from(&mut buf).is_ok() {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The dnsmasq program: `$REMORA_TEST_DNSMASQ`, else `dnsmasq` on the PATH or in /usr/sbin
/// (not on a normal user's PATH).
fn binary() -> String {
    if let Ok(path) = std::env::var("REMORA_TEST_DNSMASQ") {
        return path;
    }
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let candidate = std::path::Path::new(dir).join("dnsmasq");
        if candidate.is_file() {
            return candidate.display().to_string();
        }
    }
    panic!(
        "dnsmasq not found: the DNS discovery tests need it (apt-get install dnsmasq-base; \
         scripts/test.sh installs it)"
    )
}

/// A free UDP port on 127.0.0.1: bound on port 0, then released.
/// A loopback port free for both UDP and TCP (dnsmasq binds both), picked below the ephemeral
/// range like [`free_addr`]: a UDP port from port 0 can have its TCP twin taken by any outgoing
/// connection, which made dnsmasq fail with "Address already in use" once in CI.
fn free_udp_addr() -> SocketAddr {
    for _ in 0..100 {
        let addr = free_addr();
        if UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

fn write_readable(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
}

/// A DNS query for `ready.test` A: header (id 1, recursion desired, one question), the name,
/// type A, class IN.
fn probe_query() -> Vec<u8> {
    let mut q = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
