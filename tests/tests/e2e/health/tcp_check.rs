//! TCP health checks with `send` and `expect`, on a TCP listener's cluster: a Redis-like
//! server that answers `+PONG` passes; one that answers `-LOADING`, a closed port and a server
//! that never answers fail, each for its own reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use remora_tests::{ProxyProcess, RawServer, free_addr, raw};

use super::wait_state;
use crate::balancing::endpoint_labels;

const PONG: u8 = 0;
const LOADING: u8 = 1;
const SILENT: u8 = 2;

/// A server that answers `PING\r\n` by its mode, and `WHO\r\n` (a client through the proxy)
/// with its name, counted in `served`.
struct Redisish {
    server: RawServer,
    mode: Arc<AtomicU8>,
    served: Arc<AtomicUsize>,
}

impl Redisish {
    fn start(name: &str, mode: u8) -> Redisish {
        let mode = Arc::new(AtomicU8::new(mode));
        let served = Arc::new(AtomicUsize::new(0));
        let server = {
            let (name, mode, served) = (name.to_owned(), mode.clone(), served.clone());
            RawServer::start(move |stream| {
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                if reader.read_until(b'\n', &mut line).is_err() {
                    return;
                }
                let mut stream = reader.into_inner();
                match (&line[..], mode.load(Ordering::SeqCst)) {
                    (b"PING\r\n", PONG) => {
                        let _ = stream.write_all(b"+PONG\r\n");
                    }
                    (b"PING\r\n", LOADING) => {
                        let _ = stream.write_all(b"-LOADING still starting\r\n");
                    }
                    // Say nothing until the checker gives up and closes.
                    (b"PING\r\n", _) => {
                        let _ = stream.read_to_end(&mut Vec::new());
                    }
                    (b"WHO\r\n", _) => {
                        served.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(name.as_bytes());
                    }
                    _ => {}
                }
            })
        };
        Redisish {
            server,
            mode,
            served,
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

/// Opens `n` connections through the proxy, one after another; who answered each.
fn who(proxy: &ProxyProcess, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut conn = raw::connect(proxy.listener("cache"));
            conn.write_all(b"WHO\r\n").unwrap();
            let mut name = String::new();
            conn.read_to_string(&mut name).unwrap();
            name
        })
        .collect()
}

#[tokio::test]
async fn tcp_checks_send_and_expect_and_each_failure_has_its_reason() {
    let good = Redisish::start("good", PONG);
    let loading = Redisish::start("loading", LOADING);
    let silent = Redisish::start("silent", SILENT);
    let closed = free_addr();
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: cache
    address: 127.0.0.1:0
    protocol: tcp
    cluster: redis
clusters:
  - name: redis
    # Three of four unhealthy is below any threshold but 0%: no panic mode here.
    load_balancer: {{ panic_threshold: 0% }}
    health_check:
      tcp: {{ send: "PING\r\n", expect: "+PONG" }}
      interval: 200ms
      jitter: 0%
      timeout: 100ms
      unhealthy_threshold: 2
      healthy_threshold: 2
    endpoints:
      - address: "{}"
      - address: "{}"
      - address: "{}"
      - address: "{closed}"
"#,
        good.server.addr(),
        loading.server.addr(),
        silent.server.addr(),
    ));

    let failing = [
        (loading.server.addr(), "mismatch"),
        (silent.server.addr(), "timeout"),
        (closed, "connect"),
    ];
    for (addr, _) in failing {
        wait_state(&proxy, "redis", addr, "unhealthy").await;
    }
    let page = proxy.clusters();
    assert_eq!(
        page.endpoint("redis", good.server.addr()).state(),
        "healthy"
    );
    let metrics = proxy.scrape();
    for (addr, reason) in failing {
        let ep = page.endpoint("redis", addr);
        assert_eq!(ep.last_failure_reason(), Some(reason), "{:#}", ep.0);
        let addr = addr.to_string();
        let mut labels = endpoint_labels("redis", &addr).to_vec();
        labels.push(("reason", reason));
        let failures = metrics.get("remora_health_check_failures_total", &labels);
        assert!(failures.is_some_and(|n| n >= 2.0), "{reason}: {failures:?}");
    }
    // As much of the reply as the expected bytes' length.
    let detail = page
        .endpoint("redis", loading.server.addr())
        .last_failure_detail();
    assert_eq!(detail, Some(r#"reply starts "-LOAD""#));

    assert_eq!(who(&proxy, 10), vec!["good"; 10]);
    assert_eq!(
        (good.served(), loading.served(), silent.served()),
        (10, 0, 0)
    );

    // Ready now: two passes bring it in, and connections alternate between the two.
    loading.mode.store(PONG, Ordering::SeqCst);
    wait_state(&proxy, "redis", loading.server.addr(), "healthy").await;
    let names = who(&proxy, 20);
    assert_eq!(
        names.iter().filter(|n| *n == "good").count(),
        10,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "loading").count(),
        10,
        "{names:?}"
    );
    assert_eq!(silent.served(), 0);
}
