//! `remora-proxy init-iptables` in a network namespace of its own: the rules go in, a second
//! run changes nothing, and the namespace is removed whatever happens. Needs root and
//! iptables (`scripts/test.sh` installs it); without them the test fails saying so.

use std::process::{Child, Command};

use remora_tests::netns::{Children, Netns};
use remora_tests::{TempDir, proxy_bin};

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
    python_per_port(ns, SERVER, addr, ports)
}

/// Waits until the world's HTTP servers on `ports` answer.
fn wait_world_http(world: &Netns, world_ip: &str, ports: &[u16]) {
    for port in ports {
        remora_tests::wait_for(
            &format!("the world's server on {port}"),
            std::time::Duration::from_secs(20),
            || {
                let url = format!("http://{world_ip}:{port}/up");
                let out = world.run("curl", &["-s", "-m", "1", &url]);
                out.status.success().then_some(())
            },
        );
    }
}

/// `curl` in the pod as the app's UID: what the app would get.
fn app_get(pod: &Netns, url: &str) -> String {
    String::from_utf8_lossy(&pod.curl_as(1000, &[url]).stdout).into_owned()
}

/// A pod namespace joined by a veth to a "world" namespace: the pod, the world, the world's
/// IP and the pod's. Both namespaces go on drop, the veth with them.
fn pod_and_world() -> (Netns, Netns, String, String) {
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
    (pod, world, world_ip, pod_ip)
}

/// Installs the capture rules in `pod` (the admin port 15000 excluded, plus `init_args`) and
/// starts a sidecar there as UID 2102 with `listeners_and_clusters` (YAML) and an admin
/// listener on 127.0.0.1:15000; returns once it is ready.
fn sidecar(pod: &Netns, listeners_and_clusters: &str, init_args: &[&str]) -> (Children, TempDir) {
    let dir = TempDir::new("capture");
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{ address: 127.0.0.1:15000 }}\naccess_log: {{ enabled: false }}\n\
             {listeners_and_clusters}"
        ),
    )
    .unwrap();
    // Readable by the proxy's UID.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", dir.path().to_str().unwrap()])
        .status();
    let proxy = proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let mut args = vec!["init-iptables", "--exclude-inbound-ports", "15000"];
    args.extend_from_slice(init_args);
    let out = pod.run(proxy, &args);
    assert!(out.status.success(), "init-iptables: {out:?}");
    let sidecar = pod.spawn_as(2102, proxy, &["--config", config.to_str().unwrap()]);
    let sidecar = Children(vec![sidecar]);
    let ready = || pod.run("curl", &["-s", "-m", "1", "http://127.0.0.1:15000/ready"]);
    remora_tests::wait_for(
        "the pod's sidecar ready",
        std::time::Duration::from_secs(20),
        || ready().status.success().then_some(()),
    );
    (sidecar, dir)
}

/// The value of the first metric line of the pod's sidecar starting with `prefix` (0 if none).
fn metric(pod: &Netns, prefix: &str) -> f64 {
    let metrics = pod.run("curl", &["-s", "http://127.0.0.1:15000/metrics"]);
    String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// A pod (network namespace) with the capture rules and a sidecar whose outbound listener is
/// transparent, joined by a veth to a "world" namespace with servers on three ports. The app,
/// unaware of the mesh, calls by IP: a port that is a mesh cluster's endpoint goes through the
/// proxy's route (it adds `x-request-id`); another port is passed through untouched; an
/// excluded port bypasses the proxy altogether.
#[test]
fn the_app_calls_by_ip_and_the_transparent_sidecar_routes_passes_through_or_bypasses() {
    let (pod, world, world_ip, _) = pod_and_world();
    let _servers = Children(world_servers(&world, &world_ip, &[8080, 9090, 5432]));
    // A transparent outbound listener whose one route sends to the world's port 8080.
    let _sidecar = sidecar(
        &pod,
        &format!(
            "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n    direction: outbound\n    transparent: true\n    routes: [{{ name: api, match: {{ hosts: [api] }}, cluster: api }}]\n\
             clusters:\n  - name: api\n    endpoints: [{{ address: \"{world_ip}:8080\" }}]\n"
        ),
        &["--exclude-outbound-ports", "5432"],
    );
    wait_world_http(&world, &world_ip, &[8080, 9090, 5432]);

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

    assert_eq!(
        metric(
            &pod,
            "remora_requests_total{listener=\"outbound\",direction=\"outbound\",route=\"api\",cluster=\"api\",status_class=\"2xx\"}"
        ),
        1.0,
    );
    // Two connections reached the listener (the meshed call and the passed-through one); the
    // excluded port's never did.
    assert_eq!(
        metric(
            &pod,
            "remora_downstream_connections_total{listener=\"outbound\",direction=\"outbound\"}"
        ),
        2.0,
    );
}

/// Servers in `ns` on `addr` that speak first, like MySQL: on connect each sends
/// `hello from <port>\n`, then echoes what it gets.
fn greeters(ns: &Netns, addr: &str, ports: &[u16]) -> Vec<Child> {
    const SERVER: &str = r#"
import socketserver, sys
class H(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(("hello from %s\n" % sys.argv[2]).encode())
        while True:
            data = self.request.recv(1024)
            if not data: return
            self.request.sendall(data)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;
    python_per_port(ns, SERVER, addr, ports)
}

/// `script` (Python, taking ADDR PORT) in `ns`, once per port of `ports`.
fn python_per_port(ns: &Netns, script: &str, addr: &str, ports: &[u16]) -> Vec<Child> {
    ports
        .iter()
        .map(|port| {
            ns.spawn_as(
                0,
                "/usr/bin/python3",
                &["-c", script, addr, &port.to_string()],
            )
        })
        .collect()
}

/// Waits until each of the world's greeters on `ports` says hello.
fn wait_greeters(world: &Netns, world_ip: &str, ports: &[u16]) {
    for port in ports {
        remora_tests::wait_for(
            &format!("the world's greeter on {port}"),
            std::time::Duration::from_secs(20),
            || {
                let probe = format!(
                    "import socket; socket.create_connection(('{world_ip}', {port}), timeout=1).recv(5)"
                );
                world
                    .run("python3", &["-c", &probe])
                    .status
                    .success()
                    .then_some(())
            },
        );
    }
}

/// The app's side of a server-speaks-first exchange, as UID 1000 in `pod`: connect to
/// `addr:port`, wait up to `wait` seconds for the greeting, send `ping`, read it back. Prints
/// what it got, or `silent` if no greeting came.
fn app_exchange(pod: &Netns, addr: &str, port: u16, wait: &str) -> String {
    const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(float(sys.argv[3]))
try:
    greeting = s.recv(64).decode()
except socket.timeout:
    print("silent"); sys.exit(0)
s.sendall(b"ping\n")
s.settimeout(5)
print(greeting.strip() + " / " + s.recv(64).decode().strip())
"#;
    let port = port.to_string();
    let out = pod.run(
        "setpriv",
        &[
            "--reuid=1000",
            "--regid=1000",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            CLIENT,
            addr,
            &port,
            wait,
        ],
    );
    assert!(out.status.success(), "the app's client: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A mesh destination on one of the transparent listener's `opaque_ports` gets the app's bytes
/// as they are, at once, and to that very endpoint: a server-speaks-first protocol works. The
/// control: the same kind of destination on a port not listed is taken for HTTP, and the
/// sidecar waits for a request that never comes, so the app hears nothing.
#[test]
fn an_opaque_port_of_a_mesh_destination_carries_a_server_speaks_first_protocol() {
    let (pod, world, world_ip, _) = pod_and_world();
    let _servers = Children(greeters(&world, &world_ip, &[3306, 3307, 3308]));
    let _sidecar = sidecar(
        &pod,
        &format!(
            "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n    direction: outbound\n    transparent: true\n    opaque_ports: [3306]\n\
             \x20   routes:\n      - {{ name: db, match: {{ hosts: [db] }}, cluster: db }}\n      - {{ name: other, match: {{ hosts: [other] }}, cluster: other }}\n\
             clusters:\n  - name: db\n    endpoints: [{{ address: \"{world_ip}:3306\" }}, {{ address: \"{world_ip}:3308\" }}]\n\
             \x20 - name: other\n    endpoints: [{{ address: \"{world_ip}:3307\" }}]\n"
        ),
        &[],
    );
    wait_greeters(&world, &world_ip, &[3306, 3307, 3308]);

    for _ in 0..4 {
        // Always the endpoint the app chose (the cluster has another on 3308).
        assert_eq!(
            app_exchange(&pod, &world_ip, 3306, "3"),
            "hello from 3306 / ping"
        );
    }
    assert_eq!(app_exchange(&pod, &world_ip, 3307, "1"), "silent");
    assert_eq!(
        metric(&pod, "remora_upstream_connections_total{cluster=\"db\"}"),
        4.0,
    );
    assert_eq!(
        metric(&pod, "remora_requests_total{listener=\"outbound\""),
        0.0,
        "no HTTP request was made of the opaque bytes"
    );
}

/// Inbound capture sends every port of the pod to the sidecar; the inbound listener follows
/// each connection's original port: the app's port in the config is served as HTTP (the
/// sidecar adds its request ID), and another port of the pod reaches that port, as bytes.
#[test]
fn inbound_calls_to_each_port_of_the_pod_reach_that_port() {
    let (pod, world, _, pod_ip) = pod_and_world();
    // The pod's app, on two ports (as UID 1000, bound on every address).
    let _apps = Children(world_servers(&pod, "0.0.0.0", &[8080, 9090]));
    let _sidecar = sidecar(
        &pod,
        "listeners:\n  - name: inbound\n    address: 0.0.0.0:15006\n    direction: inbound\n    protocol: auto\n    cluster: app\n    follow_original_port: true\n\
         \x20   routes: [{ name: app, cluster: app }]\n\
         clusters:\n  - name: app\n    endpoints: [{ address: \"127.0.0.1:8080\" }]\n",
        &[],
    );
    let world_get = |port: u16, path: &str| {
        let url = format!("http://{pod_ip}:{port}{path}");
        String::from_utf8_lossy(&world.run("curl", &["-s", "-m", "5", &url]).stdout).into_owned()
    };
    for port in [8080, 9090] {
        remora_tests::wait_for("the pod's apps", std::time::Duration::from_secs(20), || {
            world_get(port, "/up")
                .starts_with(&format!("world:{port}"))
                .then_some(())
        });
    }
    let connections = || {
        metric(
            &pod,
            "remora_downstream_connections_total{listener=\"inbound\",direction=\"inbound\"}",
        )
    };
    let before = connections();
    let routed = world_get(8080, "/routed");
    assert!(
        routed.starts_with("world:8080 path=/routed request-id="),
        "{routed}"
    );
    assert!(
        !routed.contains("request-id=None"),
        "served as HTTP by the sidecar: {routed}"
    );
    assert_eq!(
        world_get(9090, "/other"),
        "world:9090 path=/other request-id=None\n"
    );
    assert_eq!(
        connections() - before,
        2.0,
        "both calls went through the sidecar (the one to 9090 as well)"
    );
}

/// `passthrough: http`: the app's HTTP calls to a destination outside the mesh are proxied to
/// it request by request (the sidecar adds its request ID, and counts them under route and
/// cluster `passthrough`), while what is not HTTP, such as a server-speaks-first protocol
/// after the detect timeout, still goes through as bytes.
#[test]
fn http_to_outside_the_mesh_is_proxied_when_passthrough_is_http() {
    let (pod, world, world_ip, _) = pod_and_world();
    let mut servers = world_servers(&world, &world_ip, &[8080, 9090]);
    servers.extend(greeters(&world, &world_ip, &[3307]));
    let _servers = Children(servers);
    let _sidecar = sidecar(
        &pod,
        &format!(
            "listeners:\n  - name: outbound\n    address: 127.0.0.1:15001\n    direction: outbound\n    transparent: true\n    passthrough: http\n\
             \x20   routes: [{{ name: api, match: {{ hosts: [api] }}, cluster: api }}]\n\
             clusters:\n  - name: api\n    endpoints: [{{ address: \"{world_ip}:8080\" }}]\n"
        ),
        &[],
    );
    wait_world_http(&world, &world_ip, &[9090]);
    wait_greeters(&world, &world_ip, &[3307]);

    // Outside the mesh, in HTTP: through the proxy, to where the app sent it.
    for path in ["/one", "/two"] {
        let got = app_get(&pod, &format!("http://{world_ip}:9090{path}"));
        assert!(
            got.starts_with(&format!("world:9090 path={path} request-id=")),
            "{got}"
        );
        assert!(!got.contains("request-id=None"), "proxied as HTTP: {got}");
    }
    assert_eq!(
        metric(
            &pod,
            "remora_requests_total{listener=\"outbound\",direction=\"outbound\",route=\"passthrough\",cluster=\"passthrough\",status_class=\"2xx\"}"
        ),
        2.0,
    );
    // Not HTTP: the greeting comes once the detect timeout gives up on a request.
    assert_eq!(
        app_exchange(&pod, &world_ip, 3307, "5"),
        "hello from 3307 / ping"
    );
}

/// Authorization rules can name ports: a path rule scoped to the app's HTTP port gives 403
/// there and leaves the pod's other port alone (without `ports` it would close it, since paths
/// cannot be seen in opaque bytes), and a port-only rule closes connections for its port.
#[test]
fn authorization_rules_scoped_to_ports() {
    let (pod, world, _, pod_ip) = pod_and_world();
    let _apps = Children(world_servers(&pod, "0.0.0.0", &[8080, 9090, 9091]));
    let _sidecar = sidecar(
        &pod,
        "listeners:\n  - name: inbound\n    address: 0.0.0.0:15006\n    direction: inbound\n    protocol: auto\n    cluster: app\n    follow_original_port: true\n\
         \x20   routes: [{ name: app, cluster: app }]\n\
         \x20   authorization:\n      rules:\n\
         \x20       - { action: deny, to: { ports: [8080], paths: [/admin] } }\n\
         \x20       - { action: deny, to: { ports: [9091] } }\n\
         clusters:\n  - name: app\n    endpoints: [{ address: \"127.0.0.1:8080\" }]\n",
        &[],
    );
    // The apps, from inside the pod over loopback (which the rules leave alone).
    for port in [8080, 9090, 9091] {
        remora_tests::wait_for("the pod's apps", std::time::Duration::from_secs(20), || {
            let url = format!("http://127.0.0.1:{port}/up");
            pod.run("curl", &["-s", "-m", "1", &url])
                .status
                .success()
                .then_some(())
        });
    }
    let status =
        |port: u16, path: &str| world.http_status(&format!("http://{pod_ip}:{port}{path}"));
    assert_eq!(status(8080, "/orders"), "200");
    assert_eq!(
        status(8080, "/admin"),
        "403",
        "the path rule on the HTTP port"
    );
    assert_eq!(
        status(9090, "/admin"),
        "200",
        "scoped to 8080: 9090 stays open"
    );
    assert_eq!(status(9091, "/x"), "000", "closed by the port rule");
    assert_eq!(
        metric(
            &pod,
            "remora_authz_denied_total{listener=\"inbound\",route=\"\"}"
        ),
        2.0
    );
}
