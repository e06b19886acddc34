//! 100 MiB bodies through the proxy in both directions, with the proxy's memory staying flat.
//!
//! Bodies are generated and checked chunk by chunk ([`remora_tests::body`]), so neither the test
//! nor the upstream holds them. Each transfer starts with the receiving side not reading for a
//! moment while the sender writes at full speed: a proxy that buffered instead of applying
//! backpressure would grow by whatever arrived meanwhile.

use std::time::Duration;

use remora_tests::client::{self, get_request, pattern, request};
use remora_tests::upstream::pattern_response;
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, simple_config};

const SIZE: u64 = 100 * 1024 * 1024;

/// Most the proxy's resident memory may grow while 100 MiB go through it.
const MAX_GROWTH_KIB: u64 = 20 * 1024;

/// How long the receiving side holds off reading at the start.
const STALL: Duration = Duration::from_millis(300);

fn assert_flat(what: &str, baseline: u64, peak: u64) {
    let growth = peak.saturating_sub(baseline);
    eprintln!("{what}: proxy RSS {baseline} KiB before, peak {peak} KiB (+{growth} KiB)");
    assert!(
        growth < MAX_GROWTH_KIB,
        "{what}: proxy RSS grew by {growth} KiB (from {baseline} KiB to {peak} KiB)"
    );
}

async fn upload(downstream: Proto, cluster_protocol: &str) {
    // The upstream waits before it starts reading the body.
    let upstream = Upstream::start(Behaviour::Echo.delayed(STALL));
    let proxy = ProxyProcess::start(&simple_config(cluster_protocol, &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), downstream).await;
    // Warm up: connections, pools and buffers exist before the baseline.
    client
        .fetch(request("POST", "/warmup").body(pattern(1 << 20)).unwrap())
        .await
        .echo();

    let baseline = proxy.rss_kib();
    let sampler = proxy.rss_sampler();
    let reply = client
        .fetch(request("POST", "/upload").body(pattern(SIZE)).unwrap())
        .await;
    let peak = sampler.stop();

    let echo = reply.echo();
    assert_eq!(echo.body_bytes(), SIZE);
    assert!(echo.body_is_pattern(), "the body arrived corrupted");
    assert_flat("upload", baseline, peak);
}

async fn download(downstream: Proto, cluster_protocol: &str) {
    // GET /bytes/N answers with N bytes.
    let upstream = Upstream::start(Behaviour::custom(|req, _| async move {
        let len = req.uri().path().rsplit('/').next().unwrap_or_default();
        Ok(pattern_response(len.parse().unwrap_or(0)))
    }));
    let proxy = ProxyProcess::start(&simple_config(cluster_protocol, &[upstream.addr()]));
    let mut client = Client::connect(proxy.listener("main"), downstream).await;
    let warmup = client.send(get_request("/bytes/1048576")).await.unwrap();
    assert_eq!(
        client::drain(warmup.into_body()).await.unwrap().len(),
        1 << 20
    );

    let baseline = proxy.rss_kib();
    let sampler = proxy.rss_sampler();
    let resp = client
        .send(get_request(&format!("/bytes/{SIZE}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The client holds off reading while the upstream writes as fast as it can.
    tokio::time::sleep(STALL).await;
    let check = client::drain(resp.into_body()).await.unwrap();
    let peak = sampler.stop();

    assert_eq!(check.len(), SIZE);
    assert!(check.ok(), "corrupted at byte {:?}", check.first_mismatch());
    assert_flat("download", baseline, peak);
}

#[tokio::test]
async fn a_100_mib_request_body_streams_through_http1_in_flat_memory() {
    upload(Proto::Http1, "http1").await;
}

#[tokio::test]
async fn a_100_mib_response_body_streams_through_http1_in_flat_memory() {
    download(Proto::Http1, "http1").await;
}

#[tokio::test]
async fn a_100_mib_request_body_streams_through_h2c_in_flat_memory() {
    upload(Proto::H2c, "http2").await;
}

#[tokio::test]
async fn a_100_mib_response_body_streams_through_h2c_in_flat_memory() {
    download(Proto::H2c, "http2").await;
}
