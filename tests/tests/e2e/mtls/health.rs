//! Active health checks go the way requests go: to an endpoint that requires mTLS, through
//! mTLS with the workload certificate, proving the endpoint's identity.

use remora_tests::mtls::handshakes;

use super::*;

/// api is `mtls: strict` and web checks it every second over HTTP. Without mTLS the checks
/// would be refused (plaintext closed) and api marked unhealthy after three; with it, they
/// pass, api's sidecar counts their handshakes, and no request was needed for that.
#[tokio::test]
async fn health_checks_to_a_strict_mtls_peer_pass_through_mtls() {
    let mesh = Mesh::new();
    let [web, api, edge] = mesh.inbound;
    let caller =
        |name: &str, inbound| service_yaml(name, mesh.nowhere, inbound, inbound, &["api"], "", "");
    mesh.dir.write("web.yaml", &caller("web", web));
    mesh.dir.write("edge.yaml", &caller("edge", edge));
    mesh.dir.write(
        "api.yaml",
        &service_yaml(
            "api",
            mesh.api_app.addr(),
            api,
            api,
            &[],
            "    mtls: strict\n",
            "      health_check: { http: { path: /health }, interval: 1s, timeout: 500ms, unhealthy_threshold: 2 }\n",
        ),
    );
    let cp = mesh.control_plane("24h");
    // api's sidecar first, listening before web's first check: a check that found nobody
    // there yet would be a connect failure, which is not what this test is about.
    let api_sc = mesh.sidecars(&cp, &["api"]).remove(0);
    let web_sc = mesh.sidecars(&cp, &["web"]).remove(0);
    cp.wait_synced(&["web-1", "api-1"], None);
    let (web_sc, api_sc) = (&web_sc, &api_sc);

    // Four checks: long enough for two failures in a row to mark api unhealthy. (A check
    // keeps its connection, so they may share a handshake.)
    let checks = || {
        mesh.api_app
            .heads()
            .iter()
            .filter(|h| h.uri.path() == "/health")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while checks() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "web's checks of api over mTLS: {} reached the app; web's view: {}",
            checks(),
            web_sc.clusters().0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clusters = web_sc.clusters();
    let ep = clusters.endpoint("api", api);
    assert_eq!(ep.state(), "healthy", "{:?}", ep.0);
    assert_eq!(ep.last_failure_reason(), None, "{:?}", ep.0);
    assert_eq!(handshakes(api_sc, "inbound", "plaintext-refused"), 0.0);
    assert!(handshakes(api_sc, "inbound", "ok") >= 1.0);
    assert!(handshakes(web_sc, "outbound", "ok") >= 1.0);
    // The checks reached api's app through its sidecar, from web.
    let head = mesh
        .api_app
        .heads()
        .into_iter()
        .find(|h| h.uri.path() == "/health")
        .unwrap();
    assert_eq!(
        head.headers
            .get("x-remora-peer-identity")
            .and_then(|v| v.to_str().ok()),
        Some(&*web_id())
    );
    // And a request still goes through.
    assert_eq!(call_api(web_sc).await, web_id());
}
