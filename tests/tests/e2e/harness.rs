//! The harness itself: it finds the program Cargo built and starts it the way the tests assume.

use std::path::Path;

use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, proxy_bin, simple_config};

#[test]
fn the_harness_runs_the_binary_cargo_built_for_these_tests() {
    let expected = Path::new(env!("CARGO_BIN_EXE_e2e-remora-proxy"));
    if std::env::var_os("REMORA_PROXY_BIN").is_none() {
        assert_eq!(
            proxy_bin().canonicalize().unwrap(),
            expected.canonicalize().unwrap()
        );
    }
}

#[tokio::test]
async fn a_proxy_on_port_zero_reports_its_addresses_and_becomes_ready() {
    let upstream = Upstream::start(Behaviour::Echo);
    let proxy = ProxyProcess::start(&simple_config("http1", &[upstream.addr()]));

    let main = proxy.listener("main");
    assert!(main.ip().is_loopback() && main.port() != 0, "{main}");
    assert_ne!(proxy.admin().port(), 0);
    assert_ne!(main, proxy.admin());
    assert_eq!(proxy.admin_get("/ready").status, 200);
    assert!(proxy.rss_kib() > 0);

    let reply = Client::connect(main, Proto::Http1).await.get("/").await;
    assert_eq!(reply.echo().upstream(), upstream.name());
}
