//! `remora-proxy init-iptables` in a network namespace of its own: the rules go in, a second
//! run changes nothing, and the namespace is removed whatever happens. Needs root and
//! iptables (`scripts/test.sh` installs it); without them the test fails saying so.

use std::process::{Child, Command};

use remora_tests::netns::{Children, Netns};
use remora_tests::proxy_bin;

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

/// The world outside the pod: an HTTP server per port on `addr`, in namespace `ns`, answering
/// `world:<port> path=<path> request-id=<x-request-id or None>` (the proxy adds the header; a
/// connection passed through untouched has none).
fn world_servers(ns: &Netns, addr: &str, ports: &[u16]) -> Vec<Child> {
    const SERVER: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("world:%s path=%s request-id=%s\n" % (sys.argv[2], self.path, self.headers.get("x-request-id"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;
    ports
        .iter()
        .map(|port| {
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns.0,
                    "/usr/bin/python3",
                    "-c",
                    SERVER,
                    addr,
                ])
                .arg(port.to_string())
                .spawn()
                .expect("python3 for the world's servers")
        })
        .collect()
}

/// `curl` in the pod as the app's UID: what the app would get.
fn app_get(pod: &Netns, url: &str) -> String {
    String::from_utf8_lossy(&pod.curl_as(1000, &[url]).stdout).into_owned()
}

/// A pod (network namespace) with the capture rules and a sidecar whose outbound listener is
/// transparent, joined by a veth to a "world" namespace with servers on three ports. The app,
/// unaware of the mesh, calls by IP: a port that is a mesh cluster's endpoint goes through the
/// proxy's route (it adds `x-request-id`); another port is passed through untouched; an
/// excluded port bypasses the proxy altogether.
#[test]
fn the_app_calls_by_ip_and_the_transparent_sidecar_routes_passes_through_or_bypasses() {
    let pod = Netns::new("remora-pod");
    let world = Netns::new("remora-world");
    let net = 10 + std::process::id() % 200;
    let (pod_ip, world_ip) = (format!("10.89.{net}.1"), format!("10.89.{net}.2"));
    let veth = (
        format!("rp{}", std::process::id() % 100000),
        format!("rw{}", std::process::id() % 100000),
    );
    let sh = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&[
        "link", "add", &veth.0, "type", "veth", "peer", "name", &veth.1,
    ]);
    sh(&["link", "set", &veth.0, "netns", &pod.0]);
    sh(&["link", "set", &veth.1, "netns", &world.0]);
    for (ns, dev, ip) in [(&pod, &veth.0, &pod_ip), (&world, &veth.1, &world_ip)] {
        for args in [
            vec!["addr", "add", &format!("{ip}/24"), "dev", dev.as_str()],
            vec!["link", "set", dev.as_str(), "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let out = ns.run("ip", &args);
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
    }
    let _servers = Children(world_servers(&world, &world_ip, &[8080, 9090, 5432]));

    // The sidecar, as UID 2102, with a transparent outbound listener whose one route sends to
    // the world's port 8080.
    let dir = remora_tests::TempDir::new("capture");
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{ address: 127.0.0.1:15000 }}\naccess_log: {{ enabled: false }}\n\
             listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n    direction: outbound\n    transparent: true\n    routes: [{{ name: api, match: {{ hosts: [api] }}, cluster: api }}]\n\
             clusters:\n  - name: api\n    endpoints: [{{ address: \"{world_ip}:8080\" }}]\n"
        ),
    )
    .unwrap();
    // Readable by the proxy's UID.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", dir.path().to_str().unwrap()])
        .status();
    let proxy = proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let out = pod.run(
        proxy,
        &[
            "init-iptables",
            "--exclude-inbound-ports",
            "15000",
            "--exclude-outbound-ports",
            "5432",
        ],
    );
    assert!(out.status.success(), "init-iptables: {out:?}");
    let sidecar = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.0,
            "setpriv",
            "--reuid=2102",
            "--regid=2102",
            "--clear-groups",
            proxy,
            "--config",
        ])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _sidecar = Children(vec![sidecar]);
    let ready = || pod.run("curl", &["-s", "-m", "1", "http://127.0.0.1:15000/ready"]);
    remora_tests::wait_for(
        "the pod's sidecar ready",
        std::time::Duration::from_secs(20),
        || ready().status.success().then_some(()),
    );
    remora_tests::wait_for(
        "the world's servers",
        std::time::Duration::from_secs(20),
        || {
            let out = world.run(
                "curl",
                &["-s", "-m", "1", &format!("http://{world_ip}:9090/up")],
            );
            out.status.success().then_some(())
        },
    );

    // A mesh destination, by IP: through the proxy's route.
    let meshed = app_get(&pod, &format!("http://{world_ip}:8080/hello"));
    assert!(
        meshed.starts_with("world:8080 path=/hello request-id="),
        "{meshed}"
    );
    assert!(
        !meshed.contains("request-id=None"),
        "the proxy handled it: {meshed}"
    );
    // Elsewhere: passed through untouched (no header added).
    let elsewhere = app_get(&pod, &format!("http://{world_ip}:9090/x"));
    assert_eq!(elsewhere, "world:9090 path=/x request-id=None\n");
    // An excluded port: straight out.
    let excluded = app_get(&pod, &format!("http://{world_ip}:5432/y"));
    assert_eq!(excluded, "world:5432 path=/y request-id=None\n");

    let metrics = pod.run("curl", &["-s", "http://127.0.0.1:15000/metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(
        value(
            "remora_requests_total{listener=\"outbound\",direction=\"outbound\",route=\"api\",cluster=\"api\",status_class=\"2xx\"}"
        ),
        1.0,
        "{metrics}"
    );
    // Two connections reached the listener (the meshed call and the passed-through one); the
    // excluded port's never did.
    assert_eq!(
        value("remora_downstream_connections_total{listener=\"outbound\",direction=\"outbound\"}"),
        2.0,
        "{metrics}"
    );
}
