//! The control plane going away, restarting, or being another replica; sidecars going away.

use super::*;

#[tokio::test]
async fn sidecars_keep_serving_while_the_control_plane_restarts() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let mut cp = ControlPlaneProcess::start(dir.path());
    let sc = shop.sidecars(&cp.url());
    let version = cp.wait_synced(&SHOP_NODES, None)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let web_out = sc[0].listener("outbound");
    let traffic = Traffic::start(web_out, "api", "api", (2, 4), Duration::from_millis(5)).await;
    until("some traffic", CONVERGE_TIMEOUT, || async {
        (traffic.report().ok >= 50).then_some(())
    })
    .await;

    cp.kill();
    let down = Instant::now();
    let (code, _) = cp.status_text(&[]);
    assert_eq!(
        code, 1,
        "remora status exits 1 when the control plane is down"
    );
    // A sidecar started now has nothing to serve: not ready, for as long as it lasts.
    let mut late = Sidecar::spawn(&cp.url(), "web-2", "web", &ANY_PORTS);
    let served_before = traffic.report().ok;
    while down.elapsed() < Duration::from_millis(1500) {
        assert_eq!(late.admin_get("/ready").status, 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    let served_while_down = traffic.report().ok - served_before;
    assert!(
        served_while_down > 20,
        "{served_while_down} requests while down"
    );

    cp.restart();
    let nodes = ["web-1", "api-1", "db-1", "web-2"];
    let status = cp.wait_synced(&nodes, Some(&version));
    late.proxy_mut().wait_ready(CONVERGE_TIMEOUT);
    assert_eq!(call(&late, "api").await, pair("api", "1"));
    let report = traffic.stop().await;
    eprintln!(
        "{} requests, {} failed, {served_while_down} while the control plane was down",
        report.ok, report.failed
    );
    assert_eq!(report.failed, 0, "{:#?}", report.errors);
    // Back with the same version: nothing to re-apply.
    for s in &sc {
        assert_eq!(s.reloads("applied"), 1.0, "{}", s.node());
    }
    assert_eq!(late.reloads("applied"), 1.0);
    assert_eq!(cp.metric("remora_cp_connected_sidecars", &[]), 4.0);
    assert_status_text(&cp, &status, &nodes);
}

#[tokio::test]
async fn sidecars_move_to_another_replica_without_reapplying() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let mut a = ControlPlaneProcess::start(dir.path());
    let b = ControlPlaneProcess::start(dir.path());
    let (sa, sb) = (a.status(), b.status());
    assert!(sa["version"].is_string(), "{sa}");
    assert_eq!(sa["version"], sb["version"]);
    assert_eq!(sa["generation"], sb["generation"]);
    let version = sa["version"].as_str().unwrap().to_owned();

    // The sidecars know one address, a Service in front of the replicas; it sends them to A.
    let service = Forwarder::start(a.addrs().listen);
    let sc = shop.sidecars(&service.url());
    a.wait_synced(&SHOP_NODES, Some(&version));
    assert!(sidecars(&b.status()).is_empty());

    service.switch(b.addrs().listen);
    a.kill();
    let status = b.wait_synced(&SHOP_NODES, Some(&version));
    assert_eq!(status["generation"], sa["generation"]);
    assert_status_text(&b, &status, &SHOP_NODES);
    let m = b.metrics();
    assert_eq!(
        m.get("remora_cp_pushes_total", &[]),
        Some(0.0),
        "B had nothing to send"
    );
    assert_eq!(m.get("remora_cp_acks_total", &[]), Some(3.0));
    for s in &sc {
        assert_eq!(s.reloads("applied"), 1.0, "{}", s.node());
        assert!(s.is_ready());
    }
    assert_eq!(call(&sc[0], "api").await, pair("api", "1"));
    assert_eq!(a.status_text(&[]).0, 1, "A is gone");

    // And B pushes the next edit.
    dir.write("api.yaml", &shop.api_yaml(2));
    let v2 = b.wait_new_version(&version);
    b.wait_synced(&SHOP_NODES, Some(&v2));
    assert_eq!(call(&sc[0], "api").await, pair("api", "2"));
}

/// A sidecar that stops (killed: no goodbye) is shown disconnected, left out of
/// `remora status` (shown with `--all`), and no longer counted as connected.
#[tokio::test]
async fn a_sidecar_that_goes_away_is_shown_disconnected_and_not_counted() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let cp = ControlPlaneProcess::start(dir.path());
    let mut sc = shop.sidecars(&cp.url());
    cp.wait_synced(&SHOP_NODES, None);
    assert_eq!(cp.metric("remora_cp_connected_sidecars", &[]), 3.0);

    drop(sc.remove(2));
    let status = cp.wait_status("db-1 disconnected", CONVERGE_TIMEOUT, |s| {
        sidecar_row(s, "db-1")["connected"] == false
    });
    assert_eq!(sidecar_row(&status, "web-1")["connected"], true);
    assert_eq!(sidecar_row(&status, "api-1")["connected"], true);
    let (_, text) = cp.status_text(&[]);
    assert!(!text.contains("db-1"), "{text}");
    assert_eq!(status_rows(&text).len(), 2, "{text}");
    let (_, all) = cp.status_text(&["--all"]);
    let db = all.lines().find(|l| l.starts_with("db-1"));
    assert!(db.is_some_and(|l| l.contains("(disconnected)")), "{all}");
    assert_eq!(
        cp.metric("remora_cp_connected_sidecars", &[]),
        2.0,
        "/status shows 2 connected sidecars"
    );
}

/// Replicas reading the same files agree on the version, however each is told where the
/// directory is (here: one through a symlink to it, as a volume mount may be).
#[tokio::test]
async fn replicas_agree_on_the_version_whatever_the_path_to_the_directory() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let link = TempDir::new("mesh-link");
    let via_link = link.path().join("mesh");
    std::os::unix::fs::symlink(dir.path(), &via_link).unwrap();
    let a = ControlPlaneProcess::start(dir.path());
    let b = ControlPlaneProcess::start(&via_link);
    let (sa, sb) = (a.status(), b.status());
    assert!(sa["version"].is_string(), "{sa}");
    assert_eq!(sa["version"], sb["version"], "A: {sa}\nB: {sb}");
    assert_eq!(sa["generation"], sb["generation"]);
}
