//! Continuous traffic for tests that change a running proxy (reloads, drains): keep-alive
//! HTTP/1.1 connections and h2c connections with concurrent streams, each looping one kind of
//! [`Exchange`] on the client runtime ([`crate::client::background`]) and checking every
//! response, until [`Load::stop`]. Slow exchanges stream a body for seconds, so they are in
//! flight while the proxy changes under them.
//!
//! The upstream is [`upstream_behaviour`]: it answers every request with the length of the body
//! it received and whether that body was the test pattern, and `/slow/{len}/{chunk}/{ms}` with
//! a pattern body paced by a timer.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::PatternBody;
use crate::client::{self, Client, Proto, ReqBody};
use crate::upstream::{self, Behaviour};

/// One kind of request a load loop repeats, and what its response must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `GET /get`: 200, `0 true`.
    Get,
    /// `POST /post` with this many bytes of the test pattern, echoed back as a count.
    Post(u64),
    /// A response body of `len` pattern bytes the upstream sends `chunk` bytes at a time, one
    /// chunk every `every`.
    SlowDownload {
        len: u64,
        chunk: usize,
        every: Duration,
    },
    /// A request body sent the same way by the client.
    SlowUpload {
        len: u64,
        chunk: usize,
        every: Duration,
    },
}

impl Exchange {
    fn request(self) -> Request<ReqBody> {
        let (method, target, body) = match self {
            Exchange::Get => ("GET", "/get".to_owned(), client::empty()),
            Exchange::Post(len) => ("POST", "/post".to_owned(), client::pattern(len)),
            Exchange::SlowDownload { len, chunk, every } => (
                "GET",
                format!("/slow/{len}/{chunk}/{}", every.as_millis()),
                client::empty(),
            ),
            Exchange::SlowUpload { len, chunk, every } => (
                "POST",
                "/upload".to_owned(),
                client::boxed(Paced::new(PatternBody::new(len).with_chunk(chunk), every)),
            ),
        };
        client::request(method, &target).body(body).unwrap()
    }

    /// Bytes the upstream must report having received.
    fn sent(self) -> u64 {
        match self {
            Exchange::Post(len) | Exchange::SlowUpload { len, .. } => len,
            Exchange::Get | Exchange::SlowDownload { .. } => 0,
        }
    }

    /// Sends one exchange and checks its response; `Err` says what went wrong.
    async fn run(self, client: &mut Client) -> Result<(), String> {
        let resp = client
            .send(self.request())
            .await
            .map_err(|e| format!("send: {e}"))?;
        if resp.status() != 200 {
            let status = resp.status();
            let reply = client::Reply::read(resp).await.map_err(|e| e.to_string())?;
            return Err(format!("status {status}: {reply:?}"));
        }
        match self {
            Exchange::SlowDownload { len, .. } => {
                let check = client::drain(resp.into_body())
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?;
                if check.len() != len || !check.ok() {
                    return Err(format!(
                        "body of {} bytes, want {len}; first mismatch at {:?}",
                        check.len(),
                        check.first_mismatch()
                    ));
                }
            }
            _ => {
                let reply = client::Reply::read(resp)
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?;
                let want = format!("{} true\n", self.sent());
                if reply.text() != want {
                    return Err(format!("body {:?}, want {want:?}", reply.text()));
                }
            }
        }
        Ok(())
    }
}

/// The upstream for [`Load`]: `/slow/{len}/{chunk}/{ms}` streams a paced pattern body;
/// anything else reads the request body and answers `{length} {is_pattern}`.
pub fn upstream_behaviour() -> Behaviour {
    Behaviour::custom(|req, _| async move {
        let path = req.uri().path().to_owned();
        if let Some(spec) = path.strip_prefix("/slow/") {
            let nums: Vec<u64> = spec.split('/').filter_map(|n| n.parse().ok()).collect();
            let [len, chunk, ms] = nums[..] else {
                return Ok(upstream::text(400, "want /slow/{len}/{chunk}/{ms}\n"));
            };
            let body = Paced::new(
                PatternBody::new(len).with_chunk(chunk as usize),
                Duration::from_millis(ms),
            );
            return Ok(http::Response::new(body.map_err(|e| match e {}).boxed()));
        }
        let check = upstream::drain(req.into_body())
            .await
            .map_err(std::io::Error::other)?;
        Ok(upstream::text(
            200,
            &format!("{} {}\n", check.len(), check.ok()),
        ))
    })
}

/// A body whose frames are released one per `every` (the first at once).
pub struct Paced<B> {
    inner: B,
    every: Duration,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, every: Duration) -> Paced<B> {
        Paced {
            inner,
            every,
            wait: None,
        }
    }
}

impl<B: Body + Unpin> Body for Paced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        if let Some(wait) = &mut self.wait {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.wait = None;
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            self.wait = Some(Box::pin(tokio::time::sleep(self.every)));
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Outcomes of one kind of exchange on one protocol.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// What a [`Load`] did, per loop kind.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(what, completed, failed)` per kind of loop, e.g. `("h2c SlowUpload {..}", 12, 0)`.
    pub kinds: Vec<(String, u64, u64)>,
    /// The first failures, as text.
    pub errors: Vec<String>,
}

impl Report {
    pub fn completed(&self) -> u64 {
        self.kinds.iter().map(|k| k.1).sum()
    }

    pub fn failed(&self) -> u64 {
        self.kinds.iter().map(|k| k.2).sum()
    }

    /// Completed exchanges of the loops whose description contains `what`.
    pub fn completed_of(&self, what: &str) -> u64 {
        self.kinds
            .iter()
            .filter(|k| k.0.contains(what))
            .map(|k| k.1)
            .sum()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (what, ok, failed) in &self.kinds {
            writeln!(f, "  {what}: {ok} completed, {failed} failed")?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// How many failure messages a [`Report`] keeps.
const KEEP_ERRORS: usize = 20;

/// Request loops running against a proxy until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// Pause between two exchanges of one loop, so a 2-core machine is loaded, not saturated.
    pause: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tallies: Vec<(String, Arc<Tally>)>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Load {
    /// No loops yet; each pauses `pause` between exchanges.
    pub fn new(pause: Duration) -> Load {
        Load {
            stop: Arc::new(AtomicBool::new(false)),
            pause,
            tasks: Vec::new(),
            tallies: Vec::new(),
            errors: Arc::default(),
        }
    }

    /// `connections` HTTP/1.1 keep-alive connections, each looping `exchange`.
    pub async fn http1(&mut self, addr: SocketAddr, connections: usize, exchange: Exchange) {
        let tally = self.tally(format!("http1 {exchange:?}"));
        for _ in 0..connections {
            let client = Client::connect(addr, Proto::Http1).await;
            self.spawn(client, exchange, tally.clone());
        }
    }

    /// One h2c connection carrying `streams` concurrent loops of `exchange`.
    pub async fn h2c(&mut self, addr: SocketAddr, streams: usize, exchange: Exchange) {
        let client = Client::connect(addr, Proto::H2c).await;
        self.h2c_on(&client, streams, exchange);
    }

    /// `streams` more concurrent loops of `exchange` on an existing h2c connection.
    pub fn h2c_on(&mut self, client: &Client, streams: usize, exchange: Exchange) {
        let tally = self.tally(format!("h2c {exchange:?}"));
        for _ in 0..streams {
            let stream = client.try_clone().expect("an h2c client");
            self.spawn(stream, exchange, tally.clone());
        }
    }

    fn tally(&mut self, what: String) -> Arc<Tally> {
        let tally = Arc::new(Tally::default());
        self.tallies.push((what, tally.clone()));
        tally
    }

    fn spawn(&mut self, mut client: Client, exchange: Exchange, tally: Arc<Tally>) {
        let (stop, pause, errors) = (self.stop.clone(), self.pause, self.errors.clone());
        self.tasks.push(client::background().spawn(async move {
            while !stop.load(Ordering::Acquire) {
                match exchange.run(&mut client).await {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        let mut errors = errors.lock().unwrap();
                        if errors.len() < KEEP_ERRORS {
                            errors.push(format!("{:?} {exchange:?}: {e}", client.proto()));
                        }
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(pause).await;
            }
        }));
    }

    /// What the loops have done so far.
    pub fn report(&self) -> Report {
        Report {
            kinds: self
                .tallies
                .iter()
                .map(|(what, t)| {
                    (
                        what.clone(),
                        t.ok.load(Ordering::Relaxed),
                        t.failed.load(Ordering::Relaxed),
                    )
                })
                .collect(),
            errors: self.errors.lock().unwrap().clone(),
        }
    }

    /// Lets every loop finish the exchange it is in (slow ones included), closes the
    /// connections, and reports. Panics if a loop is not done within `timeout`.
    pub async fn stop(mut self, timeout: Duration) -> Report {
        self.stop.store(true, Ordering::Release);
        let tasks = std::mem::take(&mut self.tasks);
        tokio::time::timeout(timeout, async {
            for t in tasks {
                t.await.expect("load loop panicked");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("load loops still running {timeout:?} after stop"));
        self.report()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
    }
}
