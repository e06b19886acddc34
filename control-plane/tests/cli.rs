//! The real `remora` binary, run as a user would: files on disk, stdout, stderr, exit codes.

use std::path::PathBuf;
use std::process::{Command, Output};

fn remora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .output()
        .expect("remora runs")
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A file in a directory of its own under the system temp dir, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(test: &str, name: &str, contents: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("remora-cli-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

const GOOD: &str = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: app
clusters:
  - name: app
    endpoints:
      - address: 127.0.0.1:8081
";

const BAD: &str = "\
listeners:
  - name: inbound
    adress: 127.0.0.1:15006
    routes:
      - match:
          path: { regex: \"/api/(v1\" }
        backends:
          - cluster: app
            weight: heavy
          - cluster: ap
      - backends:
          - { cluster: app, weight: 0 }
        timeout: 2d
  - address: 127.0.0.1:5432
    protocol: tcp
    cluster: app
  - address: 127.0.0.1:5432
    protocol: tcp
    cluster: app
clusters:
  - name: app
    connect_timeout: 90s
";

#[test]
fn validate_reports_every_problem_and_exits_1() {
    let bad = TempFile::new("every-problem", "bad.yaml", BAD);
    let good = TempFile::new("every-problem", "good.yaml", GOOD);
    let out = remora(&["validate", bad.path(), good.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out.stdout), [format!("{}: ok", good.path())]);
    let b = bad.path();
    let expected = [
        format!(
            "{b}:3:5: listeners[0].adress: unknown field 'adress', expected one of: name, address, protocol, direction, routes, cluster, detect_timeout, rate_limit, mtls, authorization, transparent, opaque_ports, follow_original_port, passthrough (did you mean 'address'?)"
        ),
        format!("{b}:6:26: listeners[0].routes[0].match.path.regex: invalid regex: unclosed group"),
        format!(
            "{b}:9:21: listeners[0].routes[0].backends[0].weight: expected a whole number from 0 to 4294967295, found 'heavy'"
        ),
        format!(
            "{b}:10:22: listeners[0].routes[0].backends[1].cluster: no cluster named 'ap' (clusters: app)"
        ),
        format!(
            "{b}:12:11: listeners[0].routes[1].backends: all backend weights are 0, so no request could be sent; give at least one backend a positive weight"
        ),
        format!(
            "{b}:13:18: listeners[0].routes[1].timeout: unknown unit 'd' in '2d'; use h, m, s, ms, us or ns"
        ),
        format!(
            "{b}:17:14: listeners[2].address: address 127.0.0.1:5432 is already used by listeners[1]"
        ),
        format!(
            "{b}:22:22: clusters[0].connect_timeout: 1m30s is out of range; expected 1ms to 1m"
        ),
    ];
    let stderr = lines(&out.stderr);
    for (i, (actual, expected)) in stderr.iter().zip(&expected).enumerate() {
        assert_eq!(actual, expected, "stderr line {}", i + 1);
    }
    assert_eq!(stderr.len(), expected.len(), "{stderr:#?}");
}

#[test]
fn validate_good_files_exits_0() {
    let a = TempFile::new("good-files", "a.yaml", GOOD);
    let b = TempFile::new("good-files", "b.yaml", GOOD);
    let out = remora(&["validate", a.path(), b.path()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        lines(&out.stdout),
        [format!("{}: ok", a.path()), format!("{}: ok", b.path())]
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_a_missing_file_exits_1() {
    let out = remora(&["validate", "/nonexistent/remora.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = lines(&out.stderr);
    assert_eq!(stderr.len(), 1);
    assert!(
        stderr[0].starts_with("/nonexistent/remora.yaml:0:0: cannot read the config: "),
        "{stderr:?}"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["validate"][..], &["no-such-command"], &[]] {
        let out = remora(args);
        assert_eq!(out.status.code(), Some(2), "remora {args:?}");
        assert!(out.stdout.is_empty(), "remora {args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage"),
            "remora {args:?}"
        );
    }
}

#[test]
fn schema_prints_the_json_schema() {
    let out = remora(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["type"], "object");
    let properties = schema["properties"]
        .as_object()
        .expect("top-level properties");
    let mut keys: Vec<&str> = properties.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_log",
            "admin",
            "clusters",
            "limits",
            "listeners",
            "runtime"
        ]
    );
    assert!(schema["definitions"]["Listener"]["properties"]["address"].is_object());
}

/// `remora inject` points sidecars at the control plane's TLS port, so it needs the root
/// they will trust it by; with it, the root is in each sidecar's environment. A plaintext
/// (http://) control plane needs none.
#[test]
fn inject_needs_the_control_planes_ca_for_https_and_hands_it_to_the_sidecar() {
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: { name: web }\nspec:\n  containers: [{ name: web, image: example/web:1 }]\n";
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";
    let pod = TempFile::new("inject-ca", "pod.yaml", POD);
    let ca = TempFile::new("inject-ca", "ca.crt", PEM);

    let out = remora(&["inject", pod.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sidecar-control-plane-ca"), "{err}");
    assert!(out.stdout.is_empty(), "nothing half-injected is written");

    let out = remora(&[
        "inject",
        "--sidecar-control-plane-ca",
        ca.path(),
        pod.path(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("REMORA_CONTROL_PLANE_CA"), "{text}");
    assert!(text.contains("MIIBroot"), "{text}");
    assert!(
        text.contains("https://remora-control-plane.remora-system.svc:15012"),
        "{text}"
    );

    let plaintext = "http://remora-control-plane.remora-system.svc:15010";
    let out = remora(&["inject", "--sidecar-control-plane", plaintext, pod.path()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("REMORA_CONTROL_PLANE_CA"), "{text}");
}
