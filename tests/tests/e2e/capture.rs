//! `remora-proxy init-iptables` in a network namespace of its own: the rules go in, a second
//! run changes nothing, and the namespace is removed whatever happens. Needs root and
//! iptables (`scripts/test.sh` installs it); without them the test fails saying so.

use std::process::Command;

use remora_tests::proxy_bin;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let name = format!("{name}-{}", std::process::id());
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => Netns(name),
            Ok(o) => panic!(
                "cannot create a network namespace (this test needs root): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run `ip` (iproute2) for a network namespace: {e}"),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {program}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[test]
fn the_capture_rules_install_in_a_pod_namespace_and_twice_is_once() {
    let ns = Netns::new("remora-capture");
    let proxy = proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let args = [
        "init-iptables",
        "--proxy-uid",
        "2102",
        "--exclude-inbound-ports",
        "15000,22",
        "--exclude-outbound-ports",
        "5432",
        "--exclude-outbound-cidrs",
        "10.96.0.0/12,fd00::/8",
    ];
    for run in 0..2 {
        let out = ns.run(proxy, &args);
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v4 = ns.run("iptables", &["-t", "nat", "-S"]);
    assert!(v4.status.success(), "iptables is needed: {v4:?}");
    let v4 = String::from_utf8_lossy(&v4.stdout);
    for rule in [
        "-A PREROUTING -p tcp -j REMORA_INBOUND",
        "-A OUTPUT -p tcp -j REMORA_OUTPUT",
        "-A REMORA_INBOUND -p tcp -m tcp --dport 15000 -j RETURN",
        "-A REMORA_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
        "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A REMORA_OUTPUT -m owner --uid-owner 2102 -j RETURN",
        "-A REMORA_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        "-A REMORA_OUTPUT -d 10.96.0.0/12 -j RETURN",
        "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        assert_eq!(
            v4.lines().filter(|l| *l == rule).count(),
            1,
            "{rule} once, after two runs:\n{v4}"
        );
    }
    let v6 = ns.run("ip6tables", &["-t", "nat", "-S"]);
    let v6 = String::from_utf8_lossy(&v6.stdout);
    assert!(
        v6.contains("-A REMORA_OUTPUT -d fd00::/8 -j RETURN"),
        "{v6}"
    );
    assert!(
        v6.contains("-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"),
        "{v6}"
    );
    assert!(!v6.contains("10.96.0.0"), "{v6}");
}
