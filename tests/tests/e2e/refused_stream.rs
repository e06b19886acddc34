//! HTTP/2 `REFUSED_STREAM`: the upstream promises it did not process the request (RFC 9113
//! section 8.7), so the default retry policy sends it again, even a POST with a body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use remora_tests::client::{full, request};
use remora_tests::{Client, Proto, ProxyProcess};
use tokio::net::TcpListener;

/// An h2c server that refuses the first `refuse` streams and answers the others with 200 and
/// the request body they carried. Counts the streams it saw.
struct Refuser {
    addr: SocketAddr,
    streams: Arc<AtomicUsize>,
}

impl Refuser {
    async fn start(refuse: usize) -> Refuser {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let streams = Arc::new(AtomicUsize::new(0));
        let seen = streams.clone();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        if n < refuse {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        tokio::spawn(async move {
                            let mut body = req.into_body();
                            let mut got = Vec::new();
                            while let Some(Ok(chunk)) = body.data().await {
                                let _ = body.flow_control().release_capacity(chunk.len());
                                got.extend_from_slice(&chunk);
                            }
                            let resp = http::Response::new(());
                            let mut send = respond.send_response(resp, false).unwrap();
                            let _ = send.send_data(Bytes::from(got), true);
                        });
                    }
                });
            }
        });
        Refuser { addr, streams }
    }

    fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }
}

fn proxy(upstream: SocketAddr) -> ProxyProcess {
    ProxyProcess::start(&remora_tests::simple_config("http2", &[upstream]))
}

#[tokio::test]
async fn a_refused_post_is_sent_again_with_its_body() {
    let upstream = Refuser::start(1).await;
    let proxy = proxy(upstream.addr);
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    let req = request("POST", "/orders").body(full("one order")).unwrap();
    let reply = client.fetch(req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "one order");
    assert_eq!(reply.header("x-remora-attempts"), Some("2"));
    assert_eq!(upstream.streams(), 2);
    proxy.wait_metric("remora_upstream_retries_total", &[("cluster", "app")], 1.0);
}

#[tokio::test]
async fn refusals_past_max_attempts_are_a_502() {
    let upstream = Refuser::start(usize::MAX).await;
    let proxy = proxy(upstream.addr);
    let reply = remora_tests::client::get(proxy.listener("main"), Proto::Http1, "/").await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.remora_error(), Some("upstream-reset"));
    // The default policy: two attempts in all.
    assert_eq!(reply.header("x-remora-attempts"), Some("2"));
    assert_eq!(upstream.streams(), 2);
}
