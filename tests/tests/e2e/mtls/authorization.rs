//! Authorization by SPIFFE ID on a mesh service, enforced by its sidecar on what mTLS proved.

use super::*;

/// api lets web (by exact ID) call anything but `/admin`, lets nobody else in, and lets
/// unauthenticated (plaintext) callers see only `/healthz`. edge, in the same namespace with
/// a valid certificate, is refused; `sa/web2`-style look-alikes are covered by the exact match.
#[tokio::test]
async fn api_admits_web_by_identity_and_refuses_edge_and_admin() {
    let mesh = Mesh::new();
    let web_id = web_id();
    let rules = format!(
        "    authorization:\n      rules:\n\
         \x20       - action: deny\n          to: {{ paths: [/admin, /admin/*] }}\n\
         \x20       - action: allow\n          from: {{ identities: [\"{web_id}\"] }}\n\
         \x20       - action: allow\n          from: {{ unauthenticated: true }}\n          to: {{ paths: [/healthz] }}\n"
    );
    mesh.write(&rules, None);
    let cp = mesh.control_plane("24h");
    let sc = mesh.sidecars(&cp, &["web", "api", "edge"]);
    cp.wait_synced(&["web-1", "api-1", "edge-1"], None);
    let (web, api, edge) = (&sc[0], &sc[1], &sc[2]);

    // web: in, with its identity; but not to /admin, however it is spelled.
    assert_eq!(call_api(web).await, web_id);
    for path in ["/admin", "/x/../admin/users", "/%61dmin", "//ADMIN"] {
        let reply = get_with(web.listener("outbound"), "api", path, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 403, "web {path}: {reply:?}");
        assert_eq!(reply.remora_error(), Some("unauthorized"), "web {path}");
    }
    // edge: a valid mesh identity, but not one the rules name.
    let reply = get_with(edge.listener("outbound"), "api", "/call", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 403, "edge: {reply:?}");
    assert_eq!(reply.remora_error(), Some("unauthorized"));
    // Plaintext (permissive): only /healthz.
    let plain = get_with(mesh.api_inbound(), "api", "/healthz", &[])
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "{plain:?}");
    let plain = get_with(mesh.api_inbound(), "api", "/call", &[])
        .await
        .unwrap();
    assert_eq!(plain.status, 403, "{plain:?}");

    let denied = api
        .metric(
            "remora_authz_denied_total",
            &[("listener", "inbound"), ("route", "")],
        )
        .unwrap_or(0.0);
    assert_eq!(
        denied, 6.0,
        "4 /admin spellings, edge, and one plaintext call"
    );
    // What api's app saw: web's calls only, and the plaintext /healthz.
    let seen: Vec<String> = mesh
        .api_app
        .heads()
        .iter()
        .map(|h| h.uri.path().to_owned())
        .collect();
    assert_eq!(seen, ["/call", "/healthz"], "{seen:?}");
}
