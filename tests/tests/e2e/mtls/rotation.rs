//! Certificates renewed, and the root CA rolled over, while traffic flows.

use std::path::Path;
use std::time::Instant;

use remora_tests::control_plane::{Traffic, TrafficReport, until};
use remora_tests::mtls::{
    Leaf, TLS13, TestCa, authority_key_id, ca_init, handshake_results, installed_serials,
    subject_key_id, tls_get,
};

use super::*;

/// How long the rotation test runs: `REMORA_ROTATION_SECS`, 300 unless set (set it lower to
/// try the test quickly; 300 s is what it is meant to prove).
fn rotation_secs() -> u64 {
    std::env::var("REMORA_ROTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// The load of these tests: web's workload calls api on 2 HTTP/1.1 connections and 4 h2c
/// streams without pause (its pooled connections to api stay open), and edge's calls api once
/// every 1.1 s, longer than the cluster's 1 s idle timeout, so each is a new handshake between
/// the sidecars.
async fn start_load(sc: &[Sidecar]) -> (Traffic, Traffic) {
    let web = Traffic::start(
        sc[0].listener("outbound"),
        "api",
        "api",
        (2, 4),
        Duration::from_millis(10),
    )
    .await;
    let edge = Traffic::start(
        sc[2].listener("outbound"),
        "api",
        "api",
        (1, 0),
        Duration::from_millis(1100),
    )
    .await;
    (web, edge)
}

/// Checks that no request of either load failed, and no handshake between the sidecars did.
fn assert_no_failure(sc: &[Sidecar], web: &TrafficReport, edge: &TrafficReport) {
    assert_eq!(web.failed, 0, "web's calls: {:#?}", web.errors);
    assert_eq!(edge.failed, 0, "edge's calls: {:#?}", edge.errors);
    assert!(web.ok > 0 && edge.ok > 0, "web {web:?}, edge {edge:?}");
    for (s, direction) in [
        (&sc[0], "outbound"),
        (&sc[1], "inbound"),
        (&sc[2], "outbound"),
    ] {
        let results = handshake_results(s, direction);
        assert!(
            results.iter().all(|(r, _)| r == "ok"),
            "{} {direction} handshakes: {results:?}",
            s.node()
        );
    }
}

/// With 60 s certificates and traffic for `REMORA_ROTATION_SECS` (300), every sidecar gets a
/// new certificate about every 42 s (70% ± 5% of the lifetime), so more than 4 times in 300 s;
/// not one request fails, and each of edge's calls is a new handshake with the certificates
/// of the moment.
#[tokio::test]
async fn certificates_rotate_under_load_without_a_failed_request() {
    let secs = rotation_secs();
    let mesh = Mesh::new();
    mesh.write("", None);
    let cp = mesh.control_plane("60s");
    let sc = mesh.sidecars(&cp, &["web", "api", "edge"]);
    cp.wait_synced(&["web-1", "api-1", "edge-1"], None);

    let (web, edge) = start_load(&sc).await;
    let started = Instant::now();
    // Look every second, so that a failure ends the test at once rather than minutes later.
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (w, e) = (web.report(), edge.report());
        assert_eq!(w.failed + e.failed, 0, "web {w:#?}\nedge {e:#?}");
    }
    let (web, edge) = (web.stop().await, edge.stop().await);
    let serials: Vec<Vec<String>> = sc.iter().map(|s| installed_serials(s)).collect();
    let changes: Vec<usize> = serials.iter().map(|s| s.len() - 1).collect();
    let edge_handshakes = remora_tests::mtls::handshakes(&sc[2], "outbound", "ok");
    eprintln!(
        "{secs} s: web {} requests, edge {} requests ({edge_handshakes} handshakes); \
         serial changes web {}, api {}, edge {}; {} certificates issued",
        web.ok,
        edge.ok,
        changes[0],
        changes[1],
        changes[2],
        cp.metric("remora_cp_certificates_issued_total", &[])
    );
    assert_no_failure(&sc, &web, &edge);
    let want = (secs / 75).max(1) as usize;
    for (s, serials) in sc.iter().zip(&serials) {
        assert!(
            serials.len() > want,
            "{}: {} certificates in {secs} s: {serials:?}",
            s.node(),
            serials.len()
        );
        let mut unique = serials.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), serials.len(), "{}: {serials:?}", s.node());
    }
    assert!(
        edge_handshakes >= edge.ok as f64 / 2.0,
        "edge's calls reused connections: {edge_handshakes} handshakes for {} calls",
        edge.ok
    );
}

/// Waits until each sidecar has installed a certificate after the `before` counts.
async fn renewed(sc: &[Sidecar], before: &[usize], within: Duration) {
    until("every sidecar to renew", within, || async {
        let now: Vec<usize> = sc.iter().map(|s| installed_serials(s).len()).collect();
        now.iter().zip(before).all(|(n, b)| n > b).then_some(())
    })
    .await;
}

/// Which root each sidecar's certificate chains to now, as a peer sees it: the authority key
/// IDs of the certificates their inbound listeners present to a client `signer` vouches for.
fn roots_in_use(mesh: &Mesh, signer: &TestCa) -> Vec<Vec<u8>> {
    let probe = signer.sign(&Leaf::spiffe(&spiffe_id(NS, "probe")));
    mesh.inbound
        .iter()
        .map(|addr| {
            let seen = tls_get(*addr, TLS13, Some(&probe), "probe", "/");
            let leaf = seen
                .server_chain
                .first()
                .unwrap_or_else(|| panic!("{addr} sent no certificate: {:?}", seen.response));
            authority_key_id(leaf).expect("an authority key identifier")
        })
        .collect()
}

/// The root rollover of docs/identity.md, with real files and restarts, under load: roots made
/// by `remora ca init`; the control plane restarted to trust both (signing with the old),
/// then to sign with the new, then to trust only the new, each step once every sidecar has
/// renewed. Not one request fails, and each step changes what it should.
#[tokio::test]
async fn the_root_rolls_over_under_load_without_a_failed_request() {
    let lifetime = Duration::from_secs(45);
    let mesh = Mesh::new();
    mesh.write("", None);
    let (old, new) = (mesh.pki.path().join("old"), mesh.pki.path().join("new"));
    ca_init(&old);
    ca_init(&new);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let (old_pem, new_pem) = (read(&old.join("ca.crt")), read(&new.join("ca.crt")));
    let bundle = mesh.pki.path().join("bundle.pem");
    std::fs::write(&bundle, format!("{old_pem}{new_pem}")).unwrap();
    let flags = |ca: &Path, bundle: Option<&Path>| mesh.pki.own_ca_args("45s", ca, bundle);
    let old_ca = TestCa::from_files(&old.join("ca.crt"), &old.join("ca.key"));
    let new_ca = TestCa::from_files(&new.join("ca.crt"), &new.join("ca.key"));
    let (old_id, new_id) = (subject_key_id(&old_pem), subject_key_id(&new_pem));
    assert!(old_id.is_some() && old_id != new_id);
    let (old_id, new_id) = (old_id.unwrap(), new_id.unwrap());

    let mut cp = ControlPlaneProcess::start_with(mesh.dir.path(), &strs(&flags(&old, None)));
    let sc = mesh.sidecars(&cp, &["web", "api", "edge"]);
    cp.wait_synced(&["web-1", "api-1", "edge-1"], None);
    assert_eq!(roots_in_use(&mesh, &old_ca), vec![old_id.clone(); 3]);
    let (web, edge) = start_load(&sc).await;
    let count = || -> Vec<usize> { sc.iter().map(|s| installed_serials(s).len()).collect() };
    let step_wait = lifetimes(1, lifetime);

    // 1. Trust both, sign with the old one.
    cp.restart_with(&strs(&flags(&old, Some(&bundle))));
    renewed(&sc, &count(), step_wait).await;
    assert_eq!(roots_in_use(&mesh, &old_ca), vec![old_id.clone(); 3]);
    let after_1 = (web.report().ok, edge.report().ok);

    // 2. Trust both, sign with the new one.
    cp.restart_with(&strs(&flags(&new, Some(&bundle))));
    renewed(&sc, &count(), step_wait).await;
    assert_eq!(roots_in_use(&mesh, &new_ca), vec![new_id.clone(); 3]);
    let after_2 = (web.report().ok, edge.report().ok);

    // 3. Trust only the new one.
    cp.restart_with(&strs(&flags(&new, Some(&new.join("ca.crt")))));
    renewed(&sc, &count(), step_wait).await;
    // A few more of edge's calls, each a new handshake, with only the new root trusted.
    let at_3 = edge.report().ok;
    until("edge's calls after step 3", step_wait, || async {
        (edge.report().ok >= at_3 + 3).then_some(())
    })
    .await;
    // The old root is trusted no more.
    let old_probe = tls_get(
        mesh.api_inbound(),
        TLS13,
        Some(&old_ca.sign(&Leaf::spiffe(&spiffe_id(NS, "probe")))),
        "api",
        "/",
    );
    assert!(old_probe.response.is_err(), "{:?}", old_probe.response);

    let (web, edge) = (web.stop().await, edge.stop().await);
    eprintln!(
        "rollover: web {} requests ({} by step 1, {} by step 2), edge {} ({} by step 1, {} by \
         step 2)",
        web.ok, after_1.0, after_2.0, edge.ok, after_1.1, after_2.1
    );
    // api refused the old-root probe at the end; that is the one refusal expected:
    // `unknown-issuer` (roots made by `remora ca init` carry their date in their subject, so
    // the old and new ones have different names); `invalid-certificate` (a bad signature)
    // if two roots ever shared a name.
    let api_results = handshake_results(&sc[1], "inbound");
    let refused: f64 = api_results
        .iter()
        .filter(|(r, _)| r != "ok")
        .map(|(_, n)| n)
        .sum();
    assert!(
        refused == 1.0
            && api_results
                .iter()
                .all(|(r, _)| ["ok", "unknown-issuer", "invalid-certificate"].contains(&r.as_str())),
        "api inbound: {api_results:?}"
    );
    assert_eq!(web.failed, 0, "web's calls: {:#?}", web.errors);
    assert_eq!(edge.failed, 0, "edge's calls: {:#?}", edge.errors);
    for (s, dir) in [(&sc[0], "outbound"), (&sc[2], "outbound")] {
        let results = handshake_results(s, dir);
        assert!(results.iter().all(|(r, _)| r == "ok"), "{results:?}");
    }
}

/// A short certificate lifetime is renewed at about 70% of it, not in a loop. (The control
/// plane backdates `not_before` a minute for clock skew; renewal counted from there renewed any
/// lifetime under ~32 s at once, thousands of certificates a second. The sidecar now counts
/// from when the certificate arrived.)
#[tokio::test]
async fn a_short_lifetime_is_renewed_at_70_percent_not_in_a_loop() {
    let mesh = Mesh::new();
    mesh.write("", None);
    let cp = mesh.control_plane("20s");
    let _sc = mesh.sidecars(&cp, &["api"]);
    cp.wait_synced(&["api-1"], None);
    let first = cp.metric("remora_cp_certificates_issued_total", &[]);
    // A rate needs a span of time: 2 s, a tenth of the lifetime, in which a sidecar renewing
    // at 70% of it (14 s) asks for nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = cp.metric("remora_cp_certificates_issued_total", &[]);
    assert!(
        later - first <= 1.0,
        "{} certificates issued to one sidecar in 2 s with --cert-lifetime 20s",
        later - first
    );
}
