//! The pod test: two "pods" and a control plane, each a network namespace on a bridge, with the
//! capture rules and a sidecar (UID 2102) in each pod and a plain app (UID 1000) that knows
//! nothing of the mesh. Pod A's app calls pod B's IP and port in plaintext; the call crosses
//! the bridge as mTLS, B's inbound policy applies, and an excluded port bypasses both proxies.
//! Needs root, iproute2, iptables and curl (`scripts/test.sh` installs them); every namespace
//! and link it makes is removed on drop, whatever happens.

use std::process::Command;
use std::time::Duration;

use remora_tests::netns::{Children, Netns};
use remora_tests::{TempDir, proxy_bin, wait_for};

/// An app: answers `app:<port> path=<path> peer=<x-remora-peer-identity or None>`.
const APP: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("app:%s path=%s peer=%s\n" % (sys.argv[1], self.path, self.headers.get("x-remora-peer-identity"))).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"#;

const WEB_ID: &str = "spiffe://cluster.local/ns/shop/sa/web";

#[test]
fn pod_a_calls_pod_b_by_ip_in_plaintext_and_it_crosses_as_mtls_under_bs_policy() {
    let id = std::process::id() % 100_000;
    let net = 20 + std::process::id() % 200;
    let ip = |host: u8| format!("10.91.{net}.{host}");
    let (lan, a, b, cp_ns) = (
        Netns::new("remora-lan"),
        Netns::new("remora-pod-a"),
        Netns::new("remora-pod-b"),
        Netns::new("remora-cp"),
    );
    lan.ok("ip", &["link", "add", "br0", "type", "bridge"]);
    lan.ok("ip", &["link", "set", "br0", "up"]);
    for (n, (ns, host)) in [(&a, 1u8), (&b, 2), (&cp_ns, 3)].into_iter().enumerate() {
        let (inner, outer) = (format!("e{n}i{id}"), format!("e{n}o{id}"));
        let out = Command::new("ip")
            .args([
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "veth: {out:?}");
        let sh = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        sh(&["link", "set", &inner, "netns", &ns.0]);
        sh(&["link", "set", &outer, "netns", &lan.0]);
        lan.ok("ip", &["link", "set", &outer, "master", "br0"]);
        lan.ok("ip", &["link", "set", &outer, "up"]);
        ns.ok(
            "ip",
            &["addr", "add", &format!("{}/24", ip(host)), "dev", &inner],
        );
        ns.ok("ip", &["link", "set", &inner, "up"]);
        ns.ok("ip", &["link", "set", "lo", "up"]);
    }

    // The mesh: web (pod A) calls api (pod B), which admits web only, and never /admin.
    let dir = TempDir::new("pods");
    let mesh = dir.path().join("mesh");
    std::fs::create_dir_all(&mesh).unwrap();
    std::fs::write(
        mesh.join("shop.yaml"),
        format!(
            "services:\n\
             \x20 - name: web\n    namespace: shop\n    app: 127.0.0.1:8080\n    calls: [api]\n\
             \x20 - name: api\n    namespace: shop\n    app: 127.0.0.1:8080\n    mtls: permissive\n\
             \x20   cluster: {{ endpoints: [{{ address: \"{}:8080\" }}] }}\n\
             \x20   authorization:\n      rules:\n\
             \x20       - {{ action: deny, to: {{ ports: [8080], paths: [/admin, /admin/*] }} }}\n\
             \x20       - {{ action: allow, from: {{ identities: [\"{WEB_ID}\"] }} }}\n",
            ip(2)
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        "tok-web shop/web\ntok-api shop/api\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("web.token"), "tok-web\n").unwrap();
    std::fs::write(dir.path().join("api.token"), "tok-api\n").unwrap();
    let _ = Command::new("chmod")
        .args(["-R", "a+rX", dir.path().to_str().unwrap()])
        .status();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();

    let proxy = proxy_bin();
    let proxy = proxy.to_str().unwrap();
    let remora = proxy.replace("e2e-remora-proxy", "e2e-remora");
    let cp = cp_ns.spawn_as(
        0,
        &remora,
        &[
            "control-plane",
            "--config-dir",
            &path("mesh"),
            "--listen",
            "0.0.0.0:15010",
            "--admin",
            "127.0.0.1:15011",
            "--bootstrap-tokens",
            &path("tokens"),
        ],
    );
    let mut children = Children(vec![cp]);
    for (pod, service, token) in [(&a, "web", "web.token"), (&b, "api", "api.token")] {
        // The capture rules first, as the init container does; port 5432 is excluded both
        // ways, and the sidecar's admin and status ports inbound.
        pod.ok(
            proxy,
            &[
                "init-iptables",
                "--exclude-inbound-ports",
                "15000,15020,5432",
                "--exclude-outbound-ports",
                "5432",
            ],
        );
        children
            .0
            .push(pod.spawn_as(1000, "/usr/bin/python3", &["-c", APP, "8080"]));
        children
            .0
            .push(pod.spawn_as(1000, "/usr/bin/python3", &["-c", APP, "5432"]));
        children
            .0
            .push(pod.spawn_as(1000, "/usr/bin/python3", &["-c", APP, "9090"]));
        children.0.push(pod.spawn_as(
            2102,
            proxy,
            &[
                "--control-plane",
                &format!("http://{}:15010", ip(3)),
                "--node",
                &format!("{service}-1"),
                "--service",
                service,
                "--namespace",
                "shop",
                "--identity-token-file",
                &path(token),
                // As injected: the admin endpoints on loopback, probes and metrics on the
                // pod's address.
                "--admin",
                "127.0.0.1:15000",
                "--status",
                "0.0.0.0:15020",
                "--access-log",
                "off",
            ],
        ));
    }
    for (pod, name) in [(&a, "a"), (&b, "b")] {
        wait_for(
            &format!("pod {name}'s sidecar ready"),
            Duration::from_secs(30),
            || {
                let out = pod.run("curl", &["-s", "-m", "1", "http://127.0.0.1:15000/ready"]);
                out.status.success().then_some(())
            },
        );
    }
    // B's apps, from inside B over loopback (which the rules leave alone).
    for port in [8080, 5432, 9090] {
        wait_for(
            &format!("pod b's app on {port}"),
            Duration::from_secs(30),
            || {
                let url = format!("http://127.0.0.1:{port}/up");
                b.run("curl", &["-s", "-m", "1", &url])
                    .status
                    .success()
                    .then_some(())
            },
        );
    }
    // The wire, at pod B: count packets arriving with each path marker in them. A call that
    // crossed in plaintext would match; TLS records never do.
    // (Only on B's link to the bridge: inside B, its sidecar hands the app plaintext over lo.)
    let b_link = format!("e1i{id}");
    for marker in [
        "/hello-over-the-wire",
        "/direct-over-the-wire",
        "/other-port-over-the-wire",
    ] {
        let rule = [
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            &b_link,
            "-p",
            "tcp",
            "-m",
            "string",
            "--string",
            marker,
            "--algo",
            "bm",
        ];
        b.ok("iptables", &rule);
    }
    let on_the_wire = |marker: &str| -> u64 {
        let out = b.run(
            "iptables",
            &["-t", "mangle", "-L", "PREROUTING", "-v", "-n", "-x"],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.contains(&format!("\"{marker}\"")))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter for {marker}: {text}"))
    };
    let app_get = |url: &str| -> (String, String) {
        let out = a.curl_as(1000, &["-o", "-", "-w", "\n%{http_code}", url]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (body.to_owned(), code.to_owned())
    };

    // Pod A's app calls pod B's IP in plaintext: it arrives, from web, over mTLS.
    let (body, code) = app_get(&format!("http://{}:8080/hello-over-the-wire", ip(2)));
    assert_eq!(code, "200", "{body}");
    assert_eq!(
        body,
        format!("app:8080 path=/hello-over-the-wire peer={WEB_ID}\n")
    );
    assert_eq!(
        on_the_wire("/hello-over-the-wire"),
        0,
        "the path crossed in plaintext"
    );
    let b_metrics = String::from_utf8_lossy(
        &b.run("curl", &["-s", "http://127.0.0.1:15000/metrics"])
            .stdout,
    )
    .into_owned();
    let line = |m: &str, prefix: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        line(
            &b_metrics,
            &format!("remora_tls_peer_identities_total{{identity=\"{WEB_ID}\"}}")
        ) >= 1.0,
        "{b_metrics}"
    );
    assert!(
        line(
            &b_metrics,
            "remora_tls_handshakes_total{direction=\"inbound\",result=\"ok\"}"
        ) >= 1.0,
        "{b_metrics}"
    );
    // B's inbound policy applies.
    let (body, code) = app_get(&format!("http://{}:8080/admin", ip(2)));
    assert_eq!(code, "403", "{body}");
    // B's other port, in no config: A's sidecar knows B's host as meshed, so the call still
    // crosses as mTLS (as bytes), and B's sidecar hands it to that port, not the app's 8080,
    // under B's policy (web is admitted; the /admin rule is scoped to 8080).
    let b_handshakes = || {
        let m = b.run("curl", &["-s", "http://127.0.0.1:15000/metrics"]);
        line(
            &String::from_utf8_lossy(&m.stdout),
            "remora_tls_handshakes_total{direction=\"inbound\",result=\"ok\"}",
        )
    };
    let handshakes_before = b_handshakes();
    let (body, code) = app_get(&format!("http://{}:9090/other-port-over-the-wire", ip(2)));
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "app:9090 path=/other-port-over-the-wire peer=None\n"),
        "to B's port 9090, as bytes (no header added)"
    );
    assert_eq!(
        on_the_wire("/other-port-over-the-wire"),
        0,
        "the other port's call crossed in plaintext"
    );
    let handshakes_after = b_handshakes();
    assert!(
        handshakes_after > handshakes_before,
        "a new mTLS handshake at B"
    );
    // An excluded port bypasses both proxies: no identity, and no handshake counted for it.
    let before = b_handshakes();
    let (body, code) = app_get(&format!("http://{}:5432/direct-over-the-wire", ip(2)));
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "app:5432 path=/direct-over-the-wire peer=None\n")
    );
    // The same check sees plaintext when there is some: the counter works.
    assert!(
        on_the_wire("/direct-over-the-wire") >= 1,
        "the wire check sees plaintext"
    );
    assert_eq!(
        b_handshakes(),
        before,
        "the excluded port went through no sidecar"
    );
    // B's app calls nobody in the mesh, yet its calls out of the pod are captured too: its
    // sidecar's outbound listener (with no route) passes them on. Without it they would be
    // refused at 15001.
    let out = b.curl_as(
        1000,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{}:15010/", ip(3)),
        ],
    );
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(
        code, "000",
        "B's app reached the control plane's port through its sidecar"
    );
    // From outside the pod (the control plane's namespace, which has no capture rules): the
    // status port answers probes, and nothing else; the admin port is not there at all.
    let from_outside =
        |port: u16, path: &str| cp_ns.http_status(&format!("http://{}:{port}{path}", ip(2)));
    assert_eq!(from_outside(15020, "/ready"), "200");
    assert_eq!(from_outside(15020, "/config"), "404");
    assert_eq!(
        from_outside(15000, "/config"),
        "000",
        "the admin port is loopback only"
    );
    drop(children);
}
