//! Push latency: from an accepted edit to the last sidecar's report.

use super::*;

/// `n` sidecars of `front`, which calls `back`; an edit of back's route changes every one's
/// config. Returns the push latency `/status` reports for it, in milliseconds.
async fn push_latency(n: usize) -> f64 {
    let front_app = Upstream::start_named("front", Behaviour::Echo);
    let back_app = Upstream::start_named("back", Behaviour::Echo);
    let back_in = free_addr();
    // back has no sidecar here: its callers reach its app directly.
    let back = |rev| {
        service_yaml("back", back_app.addr(), back_in, &[], rev, "").replace(
            &format!("address: \"{back_in}\""),
            &format!("address: \"{}\"", back_app.addr()),
        )
    };
    let dir = MeshDir::new();
    dir.write(
        "front.yaml",
        &service_yaml("front", front_app.addr(), free_addr(), &["back"], 1, ""),
    );
    dir.write("back.yaml", &back(1));
    let cp = ControlPlaneProcess::start(dir.path());
    let started = Instant::now();
    let sc = Sidecar::start_many(&cp.url(), "front", "front", n);
    eprintln!("{n} sidecars ready after {:?}", started.elapsed());
    let nodes: Vec<String> = sc.iter().map(|s| s.node().to_owned()).collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let v1 = cp.wait_synced(&nodes, None)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(&sc[0], "back").await, pair("back", "1"));
    let hist = |m: &Metrics| {
        (
            m.get("remora_cp_push_latency_seconds_count", &[])
                .unwrap_or(0.0),
            m.get("remora_cp_push_latency_seconds_sum", &[])
                .unwrap_or(0.0),
        )
    };
    let (count0, sum0) = hist(&cp.metrics());

    dir.write("back.yaml", &back(2));
    let v2 = cp.wait_new_version(&v1);
    let status = cp.wait_status("the push complete", CONVERGE_TIMEOUT, |s| {
        s["push"]["version"] == v2.as_str() && s["push"]["complete_after_ms"].is_number()
    });
    let ms = status["push"]["complete_after_ms"].as_f64().unwrap();
    eprintln!("push latency for {n} sidecars: {ms:.1} ms");
    assert_eq!(status["push"]["sidecars"], n, "{:#}", status["push"]);
    assert_eq!(status["push"]["generation"], status["generation"]);
    cp.wait_synced(&nodes, Some(&v2));
    let (count1, sum1) = hist(&cp.metrics());
    assert_eq!(count1, count0 + 1.0, "one more push observed");
    assert!(
        ((sum1 - sum0) * 1000.0 - ms).abs() < 1.0,
        "the histogram saw {} ms, /status says {ms}",
        (sum1 - sum0) * 1000.0
    );
    for s in &sc {
        assert_eq!(s.reloads("applied"), 2.0, "{}", s.node());
    }
    assert_eq!(call(&sc[n - 1], "back").await, pair("back", "2"));
    ms
}

#[tokio::test]
async fn push_latency_with_three_sidecars() {
    let ms = push_latency(3).await;
    assert!(ms < 1000.0, "push to 3 sidecars took {ms} ms");
}

#[tokio::test]
async fn push_latency_with_fifty_sidecars() {
    let ms = push_latency(50).await;
    assert!(ms < 5000.0, "push to 50 sidecars took {ms} ms");
}

/// The push of a version completes once every sidecar that is still there has reported it: a
/// sidecar that died just before the edit does not hold it up.
#[tokio::test]
async fn a_push_completes_when_a_sidecar_died_just_before_it() {
    let shop = Shop::new();
    let dir = MeshDir::new();
    shop.write(&dir);
    let cp = ControlPlaneProcess::start(dir.path());
    let mut sc = shop.sidecars(&cp.url());
    let v1 = cp.wait_synced(&SHOP_NODES, None)["version"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(sc.remove(2));
    dir.write("api.yaml", &shop.api_yaml(2));
    let v2 = cp.wait_new_version(&v1);
    cp.wait_status("web-1 and api-1 SYNCED", CONVERGE_TIMEOUT, |s| {
        ["web-1", "api-1"].iter().all(|n| {
            sidecar_row(s, n)["state"] == "SYNCED" && sidecar_row(s, n)["version"] == v2.as_str()
        })
    });
    // The grace is 2 s; give it twice that.
    let status = cp.wait_status("the push complete", Duration::from_secs(4), |s| {
        s["push"]["version"] == v2.as_str() && s["push"]["complete_after_ms"].is_number()
    });
    assert_eq!(status["push"]["sidecars"], 2, "{:#}", status["push"]);
    let ms = status["push"]["complete_after_ms"].as_f64().unwrap();
    assert!(ms < 4000.0, "push latency {ms} ms");
    assert_eq!(
        cp.metric("remora_cp_push_latency_seconds_count", &[]),
        2.0,
        "the first version's push and this one"
    );
}
