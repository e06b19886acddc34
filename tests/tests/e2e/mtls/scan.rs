//! What a TLS scanner sees of a sidecar's strict inbound listener.

use remora_tests::mtls::{handshakes, spiffe_id};
use remora_tests::python;
use serde_json::Value;

use super::*;

/// TLS 1.3's suites; ring has all three.
const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// sslyze (`tests/python/tls_scan.py`) tries every version and suite it knows against api's
/// strict inbound listener. It cannot present a mesh certificate, so every handshake fails at
/// client authentication; the server has picked the version and suite by then, which is what
/// sslyze reports.
#[tokio::test]
async fn a_scanner_finds_tls_1_3_and_1_2_aead_suites_and_a_required_client_certificate() {
    let mesh = Mesh::new();
    mesh.write("    mtls: strict\n", None);
    let cp = mesh.control_plane("24h");
    let sc = mesh.sidecars(&cp, &["api"]);
    cp.wait_synced(&["api-1"], None);
    let port = mesh.api_inbound().port().to_string();

    let scan = python::run("tls_scan.py", &["127.0.0.1", &port]);
    let text = format!("{scan:#}");
    assert_eq!(scan["connectivity"], "COMPLETED", "{text}");
    assert_eq!(scan["errors"], serde_json::json!({}), "{text}");
    assert_eq!(scan["client_auth"], "REQUIRED", "{text}");
    assert_eq!(scan["highest_version"], "TLS_1_3", "{text}");
    let suites = |version: &str| -> Vec<String> {
        scan["accepted"][version]
            .as_array()
            .unwrap_or_else(|| panic!("no {version} result: {text}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    for old in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"] {
        assert_eq!(suites(old), Vec::<String>::new(), "{old} accepted: {text}");
        let tried = scan["rejected"][old].as_u64().unwrap_or(0);
        assert!(tried > 0, "sslyze tried no {old} suite: {text}");
    }
    let tls13 = suites("tls_1_3");
    assert!(!tls13.is_empty(), "no TLS 1.3 suite accepted: {text}");
    for s in &tls13 {
        assert!(TLS13_SUITES.contains(&s.as_str()), "{s}: {text}");
    }
    let tls12 = suites("tls_1_2");
    assert!(!tls12.is_empty(), "no TLS 1.2 suite accepted: {text}");
    for s in &tls12 {
        let ecdhe = s.starts_with("TLS_ECDHE_");
        let aead = s.contains("_GCM_") || s.contains("_CHACHA20_POLY1305_");
        assert!(
            ecdhe && aead,
            "TLS 1.2 suite {s} is not ECDHE with AEAD: {text}"
        );
    }
    // The certificate it was shown names api by its SPIFFE ID alone.
    let leaf = &scan["leaf"];
    assert_eq!(
        leaf["san_uris"],
        Value::from(vec![spiffe_id(NS, "api")]),
        "{text}"
    );
    assert_eq!(leaf["san_dns"], serde_json::json!([]), "{text}");

    // Hundreds of handshakes, not one let through.
    assert_eq!(handshakes(&sc[0], "inbound", "ok"), 0.0);
    assert!(handshakes(&sc[0], "inbound", "no-client-certificate") > 0.0);
    assert_eq!(mesh.api_app.requests(), 0);
}
