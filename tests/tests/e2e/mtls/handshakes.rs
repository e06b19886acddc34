//! Bad certificates at real ports: each refused, for the reason the metrics give.

use remora_tests::mtls::{
    Credential, Leaf, TLS12, TLS13, TestCa, handshake_results, handshakes, tls_get,
};
use remora_tests::util::wait_for;

use super::*;

/// A test client's identity in the mesh.
fn probe_id() -> String {
    spiffe_id(NS, "probe")
}

/// Waits until api's inbound listener has counted `want` handshakes refused for `reason`.
fn wait_refused(api: &Sidecar, reason: &str, want: f64) {
    wait_for(
        &format!("{want} inbound handshakes refused as {reason}"),
        Duration::from_secs(5),
        || (handshakes(api, "inbound", reason) == want).then_some(()),
    );
}

/// A client presenting each kind of bad certificate to api's strict inbound listener, over
/// TLS 1.3 and 1.2, is refused before a request reaches the app, and counted with its reason.
/// A good certificate from the mesh's CA, presented the same way, gets through (so the
/// refusals are about the certificates, not the client).
#[tokio::test]
async fn each_bad_client_certificate_is_refused_at_the_inbound_port() {
    let mesh = Mesh::new();
    mesh.write("    mtls: strict\n", None);
    let cp = mesh.control_plane("24h");
    let sc = mesh.sidecars(&cp, &["api"]);
    cp.wait_synced(&["api-1"], None);
    let api = &sc[0];
    let addr = mesh.api_inbound();
    let ca = mesh.pki.mesh_ca();
    let other = TestCa::new("another mesh");
    let id = probe_id();

    let cases: Vec<(&str, Option<Credential>, &str)> = vec![
        ("no client certificate", None, "no-client-certificate"),
        (
            "a certificate from another CA",
            Some(other.sign(&Leaf::spiffe(&id))),
            "unknown-issuer",
        ),
        (
            "an expired certificate",
            Some(ca.sign(&Leaf {
                not_before: -7200,
                not_after: -600,
                ..Leaf::spiffe(&id)
            })),
            "expired",
        ),
        (
            "a certificate not valid yet",
            Some(ca.sign(&Leaf {
                not_before: 3600,
                not_after: 7200,
                ..Leaf::spiffe(&id)
            })),
            "not-yet-valid",
        ),
        (
            "a CA certificate as the leaf",
            Some(ca.sign(&Leaf {
                ca: true,
                ..Leaf::spiffe(&id)
            })),
            "invalid-certificate",
        ),
        (
            "the SPIFFE ID only in a DNS SAN",
            Some(ca.sign(&Leaf {
                uri: None,
                dns: Some(id.clone()),
                ..Leaf::spiffe(&id)
            })),
            "no-spiffe-id",
        ),
        (
            "the SPIFFE ID only in the CN",
            Some(ca.sign(&Leaf {
                uri: None,
                common_name: Some(id.clone()),
                ..Leaf::spiffe(&id)
            })),
            "no-spiffe-id",
        ),
    ];
    let good = ca.sign(&Leaf::spiffe(&id));
    let mut refused: Vec<(&str, f64)> = Vec::new();
    for version in [TLS13, TLS12] {
        let v = version.version;
        // The good one first: the client works, and api shows its own identity.
        let ok = tls_get(addr, version, Some(&good), "api", "/good");
        assert_eq!(ok.version, Some(v));
        assert_eq!(ok.server_uris(), [spiffe_id(NS, "api")]);
        let resp = ok
            .response
            .unwrap_or_else(|e| panic!("{v:?}, good certificate: {e}"));
        assert_eq!(resp.status, 200, "{v:?}: {}", resp.text());
        let echo = remora_tests::Echo::parse(&resp.body);
        assert_eq!(echo.header_all("x-remora-peer-identity"), [id.as_str()]);

        for (what, cred, reason) in &cases {
            let before = mesh.api_app.requests();
            let got = tls_get(addr, version, cred.as_ref(), "api", "/bad");
            assert!(
                got.response.is_err(),
                "{v:?}, {what}: answered {:?}",
                got.response
            );
            assert_eq!(
                mesh.api_app.requests(),
                before,
                "{v:?}, {what}: reached the app"
            );
            match refused.iter_mut().find(|(r, _)| r == reason) {
                Some((_, n)) => *n += 1.0,
                None => refused.push((reason, 1.0)),
            }
            let want = refused.iter().find(|(r, _)| r == reason).unwrap().1;
            wait_refused(api, reason, want);
        }
    }
    // Nothing else happened: two good handshakes, and the refusals counted above.
    let mut want: Vec<(String, f64)> = refused.iter().map(|(r, n)| ((*r).into(), *n)).collect();
    want.push(("ok".into(), 2.0));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(handshake_results(api, "inbound"), want);
    assert_eq!(mesh.api_app.requests(), 2);
}

/// A caller whose cluster expects `spiffe://cluster.local/ns/shop/sa/web` refuses a server
/// proving `.../sa/web2`: one that only shares a prefix with the right identity. Here web's
/// sidecar runs as service account web2 (its token grants it), while the mesh says web runs
/// as web, so its callers expect that.
#[tokio::test]
async fn a_caller_refuses_a_server_whose_identity_only_shares_a_prefix() {
    let pki = MeshPki::new(&[NS]);
    let dir = MeshDir::new();
    let web_app = Upstream::start_named("web", Behaviour::Echo);
    let [front, web, nowhere] = free_addrs(3)[..] else {
        unreachable!()
    };
    let front_yaml = service_yaml("front", nowhere, front, front, &["web"], "", "");
    dir.write("front.yaml", &front_yaml);
    dir.write(
        "web.yaml",
        &service_yaml("web", web_app.addr(), web, web, &[], "", ""),
    );
    let args = pki.control_plane_args("24h");
    let cp = ControlPlaneProcess::start_with(dir.path(), &strs(&args));
    let url = cp.url();
    let front_args = pki.sidecar_args(NS);
    let web_args = {
        let mut a = pki.sidecar_args(NS);
        a.extend(["--service-account".to_owned(), "web2".to_owned()]);
        a
    };
    let front_sc = Sidecar::start(&url, "front-1", "front", &strs(&front_args));
    let web_sc = Sidecar::start(&url, "web-1", "web", &strs(&web_args));
    cp.wait_synced(&["front-1", "web-1"], None);
    let installed = web_sc.stderr().wait_for_line(CONVERGE_TIMEOUT, |l| {
        l.contains("workload certificate installed")
    });
    assert!(
        installed.contains(&format!("identity={}", spiffe_id(NS, "web2"))),
        "{installed}"
    );

    let reply = get_with(front_sc.listener("outbound"), "web", "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.remora_error(), Some("upstream-tls-failed"));
    assert_eq!(web_app.requests(), 0);
    assert!(handshakes(&front_sc, "outbound", "wrong-identity") >= 1.0);
    assert_eq!(handshakes(&front_sc, "outbound", "ok"), 0.0);
}
