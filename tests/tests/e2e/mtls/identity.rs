//! Who the caller is reaches the app, and only through TLS; the wire carries nothing else.

use remora_tests::mtls::{Recorder, handshake_results, handshakes};
use remora_tests::raw;

use super::*;

/// A forged identity a client might send, hoping the app believes it.
const FORGED: &str = "spiffe://cluster.local/ns/shop/sa/admin";

#[tokio::test]
async fn the_app_learns_the_callers_spiffe_id_and_plaintext_follows_the_mtls_mode() {
    let mesh = Mesh::new();
    mesh.write("", None);
    let cp = mesh.control_plane("24h");
    let sc = mesh.sidecars(&cp, &["web", "api"]);
    let version = cp.wait_synced(&["web-1", "api-1"], None)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (web, api) = (&sc[0], &sc[1]);

    // Through web's sidecar: mTLS, and api's app is told the caller is web, whatever the
    // caller's workload wrote in the header.
    let forged = [("x-remora-peer-identity", FORGED)];
    let reply = get_with(web.listener("outbound"), "api", "/who", &forged)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert_eq!(echo.upstream(), "api");
    assert_eq!(echo.header_all("x-remora-peer-identity"), [web_id()]);
    assert_eq!(handshake_results(web, "outbound"), [("ok".into(), 1.0)]);
    assert_eq!(handshake_results(api, "inbound"), [("ok".into(), 1.0)]);
    let peers = api.metric(
        "remora_tls_peer_identities_total",
        &[("identity", &web_id())],
    );
    assert_eq!(peers, Some(1.0));

    // Permissive (the default): plaintext straight to api's inbound is served, with no
    // identity, and a forged one is dropped.
    let reply = get_with(mesh.api_inbound(), "api", "/plain", &forged)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert_eq!(echo.upstream(), "api");
    assert_eq!(
        echo.header_all("x-remora-peer-identity"),
        Vec::<&str>::new()
    );
    assert_eq!(mesh.api_app.requests(), 2);

    // Strict: plaintext gets its connection closed, unanswered; mTLS still works.
    mesh.write("    mtls: strict\n", None);
    let v2 = cp.wait_new_version(&version);
    cp.wait_synced(&["web-1", "api-1"], Some(&v2));
    let refused = raw::get(mesh.api_inbound(), "/plain");
    assert!(
        refused.is_err(),
        "plaintext on a strict listener was answered: {refused:?}"
    );
    assert_eq!(
        mesh.api_app.requests(),
        2,
        "the app saw the plaintext request"
    );
    assert_eq!(handshakes(api, "inbound", "plaintext-refused"), 1.0);
    assert_eq!(call_api(web).await, web_id());
    assert_eq!(mesh.api_app.requests(), 3);
}

/// What crosses the wire between two sidecars is TLS from the first byte: a wiretap between
/// them finds none of the request's path, headers or the response's body.
#[tokio::test]
async fn the_bytes_between_sidecars_are_tls() {
    let mesh = Mesh::new();
    // web (and edge) reach api through the wiretap.
    let tap = Recorder::start(mesh.api_inbound());
    mesh.write("", Some(tap.addr()));
    let cp = mesh.control_plane("24h");
    let sc = mesh.sidecars(&cp, &["web", "api"]);
    cp.wait_synced(&["web-1", "api-1"], None);

    const PATH: &str = "/wiretap-path-4f1d9c";
    const HEADER: &str = "header-marker-b7e3a0";
    let reply = get_with(
        sc[0].listener("outbound"),
        "api",
        PATH,
        &[("x-marker", HEADER)],
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    // The echo's body carries both markers back: the response had them in clear at the ends.
    let body = reply.text();
    assert!(body.contains(PATH) && body.contains(HEADER), "{body}");
    assert_eq!(reply.echo().header("x-marker"), Some(HEADER));

    let conns = tap.connections();
    assert!(!conns.is_empty(), "nothing went through the wiretap");
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(
            c.to_server.first(),
            Some(&0x16),
            "connection {i} does not start with a TLS handshake record: {:?}",
            String::from_utf8_lossy(&c.to_server[..c.to_server.len().min(64)])
        );
        assert_eq!(c.to_client.first(), Some(&0x16), "connection {i}'s answer");
        for (dir, bytes) in [("to api", &c.to_server), ("to web", &c.to_client)] {
            for marker in [PATH, HEADER, "HTTP/1.1", "\"upstream\""] {
                assert!(
                    !contains(bytes, marker.as_bytes()),
                    "{marker:?} in clear on connection {i}, {dir}"
                );
            }
        }
    }
    let sent: usize = conns.iter().map(|c| c.to_server.len()).sum();
    let answered: usize = conns.iter().map(|c| c.to_client.len()).sum();
    assert!(
        sent > PATH.len() + HEADER.len() && answered > body.len(),
        "the wiretap saw {sent} bytes to api and {answered} back"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
