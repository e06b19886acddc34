//! [`Traffic`]: request loops with a chosen `Host`, for tests that break things under load.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::{self, Client, Proto, Reply};

/// What a [`Traffic`] did.
#[derive(Debug, Clone, Default)]
pub struct TrafficReport {
    pub ok: u64,
    pub failed: u64,
    /// The first failures, as text.
    pub errors: Vec<String>,
}

/// GET loops on keep-alive HTTP/1.1 and h2c connections with a fixed `Host`, each response
/// required to be a 200 echo from upstream `expect`, until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `h1` HTTP/1.1 connections and one h2c connection with `h2` streams, each looping
    /// `GET /traffic` with `Host: host` to `addr`, pausing `pause` between requests.
    pub async fn start(
        addr: SocketAddr,
        host: &str,
        expect: &str,
        (h1, h2): (usize, usize),
        pause: Duration,
    ) -> Traffic {
        let mut t = Traffic {
            stop: Arc::default(),
            ok: Arc::default(),
            failed: Arc::default(),
            errors: Arc::default(),
            tasks: Vec::new(),
        };
        let mut clients = Vec::new();
        for _ in 0..h1 {
            clients.push(Client::connect(addr, Proto::Http1).await);
        }
        if h2 > 0 {
            let c = Client::connect(addr, Proto::H2c).await;
            for _ in 0..h2 {
                clients.push(c.try_clone().expect("an h2c client"));
            }
        }
        for mut c in clients {
            let (stop, ok, failed, errors) = (
                t.stop.clone(),
                t.ok.clone(),
                t.failed.clone(),
                t.errors.clone(),
            );
            let (host, expect) = (host.to_owned(), expect.to_owned());
            t.tasks.push(client::background().spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    let req = client::request("GET", "/traffic")
                        .header(http::header::HOST, &host)
                        .body(client::empty())
                        .expect("valid request");
                    let outcome = match c.send(req).await {
                        Ok(resp) => match Reply::read(resp).await {
                            Ok(r) if r.status == 200 && r.header("x-upstream") == Some(&expect) => {
                                Ok(())
                            }
                            Ok(r) => Err(format!(
                                "{} from {:?}: {}",
                                r.status,
                                r.header("x-upstream"),
                                r.text()
                            )),
                            Err(e) => Err(format!("reading the body: {e}")),
                        },
                        Err(e) => Err(format!("send: {e}")),
                    };
                    match outcome {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            let mut errors = errors.lock().unwrap();
                            if errors.len() < 20 {
                                errors.push(format!("{:?}: {e}", c.proto()));
                            }
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        t
    }

    pub fn report(&self) -> TrafficReport {
        TrafficReport {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            errors: self.errors.lock().unwrap().clone(),
        }
    }

    /// Stops the loops after the request each is in, and reports.
    pub async fn stop(mut self) -> TrafficReport {
        self.stop.store(true, Ordering::Release);
        for t in std::mem::take(&mut self.tasks) {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("a traffic loop is stuck")
                .expect("a traffic loop panicked");
        }
        self.report()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }
}
