//! The sidecars' API over TLS (`--listen-tls`): sidecars dial `https://NAME:PORT` trusting
//! only the mesh's root (`--control-plane-ca`), so the token a sidecar proves its identity
//! with never crosses the network in the clear, and a server without the mesh's certificate
//! for that name is not believed.

use remora_tests::TempDir;
use remora_tests::mtls::{Recorder, ca_init};

use super::*;

#[tokio::test]
async fn sidecars_reach_the_control_plane_over_tls_trusting_only_the_mesh_root() {
    let mesh = Mesh::new();
    mesh.write("", None);
    let mut args = mesh.pki.control_plane_args("24h");
    args.extend(["--listen-tls", "127.0.0.1:0", "--server-name", "localhost"].map(String::from));
    let cp = ControlPlaneProcess::start_with(mesh.dir.path(), &strs(&args));
    let tls = cp.listen_tls().expect("the TLS listener's address");
    // A wiretap in front of the TLS listener: what a sidecar sends the control plane.
    let tap = Recorder::start(tls);
    let url = format!("https://localhost:{}", tap.addr().port());
    let ca = mesh.pki.ca_dir().join("ca.crt");
    let mut sidecar_args = mesh.pki.sidecar_args(NS);
    sidecar_args.extend(["--control-plane-ca".into(), ca.display().to_string()]);
    let web = Sidecar::start(&url, "web-1", "web", &strs(&sidecar_args));
    // As injected: the root in the environment instead of a file.
    assert_eq!(
        remora_proxy::cli::CONTROL_PLANE_CA_ENV,
        remora_control_plane::inject::CONTROL_PLANE_CA_ENV,
        "injection sets what the sidecar reads"
    );
    let mut api = remora_tests::ProxyProcess::builder()
        .args([
            "--control-plane",
            &url,
            "--node",
            "api-1",
            "--service",
            "api",
        ])
        .args(["--admin", "127.0.0.1:0", "--access-log", "off"])
        .args(mesh.pki.sidecar_args(NS))
        .env(
            remora_proxy::cli::CONTROL_PLANE_CA_ENV,
            &std::fs::read_to_string(&ca).unwrap(),
        )
        .spawn();
    api.wait_ready(CONVERGE_TIMEOUT);
    cp.wait_synced(&["web-1", "api-1"], None);
    // Certificates were issued over it too: mTLS between the sidecars works.
    assert_eq!(call_api(&web).await, web_id());

    let token = std::fs::read_to_string(mesh.pki.token_file()).unwrap();
    let token = token.trim().as_bytes();
    let sent: Vec<Vec<u8>> = tap.connections().into_iter().map(|c| c.to_server).collect();
    assert!(
        sent.len() >= 2,
        "the sidecars' connections went through the tap"
    );
    for bytes in &sent {
        assert_eq!(bytes.first(), Some(&0x16), "a TLS handshake first");
        assert!(
            !bytes.windows(token.len()).any(|w| w == token),
            "the token crossed in the clear"
        );
        assert!(
            !bytes.windows(9).any(|w| w == b"/v1/watch"),
            "the API's paths crossed in the clear"
        );
    }

    // Trusting another root, a sidecar never takes this control plane's config...
    let other = TempDir::new("other-ca");
    ca_init(other.path());
    let mut wrong_root = mesh.pki.sidecar_args(NS);
    wrong_root.extend([
        "--control-plane-ca".into(),
        other.path().join("ca.crt").display().to_string(),
    ]);
    let url_direct = format!("https://localhost:{}", tls.port());
    let stranger = Sidecar::spawn(&url_direct, "web-2", "web", &strs(&wrong_root));
    // ...nor does one that dials an address the certificate is not for.
    let by_ip = format!("https://127.0.0.1:{}", tls.port());
    let misnamed = Sidecar::spawn(&by_ip, "web-3", "web", &strs(&sidecar_args));
    for (sidecar, says) in [
        (&stranger, "invalid peer certificate"),
        (&misnamed, "not valid for name"),
    ] {
        let line = sidecar
            .stderr()
            .wait_for_line(Duration::from_secs(10), |l| {
                l.contains("control plane unreachable") && l.contains("TLS handshake")
            });
        assert!(line.contains(says), "{line}");
        assert!(
            !sidecar.is_ready(),
            "{} took an unverified config",
            sidecar.node()
        );
    }
    let status = cp.status();
    let nodes: Vec<&str> = remora_tests::control_plane::sidecars(&status)
        .iter()
        .filter_map(|s| s["node"].as_str())
        .collect();
    assert!(
        !nodes.contains(&"web-2") && !nodes.contains(&"web-3"),
        "{nodes:?}"
    );
}
