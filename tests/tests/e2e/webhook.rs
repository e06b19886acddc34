//! The injection webhook, as the Kubernetes API server uses it: AdmissionReview v1 documents
//! (`tests/data/admission/`) POSTed to the control plane's `/inject` over TLS, checked by curl
//! against the mesh CA for the Service's DNS name. The patch it answers with, applied to the
//! pod, gives exactly what the injection library (behind `remora inject`) makes of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use remora_control_plane::inject::{self, Options, Outcome};
use remora_tests::mtls::MeshPki;
use remora_tests::{ControlPlaneProcess, MeshDir, TempDir, wait_for};
use serde_json::Value;

/// The name the API server reaches the webhook by (the control plane's default).
const NAME: &str = "remora-control-plane.remora-system.svc";

fn document(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/admission")
        .join(name)
}

fn read(name: &str) -> Value {
    let text = std::fs::read_to_string(document(name)).expect("test document");
    serde_json::from_str(&text).expect("JSON")
}

/// `curl` over TLS to `https://<host>:<port><path>`, `host` resolving to the webhook, the mesh
/// CA as the only trust: (HTTP status, body), status `000` when TLS or the connection failed.
fn curl(
    webhook: SocketAddr,
    ca: &Path,
    host: &str,
    path: &str,
    body: Option<&Path>,
) -> (String, String) {
    let port = webhook.port();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "5", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code}"]);
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", body.display()));
    }
    let out = cmd
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// RFC 6902 `add` and `replace` at object members: all the webhook's patches use.
fn apply(doc: &mut Value, patch: &[Value]) {
    for op in patch {
        let path = op["path"].as_str().unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        let target = doc
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent}"));
        let exists = target.get(key).is_some();
        match op["op"].as_str().unwrap() {
            "add" => {}
            "replace" => assert!(exists, "replace of missing {path}"),
            other => panic!("unexpected op {other}"),
        }
        target[key] = op["value"].clone();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let out = Command::new("base64")
        .arg("--decode")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("base64 (coreutils)");
    assert!(out.status.success(), "not base64: {text}");
    out.stdout
}

#[test]
fn the_webhook_answers_admission_reviews_over_tls_as_the_library_injects() {
    let mesh = MeshDir::new();
    let pki = MeshPki::new(&["shop"]);
    let mut args = pki.control_plane_args("1h");
    args.extend(["--webhook-listen".into(), "127.0.0.1:0".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cp = ControlPlaneProcess::start_with(mesh.path(), &args);
    let webhook = wait_for("the webhook's address", Duration::from_secs(10), || {
        cp.webhook()
    });
    let ca = pki.ca_dir().join("ca.crt");
    let post = |name: &str| -> Value {
        let (code, body) = curl(webhook, &ca, NAME, "/inject", Some(&document(name)));
        assert_eq!(code, "200", "{name}: {body}");
        let review: Value = serde_json::from_str(&body).expect("JSON answer");
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let sent = read(name);
        assert_eq!(review["response"]["uid"], sent["request"]["uid"], "{name}");
        assert_eq!(review["response"]["allowed"], true, "never refuses: {name}");
        review["response"].clone()
    };

    // A Deployment's pod, as the ReplicaSet controller creates it.
    let response = post("pod-create.json");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(&base64_decode(response["patch"].as_str().unwrap()))
        .expect("the patch is JSON");
    let mut pod = read("pod-create.json")["request"]["object"].clone();
    let before = pod.clone();
    apply(&mut pod, patch.as_array().unwrap());
    // The sidecar dials the control plane's TLS port and trusts the mesh root, which the
    // webhook puts in its environment.
    let env = pod["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .clone();
    let given = env
        .iter()
        .find(|e| e["name"] == inject::CONTROL_PLANE_CA_ENV)
        .and_then(|e| e["value"].as_str())
        .expect("the control plane's CA in the sidecar's environment")
        .to_owned();
    let root = std::fs::read_to_string(&ca).unwrap();
    assert_eq!(given.trim(), root.trim(), "the mesh root");
    // The same function as `remora inject`: the owner is the generateName's stem.
    let options = Options {
        control_plane_ca: Some(given),
        ..Options::default()
    };
    let mut expected = before.clone();
    assert_eq!(
        inject::inject_template(&mut expected, "web-6c9f8d7b5d", &options),
        Outcome::Injected
    );
    assert_eq!(pod, expected, "the patched pod is what the library makes");
    let inits: Vec<&str> = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["remora-init", "remora-proxy"]);
    assert_eq!(pod["spec"]["containers"], before["spec"]["containers"]);
    assert_eq!(
        pod["spec"]["volumes"][0], before["spec"]["volumes"][0],
        "the API server's token volume is kept"
    );
    assert_eq!(pod["spec"]["volumes"][1]["name"], "remora-token");

    // A dry run is injected the same (the webhook has no side effects); an opted-out pod and
    // a Deployment's scale subresource are allowed untouched.
    assert_eq!(post("pod-dry-run.json")["patchType"], "JSONPatch");
    for name in ["pod-opted-out.json", "scale-update.json"] {
        let response = post(name);
        assert!(response["patch"].is_null(), "{name}: {response}");
        assert!(response["patchType"].is_null(), "{name}: {response}");
    }

    // Only for its names: a client that checks the name refuses it under another.
    let (code, _) = curl(
        webhook,
        &ca,
        "elsewhere.remora-system.svc",
        "/inject",
        Some(&document("pod-create.json")),
    );
    assert_eq!(code, "000", "the certificate is not for another name");
    // Not an AdmissionReview: 400, and anything but POST /inject: 404.
    let junk = TempDir::new("webhook");
    let file = junk.path().join("junk.json");
    std::fs::write(&file, r#"{"hello": "world"}"#).unwrap();
    let (code, body) = curl(webhook, &ca, NAME, "/inject", Some(&file));
    assert_eq!(code, "400", "{body}");
    std::fs::write(&file, "not json").unwrap();
    assert_eq!(curl(webhook, &ca, NAME, "/inject", Some(&file)).0, "400");
    assert_eq!(curl(webhook, &ca, NAME, "/inject", None).0, "404");

    let metric =
        |result: &str| cp.metric("remora_cp_admission_reviews_total", &[("result", result)]);
    assert_eq!(metric("injected"), 2.0);
    assert_eq!(metric("unchanged"), 2.0);
    assert_eq!(metric("invalid"), 2.0);
}
