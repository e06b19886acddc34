//! Downstream clients on hyper's connection API: one TCP connection per [`Client`], speaking
//! HTTP/1.1 or h2c with prior knowledge, as a real application next to the sidecar would.
//!
//! Use them from async tests (`#[tokio::test]`). Each connection is opened and driven on a
//! harness-wide background runtime ([`background`]), not on the test's own: so a test may block
//! its thread (waiting for a metric, a log line, the proxy to exit) and its connections still
//! make progress, notice a dropped body, and close when the client is dropped.
//!
//! Requests are built with [`request`] (or `http::Request::builder()`); [`Client::send`] fills in
//! what the protocol needs: a `Host` header on HTTP/1.1 when missing, and an absolute URI
//! (`:scheme`, `:authority`) on HTTP/2, taken from the `Host` header if one was set.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

use crate::body::{PatternBody, PatternCheck};
use crate::upstream::{BoxError, Echo};

/// A request body: anything boxed. Build one with [`empty`], [`full`], or [`pattern`].
pub type ReqBody = BoxBody<Bytes, BoxError>;

/// The protocol a client speaks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Http1, Proto::H2c];
}

pub fn empty() -> ReqBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// `len` bytes of the test pattern, generated as they are sent ([`PatternBody`]).
pub fn pattern(len: u64) -> ReqBody {
    PatternBody::new(len).map_err(|e| match e {}).boxed()
}

/// Any [`http_body::Body`] as a request body.
pub fn boxed<B>(body: B) -> ReqBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// `Request::builder()` with a method and target.
pub fn request(method: &str, target: &str) -> http::request::Builder {
    Request::builder().method(method).uri(target)
}

/// A `GET target` with an empty body.
pub fn get_request(target: &str) -> Request<ReqBody> {
    request("GET", target).body(empty()).expect("valid request")
}

/// The runtime that owns every client connection: two worker threads, started on first use and
/// kept for the life of the test process.
pub fn background() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("e2e-clients")
            .enable_all()
            .build()
            .expect("client runtime")
    })
}

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

/// One client connection.
pub struct Client {
    proto: Proto,
    peer: SocketAddr,
    local: SocketAddr,
    sender: Sender,
}

impl Client {
    /// Connects and completes the handshake. Panics if that fails: a test cannot go on.
    pub async fn connect(addr: SocketAddr, proto: Proto) -> Client {
        background()
            .spawn(Client::open(addr, proto, None))
            .await
            .expect("client connect task")
    }

    /// As [`Client::connect`], from a chosen local address (port 0): on Linux every address of
    /// 127.0.0.0/8 is local, so tests can play clients at different IPs.
    pub async fn connect_from(addr: SocketAddr, from: IpAddr, proto: Proto) -> Client {
        background()
            .spawn(Client::open(addr, proto, Some(from)))
            .await
            .expect("client connect task")
    }

    /// Runs on the background runtime, so the socket and the connection task belong to it.
    async fn open(addr: SocketAddr, proto: Proto, from: Option<IpAddr>) -> Client {
        let connected = match from {
            None => TcpStream::connect(addr).await,
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4(),
                    IpAddr::V6(_) => TcpSocket::new_v6(),
                }
                .expect("client socket");
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .unwrap_or_else(|e| panic!("bind the client to {ip}: {e}"));
                socket.connect(addr).await
            }
        };
        let stream = connected.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap();
        let io = TokioIo::new(stream);
        let sender = match proto {
            Proto::Http1 => {
                let (sender, conn) = http1::handshake(io).await.expect("HTTP/1.1 handshake");
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Proto::H2c => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .expect("h2c handshake");
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Client {
            proto,
            peer: addr,
            local,
            sender,
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// This connection's own address, as the proxy sees the client.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Another handle on the same connection, for concurrent requests. HTTP/2 only: an
    /// HTTP/1.1 connection carries one request at a time.
    pub fn try_clone(&self) -> Option<Client> {
        match &self.sender {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Client {
                proto: self.proto,
                peer: self.peer,
                local: self.local,
                sender: Sender::H2(s.clone()),
            }),
        }
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Sends a request and returns the response with its body still streaming.
    pub async fn send(
        &mut self,
        mut req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(sender) => {
                if !req.headers().contains_key(HOST) {
                    let host = self
                        .peer
                        .to_string()
                        .parse()
                        .expect("address is a valid host");
                    req.headers_mut().insert(HOST, host);
                }
                *req.version_mut() = Version::HTTP_11;
                sender.ready().await?;
                sender.send_request(req).await
            }
            Sender::H2(sender) => {
                if req.uri().authority().is_none() {
                    let authority = match req.headers_mut().remove(HOST) {
                        Some(h) => Authority::try_from(h.as_bytes()).expect("Host is an authority"),
                        None => Authority::try_from(self.peer.to_string()).unwrap(),
                    };
                    let mut parts = req.uri().clone().into_parts();
                    parts.scheme = Some(Scheme::HTTP);
                    parts.authority = Some(authority);
                    if parts.path_and_query.is_none() {
                        parts.path_and_query = Some("/".parse().unwrap());
                    }
                    *req.uri_mut() = Uri::from_parts(parts).expect("absolute URI");
                }
                *req.version_mut() = Version::HTTP_2;
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }

    /// Sends a request and reads the whole response. Panics on a transport error.
    pub async fn fetch(&mut self, req: Request<ReqBody>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("{what} via {:?}: {e}", self.proto));
        Reply::read(resp)
            .await
            .unwrap_or_else(|e| panic!("{what} via {:?}: reading the body: {e}", self.proto))
    }

    /// `GET target` and read the whole response.
    pub async fn get(&mut self, target: &str) -> Reply {
        self.fetch(get_request(target)).await
    }
}

/// Connects, sends one request, reads the whole response.
pub async fn fetch(addr: SocketAddr, proto: Proto, req: Request<ReqBody>) -> Reply {
    Client::connect(addr, proto).await.fetch(req).await
}

/// Connects, sends `GET target`, reads the whole response.
pub async fn get(addr: SocketAddr, proto: Proto, target: &str) -> Reply {
    Client::connect(addr, proto).await.get(target).await
}

/// Sends every request through `connections` h2c connections, keeping up to `streams` requests
/// in flight on each, and returns the replies in the order of the requests. Panics on a
/// transport error. For tests that need thousands of exchanges in a second or two.
pub async fn fetch_all(
    addr: SocketAddr,
    connections: usize,
    streams: usize,
    requests: Vec<Request<ReqBody>>,
) -> Vec<Reply> {
    let n = requests.len();
    let queue = Arc::new(Mutex::new(
        requests.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let mut senders = Vec::new();
    for _ in 0..connections.max(1) {
        let client = Client::connect(addr, Proto::H2c).await;
        for _ in 0..streams.max(1) {
            let mut client = client.try_clone().expect("an h2c client clones");
            let queue = queue.clone();
            senders.push(background().spawn(async move {
                let mut done = Vec::new();
                loop {
                    let next = queue.lock().unwrap().pop_front();
                    let Some((i, req)) = next else { break };
                    done.push((i, client.fetch(req).await));
                }
                done
            }));
        }
    }
    let mut replies: Vec<Option<Reply>> = vec![None; n];
    for sender in senders {
        let done = sender
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        for (i, reply) in done {
            replies[i] = Some(reply);
        }
    }
    replies
        .into_iter()
        .map(|r| r.expect("every request answered"))
        .collect()
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(resp: Response<Incoming>) -> Result<Reply, hyper::Error> {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    /// The first value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `x-remora-error` header: which failure the proxy answered for, if it did.
    pub fn remora_error(&self) -> Option<&str> {
        self.header("x-remora-error")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as an echo upstream's report. Panics (showing status and body) if it is not one.
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected an echo, got {} {:?}: {}",
            self.status,
            self.headers,
            self.text()
        );
        Echo::parse(&self.body)
    }
}

/// Reads a response body to its end without keeping it: its length and whether it is the test
/// pattern.
pub async fn drain(body: Incoming) -> Result<PatternCheck, hyper::Error> {
    crate::upstream::drain(body).await
}
