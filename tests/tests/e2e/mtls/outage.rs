//! The control plane gone for longer than a certificate lives.

use std::time::{Instant, SystemTime};

use remora_tests::control_plane::until;
use remora_tests::mtls::{Leaf, TLS13, handshakes, tls_get};

use super::*;

/// The certificate lifetime of this test: short, so that it expires within the test, yet
/// over 32 s, below which sidecars renew in a loop (see
/// `rotation::a_short_lifetime_is_renewed_at_70_percent_not_in_a_loop`).
const LIFETIME: Duration = Duration::from_secs(40);

/// Seconds since the epoch, as the expiry gauge counts.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// With the control plane down, certificates cannot be renewed. Until they expire, calls go on
/// as before; once web's has expired, its calls to api get 503 `no-identity` and never fall
/// back to plaintext (api is permissive: a plaintext call would be served); api, its own
/// certificate expired too, refuses TLS handshakes. A control plane back with the same CA
/// brings both back.
///
/// Calls are made 1.5 s apart, longer than the cluster's 1 s `idle_timeout`: each one needs a
/// new connection, and so a handshake. (A connection opened before expiry is a TLS session
/// already authenticated; whether it may go on being used is not what this test checks.)
#[tokio::test]
async fn past_expiry_without_the_control_plane_callers_fail_closed_then_recover() {
    let mesh = Mesh::new();
    mesh.write("", None);
    let mut cp = mesh.control_plane(&format!("{}s", LIFETIME.as_secs()));
    let sc = mesh.sidecars(&cp, &["web", "api"]);
    cp.wait_synced(&["web-1", "api-1"], None);
    let (web, api) = (&sc[0], &sc[1]);
    assert_eq!(call_api(web).await, web_id());

    cp.kill();
    let expiry = |s: &Sidecar| {
        s.metric("remora_tls_certificate_expiry_timestamp_seconds", &[])
            .unwrap_or_else(|| panic!("{} has no certificate expiry", s.node()))
    };
    let (web_expiry, api_expiry) = (expiry(web), expiry(api));
    assert!(unix_now() < web_expiry.min(api_expiry));
    let out = web.listener("outbound");
    let deadline = Instant::now() + lifetimes(1, LIFETIME);
    let (mut served, mut api_refused) = (0, 0);
    loop {
        let reply = get_with(out, "api", "/down", &[]).await.unwrap();
        let now = unix_now();
        match (reply.status.as_u16(), reply.remora_error()) {
            (200, _) => {
                assert_eq!(
                    reply.echo().header("x-remora-peer-identity"),
                    Some(&*web_id())
                );
                assert!(
                    now < web_expiry + 1.0,
                    "served {:.1} s after web's certificate expired",
                    now - web_expiry
                );
                served += 1;
            }
            // api's certificate expired before web's: api refuses the handshake.
            (502, Some("upstream-tls-failed")) => {
                assert!(
                    now >= api_expiry - 1.0,
                    "api refused while valid: {reply:?}"
                );
                api_refused += 1;
            }
            (503, Some("no-identity")) => {
                assert!(
                    now >= web_expiry - 1.0,
                    "no identity while valid: {reply:?}"
                );
                break;
            }
            _ => panic!("while the control plane is down: {reply:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "still no 503 no-identity {:.1} s after web's certificate expired",
            now - web_expiry
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eprintln!("{served} calls served after the control plane went, then 502 x{api_refused}");
    assert!(served > 0, "nothing served before expiry");
    // Every call api's app saw came over mTLS from web.
    for head in mesh.api_app.heads() {
        let id = head.headers.get("x-remora-peer-identity");
        assert_eq!(id.and_then(|v| v.to_str().ok()), Some(&*web_id()));
    }

    // api refuses TLS, even from a peer with a good certificate.
    until(
        "api's certificate to expire",
        lifetimes(1, LIFETIME),
        || async { (unix_now() >= api_expiry + 1.0).then_some(()) },
    )
    .await;
    let probe = mesh
        .pki
        .mesh_ca()
        .sign(&Leaf::spiffe(&spiffe_id(NS, "probe")));
    let knock = tls_get(mesh.api_inbound(), TLS13, Some(&probe), "api", "/");
    assert!(knock.response.is_err(), "{:?}", knock.response);
    assert!(handshakes(api, "inbound", "no-local-certificate") >= 1.0);

    // The control plane is back with the same CA: both get certificates, calls pass again.
    cp.restart();
    until(
        "web's calls to api to pass again",
        CONVERGE_TIMEOUT,
        || async {
            let reply = get_with(out, "api", "/back", &[]).await.ok()?;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    assert_eq!(call_api(web).await, web_id());
    assert!(expiry(web) > web_expiry && expiry(api) > api_expiry);
}
