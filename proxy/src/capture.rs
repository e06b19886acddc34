//! `remora-proxy init-iptables`: the rules that send a pod's TCP through its sidecar, run once
//! by the injected init container (as root, with NET_ADMIN and NET_RAW).
//!
//! The shape is the known-good one of istio-init and linkerd-init, in chains of our own in the
//! `nat` table:
//! - inbound (PREROUTING): every TCP connection to the pod is redirected to the proxy's
//!   inbound port, except to excluded ports (the proxy's admin port always);
//! - outbound (OUTPUT): every TCP connection the pod opens is redirected to the proxy's
//!   outbound port, except the proxy's own (its UID: else it would loop), loopback traffic
//!   (the app talking to itself, and the proxy forwarding to the app), and excluded ports and
//!   CIDRs.
//!
//! The same rules are written for IPv4 and IPv6. They are loaded with `iptables-restore
//! --noflush`, which replaces our chains atomically and leaves everything else alone, so
//! running it twice gives the same rules.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// What to capture and what to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
}

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}' has a bad prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Comma-separated ports (`"5432, 6379"`), as the annotations give them.
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>().map_err(|_| format!("'{p}' is not a port")))
        .collect()
}

/// Comma-separated CIDRs.
pub fn parse_cidrs(s: &str) -> Result<Vec<Cidr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::parse)
        .collect()
}

const INBOUND: &str = "REMORA_INBOUND";
const INBOUND_REDIRECT: &str = "REMORA_IN_REDIRECT";
const OUTPUT: &str = "REMORA_OUTPUT";
const OUTPUT_REDIRECT: &str = "REMORA_REDIRECT";

/// The `iptables-restore` input for one family.
pub fn rules(c: &Capture, ipv6: bool) -> String {
    let loopback = if ipv6 { "::1/128" } else { "127.0.0.1/32" };
    let mut r = String::new();
    let mut line = |s: String| {
        let _ = writeln!(r, "{s}");
    };
    line("*nat".into());
    for chain in [INBOUND, INBOUND_REDIRECT, OUTPUT, OUTPUT_REDIRECT] {
        // Declaring a chain in a --noflush restore empties it: re-running replaces our rules.
        line(format!(":{chain} - [0:0]"));
    }
    line(format!(
        "-A {INBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        c.inbound_port
    ));
    for port in &c.exclude_inbound_ports {
        line(format!("-A {INBOUND} -p tcp --dport {port} -j RETURN"));
    }
    line(format!("-A {INBOUND} -p tcp -j {INBOUND_REDIRECT}"));
    line(format!(
        "-A {OUTPUT_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        c.outbound_port
    ));
    // The proxy's own connections (to upstreams, to the app) leave as they are.
    line(format!(
        "-A {OUTPUT} -m owner --uid-owner {} -j RETURN",
        c.proxy_uid
    ));
    // The app talking to itself over loopback is not mesh traffic.
    line(format!("-A {OUTPUT} -o lo -d {loopback} -j RETURN"));
    line(format!("-A {OUTPUT} -o lo -j RETURN"));
    for port in &c.exclude_outbound_ports {
        line(format!("-A {OUTPUT} -p tcp --dport {port} -j RETURN"));
    }
    for cidr in c
        .exclude_outbound_cidrs
        .iter()
        .filter(|x| x.addr.is_ipv6() == ipv6)
    {
        line(format!("-A {OUTPUT} -d {cidr} -j RETURN"));
    }
    line(format!("-A {OUTPUT} -p tcp -j {OUTPUT_REDIRECT}"));
    line("COMMIT".into());
    r
}

/// The jumps from the built-in chains into ours, added only if missing (`-C` first), so a
/// second run does not add a second jump.
fn jumps() -> [(&'static str, &'static str); 2] {
    [("PREROUTING", INBOUND), ("OUTPUT", OUTPUT)]
}

/// Installs the rules for both families. IPv6 is skipped (with a note) where the kernel has
/// no IPv6 NAT.
pub fn install(c: &Capture) -> Result<(), String> {
    for (ipv6, restore, tables) in [
        (false, "iptables-restore", "iptables"),
        (true, "ip6tables-restore", "ip6tables"),
    ] {
        let result = run_restore(restore, &rules(c, ipv6)).and_then(|()| {
            for (builtin, ours) in jumps() {
                let exists = Command::new(tables)
                    .args(["-t", "nat", "-C", builtin, "-p", "tcp", "-j", ours])
                    .stderr(Stdio::null())
                    .status()
                    .map_err(|e| format!("cannot run {tables}: {e}"))?;
                if !exists.success() {
                    let status = Command::new(tables)
                        .args(["-t", "nat", "-A", builtin, "-p", "tcp", "-j", ours])
                        .status()
                        .map_err(|e| format!("cannot run {tables}: {e}"))?;
                    if !status.success() {
                        return Err(format!("{tables} -t nat -A {builtin} failed"));
                    }
                }
            }
            Ok(())
        });
        match (result, ipv6) {
            (Ok(()), _) => {}
            (Err(e), true) => {
                eprintln!("remora-proxy init-iptables: IPv6 rules not installed: {e}")
            }
            (Err(e), false) => return Err(e),
        }
    }
    Ok(())
}

fn run_restore(program: &str, input: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let status = child.wait().map_err(|e| format!("{program}: {e}"))?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("{program} refused the rules ({status})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> Capture {
        Capture {
            proxy_uid: 2102,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![15000, 22],
            exclude_outbound_ports: parse_ports("5432, 6379").unwrap(),
            exclude_outbound_cidrs: parse_cidrs("10.96.0.0/12, fd00::/8, 169.254.169.254").unwrap(),
        }
    }

    #[test]
    fn ipv4_rules_capture_everything_but_the_exceptions() {
        let r = rules(&capture(), false);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        for expected in [
            ":REMORA_INBOUND - [0:0]",
            "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A REMORA_INBOUND -p tcp --dport 15000 -j RETURN",
            "-A REMORA_INBOUND -p tcp --dport 22 -j RETURN",
            "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A REMORA_OUTPUT -m owner --uid-owner 2102 -j RETURN",
            "-A REMORA_OUTPUT -o lo -d 127.0.0.1/32 -j RETURN",
            "-A REMORA_OUTPUT -p tcp --dport 5432 -j RETURN",
            "-A REMORA_OUTPUT -p tcp --dport 6379 -j RETURN",
            "-A REMORA_OUTPUT -d 10.96.0.0/12 -j RETURN",
            "-A REMORA_OUTPUT -d 169.254.169.254/32 -j RETURN",
        ] {
            assert!(lines.contains(&expected), "missing {expected}:\n{r}");
        }
        assert!(!r.contains("fd00::"), "no IPv6 CIDR in IPv4 rules");
        // Exceptions come before the catch-all redirects.
        let pos = |s: &str| lines.iter().position(|l| *l == s).unwrap();
        assert!(
            pos("-A REMORA_INBOUND -p tcp --dport 15000 -j RETURN")
                < pos("-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT")
        );
        assert!(
            pos("-A REMORA_OUTPUT -m owner --uid-owner 2102 -j RETURN")
                < pos("-A REMORA_OUTPUT -p tcp -j REMORA_REDIRECT")
        );
        assert_eq!(
            lines[pos("COMMIT") - 1],
            "-A REMORA_OUTPUT -p tcp -j REMORA_REDIRECT"
        );
    }

    #[test]
    fn ipv6_rules_are_the_same_shape() {
        let r = rules(&capture(), true);
        assert!(r.contains("-A REMORA_OUTPUT -o lo -d ::1/128 -j RETURN"));
        assert!(r.contains("-A REMORA_OUTPUT -d fd00::/8 -j RETURN"));
        assert!(!r.contains("10.96.0.0"));
        assert_eq!(
            r.lines().count(),
            rules(&capture(), false).lines().count() - 1
        );
    }

    #[test]
    fn bad_ports_and_cidrs_are_refused() {
        assert!(parse_ports("80,http").is_err());
        assert!(parse_ports("70000").is_err());
        assert_eq!(parse_ports(" ").unwrap(), Vec::<u16>::new());
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("fd00::/129").is_err());
        assert!(parse_cidrs("example.com").is_err());
        assert_eq!(parse_cidrs("::1").unwrap()[0].to_string(), "::1/128");
    }
}
