//! Scripted upstream servers: HTTP/1.1 and h2c (prior knowledge) on one `127.0.0.1:0` port,
//! each with its own thread and single-threaded tokio runtime, so they run whatever the test
//! itself is doing (blocking or async).
//!
//! What a server does with each request is a [`Behaviour`]: echo the request back as JSON, answer
//! with a status, wait first, stream a large body, close the connection, or any async closure
//! ([`Behaviour::custom`]). Combinators script failures: fail the first requests (or each
//! request's first attempts) and then recover, die after reading a body, or park at a [`Gate`]
//! until the test opens it. Every server counts connections and requests and records each
//! request head, so tests can assert on what actually arrived.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};

use crate::body::{PatternBody, PatternCheck};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type every behaviour produces. Its error is a concrete type (wrap others
/// with `io::Error::other`): a boxed trait object here trips a rustc limitation on the `Send`
/// check of hyper's connection future.
pub type UpBody = BoxBody<Bytes, io::Error>;

/// What a [`Behaviour::custom`] closure returns. An `Err` makes the server drop the exchange
/// without a response (HTTP/1.1: the connection closes; HTTP/2: the stream is reset).
pub type HandlerResult = Result<Response<UpBody>, io::Error>;

pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A request handler: the request, and the upstream it arrived at (for its name).
pub type Handler = Arc<dyn Fn(Request<Incoming>, Arc<UpstreamInfo>) -> HandlerFuture + Send + Sync>;

/// What an upstream does with each request.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with an [`Echo`] JSON body describing the request as it arrived. The request body is
    /// read to its end and counted (and checked against the test pattern), never buffered.
    Echo,
    /// This status, with a short text body; the request body is not read.
    Status(u16),
    /// Wait, then behave as the inner behaviour. The request body is not read while waiting,
    /// so this also makes a slow reader.
    Delay(Duration, Box<Behaviour>),
    /// 200 with this many bytes of the test pattern ([`crate::body`]), streamed in chunks.
    Stream(u64),
    /// Answer with this status, then close the connection (`Connection: close` on HTTP/1.1).
    RespondAndClose(u16),
    /// Read the request head, then drop the exchange without answering.
    Abort,
    /// Anything else: see [`Behaviour::custom`].
    Custom(Handler),
}

impl Behaviour {
    /// A behaviour from an async closure, e.g.
    /// `Behaviour::custom(|req, _| async move { Ok(upstream::text(418, "teapot")) })`.
    pub fn custom<F, Fut>(f: F) -> Behaviour
    where
        F: Fn(Request<Incoming>, Arc<UpstreamInfo>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Behaviour::Custom(Arc::new(move |req, info| Box::pin(f(req, info))))
    }

    /// 200 with the upstream's name as the whole body: the cheapest answer that still says who
    /// answered, for tests that send thousands of requests and only count where they went.
    pub fn name() -> Behaviour {
        Behaviour::custom(|_, info| async move { Ok(text(200, &info.name)) })
    }

    /// `Delay(after, self)`.
    pub fn delayed(self, after: Duration) -> Behaviour {
        Behaviour::Delay(after, Box::new(self))
    }

    /// Reads the request body to its end, then answers `status` with these extra headers
    /// (`Retry-After`, say) and a text body saying how many body bytes arrived
    /// (`status 503 from NAME after 1024 body bytes`). Unlike [`Behaviour::Status`], the whole
    /// request reached the upstream before it failed, as with a real application.
    pub fn reply(status: u16, headers: &[(&str, &str)]) -> Behaviour {
        let headers: Vec<(http::HeaderName, http::HeaderValue)> = headers
            .iter()
            .map(|(n, v)| (n.parse().expect("header name"), v.parse().expect("value")))
            .collect();
        Behaviour::custom(move |req, info| {
            let headers = headers.clone();
            async move {
                let check = drain(req.into_body()).await.map_err(io::Error::other)?;
                let body = format!(
                    "status {status} from {} after {} body bytes\n",
                    info.name,
                    check.len()
                );
                let mut resp = text(status, &body);
                resp.headers_mut().extend(headers);
                Ok(resp)
            }
        })
    }

    /// Reads the request body to its end, then drops the exchange without answering: an
    /// upstream that died after the request reached it (HTTP/1.1: the connection closes;
    /// HTTP/2: the stream is reset).
    pub fn abort_after_body() -> Behaviour {
        Behaviour::custom(|req, _| async move {
            drain(req.into_body()).await.map_err(io::Error::other)?;
            Err(io::Error::other(
                "the upstream dies after reading the request",
            ))
        })
    }

    /// The first `n` requests this upstream receives get `first`, every later one `then`:
    /// an upstream that fails a few times and recovers.
    pub fn first(n: usize, first: Behaviour, then: Behaviour) -> Behaviour {
        let seen = Arc::new(AtomicUsize::new(0));
        Behaviour::custom(move |req, info| {
            let chosen = match seen.fetch_add(1, Ordering::Relaxed) < n {
                true => first.clone(),
                false => then.clone(),
            };
            respond(chosen, req, info)
        })
    }

    /// Each request's first `n` attempts get `first`, later attempts `then`. The attempts of
    /// one request are told apart from other requests by their `x-request-id`, which the
    /// proxy sets once and keeps on every retry (a client may set its own). For tests where
    /// retries of concurrent requests interleave.
    pub fn first_attempts(n: usize, first: Behaviour, then: Behaviour) -> Behaviour {
        let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        Behaviour::custom(move |req, info| {
            let id = req
                .headers()
                .get("x-request-id")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let attempt = {
                let mut seen = seen.lock().unwrap();
                let count = seen.entry(id).or_default();
                *count += 1;
                *count
            };
            let chosen = match attempt <= n {
                true => first.clone(),
                false => then.clone(),
            };
            respond(chosen, req, info)
        })
    }

    /// Waits until `gate` is open, then behaves as `self`. Requests park at the upstream for as
    /// long as the test wants (a slow upstream, without guessing how slow), and all go on at
    /// once when it calls [`Gate::open`].
    pub fn after(self, gate: &Gate) -> Behaviour {
        let gate = gate.clone();
        Behaviour::custom(move |req, info| {
            let (gate, inner) = (gate.clone(), self.clone());
            async move {
                gate.wait().await;
                respond(inner, req, info).await
            }
        })
    }
}

/// A barrier that upstream requests wait at ([`Behaviour::after`]) until the test opens it.
/// Clones share it. Works across runtimes: the upstream's and the test's.
#[derive(Clone, Debug)]
pub struct Gate(Arc<tokio::sync::watch::Sender<bool>>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate(Arc::new(tokio::sync::watch::Sender::new(false)))
    }

    /// Lets every waiting request (and every later one) through.
    pub fn open(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once the gate is open.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// The head of a request as the upstream received it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

/// What a running upstream knows about itself; handlers get it too.
#[derive(Debug)]
pub struct UpstreamInfo {
    /// Reported in every echo, so a test can tell which upstream answered.
    pub name: String,
    pub addr: SocketAddr,
    connections: AtomicUsize,
    requests: AtomicUsize,
    heads: Mutex<Vec<RequestHead>>,
}

/// A running scripted upstream. Stops on drop.
pub struct Upstream {
    info: Arc<UpstreamInfo>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts an upstream named after its address.
    pub fn start(behaviour: Behaviour) -> Upstream {
        Upstream::start_named("", behaviour)
    }

    /// Starts an upstream that reports `name` in its echoes (empty: its address).
    pub fn start_named(name: &str, behaviour: Behaviour) -> Upstream {
        Upstream::start_at(([127, 0, 0, 1], 0).into(), name, behaviour)
    }

    /// Starts an upstream at `addr` (port 0: a free one). On Linux all of 127/8 is loopback,
    /// so upstreams on 127.0.0.2:P, 127.0.0.3:P... stand for pods with IPs of their own serving
    /// on one port, as DNS A records describe them.
    pub fn start_at(addr: SocketAddr, name: &str, behaviour: Behaviour) -> Upstream {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind upstream at {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let info = Arc::new(UpstreamInfo {
            name: if name.is_empty() {
                addr.to_string()
            } else {
                name.to_owned()
            },
            addr,
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            heads: Mutex::new(Vec::new()),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = {
            let info = info.clone();
            std::thread::Builder::new()
                .name(format!("upstream-{}", info.name))
                .spawn(move || serve(listener, info, behaviour, stop_rx))
                .expect("spawn upstream thread")
        };
        Upstream {
            info,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.info.addr
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Requests received so far (counted when the head arrives).
    pub fn requests(&self) -> usize {
        self.info.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.info.connections.load(Ordering::Relaxed)
    }

    /// Heads of the requests received so far, in arrival order.
    pub fn heads(&self) -> Vec<RequestHead> {
        self.info.heads.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    info: Arc<UpstreamInfo>,
    behaviour: Behaviour,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("upstream runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).expect("upstream listener");
        loop {
            let stream = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            info.connections.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve_connection(stream, info.clone(), behaviour.clone()));
        }
    });
    // Drops every connection task without waiting for them.
    rt.shutdown_background();
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    info: Arc<UpstreamInfo>,
    behaviour: Behaviour,
) {
    let svc = service_fn(move |req: Request<Incoming>| {
        info.requests.fetch_add(1, Ordering::Relaxed);
        info.heads.lock().unwrap().push(RequestHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        respond(behaviour.clone(), req, info.clone())
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn respond(behaviour: Behaviour, req: Request<Incoming>, info: Arc<UpstreamInfo>) -> HandlerFuture {
    Box::pin(async move {
        match behaviour {
            Behaviour::Echo => echo(req, &info).await,
            Behaviour::Status(code) => {
                Ok(text(code, &format!("status {code} from {}\n", info.name)))
            }
            Behaviour::Delay(after, inner) => {
                tokio::time::sleep(after).await;
                respond(*inner, req, info).await
            }
            Behaviour::Stream(len) => Ok(pattern_response(len)),
            Behaviour::RespondAndClose(code) => {
                let mut resp = text(code, "closing\n");
                if req.version() != Version::HTTP_2 {
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, "close".parse().unwrap());
                }
                Ok(resp)
            }
            Behaviour::Abort => Err(io::Error::other(
                "the upstream aborts this exchange on purpose",
            )),
            Behaviour::Custom(handler) => handler(req, info).await,
        }
    })
}

/// A response with `status` and a `text/plain` body.
pub fn text(status: u16, body: &str) -> Response<UpBody> {
    let mut resp = Response::new(full(Bytes::from(body.to_owned())));
    *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().unwrap(),
    );
    resp
}

/// 200 with `len` bytes of the test pattern, generated as it is sent.
pub fn pattern_response(len: u64) -> Response<UpBody> {
    Response::new(PatternBody::new(len).map_err(|e| match e {}).boxed())
}

/// A complete body as an [`UpBody`].
pub fn full(bytes: impl Into<Bytes>) -> UpBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// Reads a request body to its end without keeping it: its length and whether it was the test
/// pattern.
pub async fn drain(mut body: Incoming) -> Result<PatternCheck, hyper::Error> {
    let mut check = PatternCheck::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            check.feed(data);
        }
    }
    Ok(check)
}

async fn echo(req: Request<Incoming>, info: &UpstreamInfo) -> HandlerResult {
    let (parts, body) = req.into_parts();
    let check = drain(body).await.map_err(io::Error::other)?;
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(value.into()),
            _ => {
                headers.insert(name.as_str().to_owned(), json!([value]));
            }
        }
    }
    let doc = json!({
        "upstream": info.name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": check.len(),
        "body_is_pattern": check.ok(),
    });
    let mut resp = Response::new(full(doc.to_string()));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    h.insert("x-upstream", info.name.parse().map_err(io::Error::other)?);
    Ok(resp)
}

/// The JSON an [`Behaviour::Echo`] upstream answers with, read back.
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    pub fn parse(body: &[u8]) -> Echo {
        Echo(serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "not an echo ({e}): {:?}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            )
        }))
    }

    fn str(&self, key: &str) -> &str {
        self.0[key].as_str().unwrap_or_default()
    }

    /// The name of the upstream that answered.
    pub fn upstream(&self) -> &str {
        self.str("upstream")
    }

    pub fn method(&self) -> &str {
        self.str("method")
    }

    /// The request target as received (origin-form on HTTP/1.1, absolute on HTTP/2).
    pub fn uri(&self) -> &str {
        self.str("uri")
    }

    pub fn path(&self) -> &str {
        self.str("path")
    }

    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }

    /// `HTTP/1.1` or `HTTP/2.0`: what the upstream connection spoke.
    pub fn version(&self) -> &str {
        self.str("version")
    }

    /// The host the request was for: the HTTP/2 `:authority`, else the `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.0["authority"].as_str().or_else(|| self.header("host"))
    }

    /// Every value of header `name` (lowercase), in order received.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.0["headers"][name]
            .as_array()
            .map(|vs| vs.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0["headers"][name].get(0).and_then(Value::as_str)
    }

    /// Every header name received.
    pub fn header_names(&self) -> Vec<&str> {
        self.0["headers"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    pub fn body_bytes(&self) -> u64 {
        self.0["body_bytes"].as_u64().unwrap_or_default()
    }

    /// Whether the body received was the test pattern ([`crate::body`]) from its first byte.
    pub fn body_is_pattern(&self) -> bool {
        self.0["body_is_pattern"].as_bool().unwrap_or_default()
    }
}
