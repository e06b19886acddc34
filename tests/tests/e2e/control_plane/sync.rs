//! Sidecars get their config, edits reach them, bad edits and unbindable versions are refused.

use super::*;

#[tokio::test]
async fn three_sidecars_get_their_config_and_route_to_each_other() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let cp = ControlPlaneProcess::start(dir.path());
    assert_eq!(cp.admin_get("/ready").status, 200);
    let sc = shop.sidecars(&cp.url());

    let status = cp.wait_synced(&SHOP_NODES, None);
    let version = status["version"].as_str().unwrap().to_owned();
    assert_eq!(version.len(), 16, "{status}");
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{version}");
    assert!(status["generation"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["rejected"], serde_json::json!([]));
    assert_eq!(
        status["config_dir"].as_str(),
        Some(dir.path().to_str().unwrap())
    );
    for (node, service) in SHOP_NODES.iter().zip(["web", "api", "db"]) {
        let row = sidecar_row(&status, node);
        assert_eq!(row["service"], service, "{row}");
        assert_eq!(row["namespace"], "shop", "{row}");
        assert_eq!(row["connected"], true, "{row}");
        assert!(row.get("reason").is_none(), "{row}");
    }
    assert_status_text(&cp, &status, &SHOP_NODES);
    let (code, json) = cp.status_text(&["--json"]);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["version"], version.as_str());

    // web reaches api by any of its names, through api's sidecar; api reaches db.
    let (web, api, db) = (&sc[0], &sc[1], &sc[2]);
    for host in ["api", "api.shop", "api.shop.svc.cluster.local"] {
        assert_eq!(call(web, host).await, pair("api", "1"), "Host: {host}");
    }
    assert_eq!(call(api, "db").await, pair("db", "1"));
    assert_eq!(shop.api.requests(), 3);
    assert_eq!(shop.db.requests(), 1);
    // Each sidecar has the routes of the services it calls, and no others.
    let reply = get_host(web.listener("outbound"), "db", "/").await.unwrap();
    assert_eq!(reply.status, 404, "web does not call db: {reply:?}");
    assert_eq!(shop.db.requests(), 1);
    // db calls nobody: its outbound listener has no route (it only passes on what iptables
    // would capture), so a call made to it directly is 404.
    let reply = get_host(db.listener("outbound"), "api", "/").await.unwrap();
    assert_eq!(reply.status, 404, "db calls nobody: {reply:?}");
    assert_eq!(db.listener("inbound"), shop.inbound[2]);

    let m = cp.metrics();
    let get = |name: &str, labels: &[(&str, &str)]| m.get(name, labels).unwrap_or(0.0);
    assert_eq!(get("remora_cp_connected_sidecars", &[]), 3.0);
    assert_eq!(get("remora_cp_pushes_total", &[]), 3.0);
    assert_eq!(get("remora_cp_acks_total", &[]), 3.0);
    assert_eq!(get("remora_cp_nacks_total", &[]), 0.0);
    assert_eq!(
        get("remora_cp_config_reloads_total", &[("result", "accepted")]),
        1.0
    );
    assert_eq!(get("remora_cp_config_last_reload_success", &[]), 1.0);
    assert_eq!(
        get("remora_cp_config_generation", &[]),
        status["generation"].as_u64().unwrap() as f64
    );
    for s in &sc {
        assert_eq!(s.reloads("applied"), 1.0, "{}", s.node());
    }
}

#[tokio::test]
async fn an_edit_reaches_every_sidecar_within_a_second() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let cp = ControlPlaneProcess::start(dir.path());
    let sc = shop.sidecars(&cp.url());
    let v1 = cp.wait_synced(&SHOP_NODES, None)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(&sc[0], "api").await, pair("api", "1"));
    assert_eq!(call(&sc[1], "db").await, pair("db", "1"));

    // One edit changes all three sidecars: web gets api's new route, api gets db's, and db's
    // inbound moves to another app.
    let edited = Instant::now();
    dir.write("api.yaml", &shop.api_yaml(2));
    dir.write("db.yaml", &shop.db_yaml(2, true));
    let (web, api) = (&sc[0], &sc[1]);
    until(
        "web's calls to api to carry rev 2",
        CONVERGE_TIMEOUT,
        || async { (call(web, "api").await == pair("api", "2")).then_some(()) },
    )
    .await;
    let web_took = edited.elapsed();
    until(
        "api's calls to db to reach db-v2 with rev 2",
        CONVERGE_TIMEOUT,
        || async { (call(api, "db").await == pair("db-v2", "2")).then_some(()) },
    )
    .await;
    let all_took = edited.elapsed();
    eprintln!("edit seen through web after {web_took:?}, through api and db after {all_took:?}");
    assert!(
        all_took < EDIT_DEADLINE,
        "the edit took {all_took:?} to reach every sidecar"
    );

    let v2 = cp.wait_new_version(&v1);
    let status = cp.wait_synced(&SHOP_NODES, Some(&v2));
    assert_status_text(&cp, &status, &SHOP_NODES);
    for s in &sc {
        assert_eq!(s.reloads("applied"), 2.0, "{}", s.node());
        assert_eq!(s.reloads("rejected"), 0.0, "{}", s.node());
    }
    assert_eq!(
        cp.metric("remora_cp_config_reloads_total", &[("result", "accepted")]),
        2.0
    );
}

#[tokio::test]
async fn an_invalid_edit_is_rejected_and_the_last_good_version_keeps_serving() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let cp = ControlPlaneProcess::start(dir.path());
    let sc = shop.sidecars(&cp.url());
    let before = cp.wait_synced(&SHOP_NODES, None);
    let v1 = before["version"].as_str().unwrap().to_owned();

    // An unknown field in api.yaml.
    let bad_api = service_yaml(
        "api",
        shop.api.addr(),
        shop.inbound[1],
        &["db"],
        2,
        "    colour: blue\n",
    );
    dir.write("api.yaml", &bad_api);
    let status = cp.wait_status("the edit rejected", CONVERGE_TIMEOUT, |s| {
        s["rejected"].as_array().is_some_and(|r| !r.is_empty())
    });
    let at = position(&dir.file("api.yaml"), &bad_api, "colour");
    let rejected: Vec<&str> = status["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rejected
            .iter()
            .any(|l| l.starts_with(&format!("{at}: services[0].colour: unknown field"))),
        "want {at}: services[0].colour ... in {rejected:#?}"
    );
    assert_eq!(status["version"], before["version"]);
    assert_eq!(status["generation"], before["generation"]);
    let m = cp.metrics();
    assert_eq!(
        m.get("remora_cp_config_reloads_total", &[("result", "rejected")]),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_cp_config_validation_failures_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.get("remora_cp_config_last_reload_success", &[]),
        Some(0.0)
    );
    let (code, text) = cp.status_text(&[]);
    assert_eq!(code, 0);
    assert!(text.contains("the newest edit was REJECTED"), "{text}");
    assert!(
        text.contains(&format!("  {at}: services[0].colour")),
        "{text}"
    );

    // A call to a service that does not exist, in db.yaml: refused too, both files named.
    let bad_db = service_yaml("db", shop.db.addr(), shop.inbound[2], &["cache"], 1, "");
    dir.write("db.yaml", &bad_db);
    let at_db = position(&dir.file("db.yaml"), &bad_db, "cache");
    let status = cp.wait_status("the second edit rejected", CONVERGE_TIMEOUT, |s| {
        s["rejected"].as_array().is_some_and(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .any(|l| l.starts_with(&at_db))
        })
    });
    assert!(
        status.to_string().contains("no service named 'cache'"),
        "{status:#}"
    );
    assert_eq!(
        cp.metric("remora_cp_config_reloads_total", &[("result", "rejected")]),
        2.0
    );

    // Nothing reached the sidecars: all SYNCED on the first version, serving it.
    let status = cp.wait_synced(&SHOP_NODES, Some(&v1));
    assert_eq!(status["generation"], before["generation"]);
    assert_eq!(call(&sc[0], "api").await, pair("api", "1"));
    assert_eq!(call(&sc[1], "db").await, pair("db", "1"));
    for s in &sc {
        assert_eq!(s.reloads("applied"), 1.0, "{}", s.node());
        assert!(s.is_ready(), "{}", s.node());
    }

    // Fixed: accepted, and the change the bad edit meant to make arrives.
    dir.write("api.yaml", &shop.api_yaml(2));
    dir.write("db.yaml", &shop.db_yaml(1, false));
    let v2 = cp.wait_new_version(&v1);
    let status = cp.wait_synced(&SHOP_NODES, Some(&v2));
    assert_eq!(status["rejected"], serde_json::json!([]));
    assert!(status["generation"].as_u64() > before["generation"].as_u64());
    assert_status_text(&cp, &status, &SHOP_NODES);
    assert_eq!(call(&sc[0], "api").await, pair("api", "2"));
    let m = cp.metrics();
    assert_eq!(
        m.get("remora_cp_config_reloads_total", &[("result", "accepted")]),
        Some(2.0)
    );
    assert_eq!(
        m.get("remora_cp_config_last_reload_success", &[]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_version_a_sidecar_cannot_bind_is_nacked_with_the_reason() {
    let app = Upstream::start_named("solo", Behaviour::Echo);
    let peer_app = Upstream::start_named("peer", Behaviour::Echo);
    // Someone else has the port the mesh gives solo's inbound listener.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let dir = MeshDir::new();
    let solo = |inbound: SocketAddr| service_yaml("solo", app.addr(), inbound, &[], 1, "");
    dir.write("solo.yaml", &solo(taken));
    let peer_in = free_addr();
    dir.write(
        "peer.yaml",
        &service_yaml("peer", peer_app.addr(), peer_in, &[], 1, ""),
    );
    let cp = ControlPlaneProcess::start(dir.path());
    let v1 = cp.version();
    let any_outbound = ["--outbound", "127.0.0.1:0"];
    let peer = Sidecar::start(
        &cp.url(),
        "peer-1",
        "peer",
        &["--namespace", "shop", any_outbound[0], any_outbound[1]],
    );
    // No --inbound: it binds where the mesh says.
    let mut sidecar = Sidecar::spawn(
        &cp.url(),
        "solo-1",
        "solo",
        &["--namespace", "shop", any_outbound[0], any_outbound[1]],
    );

    let status = cp.wait_status("solo-1 NACKED", CONVERGE_TIMEOUT, |s| {
        sidecars(s)
            .iter()
            .any(|r| r["node"] == "solo-1" && r["state"] == "NACKED")
    });
    let row = sidecar_row(&status, "solo-1");
    let reason = row["reason"].as_str().unwrap_or_else(|| panic!("{row}"));
    assert!(
        reason.contains("cannot bind") && reason.contains(&taken.to_string()),
        "{reason}"
    );
    assert!(reason.to_lowercase().contains("in use"), "{reason}");
    assert_eq!(row["version"], "", "it runs no version: {row}");
    assert_eq!(row["connected"], true);
    assert_eq!(sidecar_row(&status, "peer-1")["state"], "SYNCED");
    assert_eq!(sidecar.admin_get("/ready").status, 503);
    assert_eq!(sidecar.reloads("rejected"), 1.0);
    assert_eq!(sidecar.reloads("applied"), 0.0);
    assert!(cp.metric("remora_cp_nacks_total", &[]) >= 1.0);
    let (code, text) = cp.status_text(&[]);
    assert_eq!(code, 0);
    let line = text
        .lines()
        .find(|l| l.starts_with("solo-1"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("NACKED"), "{text}");
    assert!(line.contains("  reason: cannot bind"), "{text}");
    // Nothing changes while the version stays the same: still refused, still not ready.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sidecar.admin_get("/ready").status, 503);
    assert_eq!(sidecar_row(&cp.status(), "solo-1")["state"], "NACKED");

    // The mesh moves solo to a free port: applied, SYNCED, ready, serving.
    let free = free_addr();
    dir.write("solo.yaml", &solo(free));
    let v2 = cp.wait_new_version(&v1);
    let status = cp.wait_synced(&["peer-1", "solo-1"], Some(&v2));
    assert!(sidecar_row(&status, "solo-1").get("reason").is_none());
    sidecar.proxy_mut().wait_ready(CONVERGE_TIMEOUT);
    assert_eq!(sidecar.listener("inbound"), free);
    let reply = get_host(free, "solo", "/in").await.unwrap();
    assert_eq!(reply.echo().upstream(), "solo");
    assert_eq!(sidecar.reloads("applied"), 1.0);
    let (_, text) = cp.status_text(&[]);
    assert!(!text.contains("reason:"), "{text}");
    // peer's config did not change: acknowledged without a reload.
    assert_eq!(peer.reloads("applied"), 1.0);
    drop(squatter);
}

/// A control plane whose directory holds no valid mesh yet serves nothing: not ready, no
/// version, the problems in `/status`; sidecars wait, not ready. A valid file makes both ready.
#[tokio::test]
async fn nothing_is_served_until_the_directory_holds_a_valid_mesh() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    dir.write("web.yaml", &shop.web_yaml());
    let cp = ControlPlaneProcess::start(dir.path());
    assert_eq!(cp.admin_get("/ready").status, 503);
    let status = cp.status();
    assert_eq!(status["version"], Value::Null);
    assert_eq!(status["generation"], Value::Null);
    let text = status["rejected"].to_string();
    assert!(text.contains("no service named 'api'"), "{status:#}");
    assert_eq!(cp.metric("remora_cp_config_last_reload_success", &[]), 0.0);
    let (code, out) = cp.status_text(&[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("no valid mesh config yet\n"), "{out}");

    let mut web = Sidecar::spawn(
        &cp.url(),
        "web-1",
        "web",
        &["--namespace", "shop", "--outbound", "127.0.0.1:0"],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(web.admin_get("/ready").status, 503);
    assert_eq!(web.try_listener("outbound"), None);

    dir.write("api.yaml", &shop.api_yaml(1));
    dir.write("db.yaml", &shop.db_yaml(1, false));
    web.proxy_mut().wait_ready(CONVERGE_TIMEOUT);
    assert_eq!(cp.admin_get("/ready").status, 200);
    let version = cp.version();
    cp.wait_synced(&["web-1"], Some(&version));
    let api = Sidecar::start(
        &cp.url(),
        "api-1",
        "api",
        &["--namespace", "shop", "--outbound", "127.0.0.1:0"],
    );
    assert_eq!(api.listener("inbound"), shop.inbound[1]);
    assert_eq!(call(&web, "api").await, pair("api", "1"));
}
