//! HTTP/1.1 and TCP at the byte level, with blocking std sockets.
//!
//! - [`exchange`] writes exactly the bytes given and reads one response: for requests a real
//!   client library would refuse to send (oversized heads, missing `Host`, bad framing).
//! - [`get`] is a tiny blocking `GET` for the admin listener.
//! - [`RawServer`] is an upstream that hands each accepted connection to a closure: TCP echo,
//!   or an "HTTP server" that misbehaves on purpose; [`RawServer::recording`] keeps every byte
//!   it reads ([`Received`]), to show what a proxy let through.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a raw read waits before the test fails rather than hangs.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Names lowercased, in order received.
    pub headers: Vec<(String, String)>,
    /// De-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Reads one response from `stream`: the head, then the body framed by `Content-Length`,
    /// chunked encoding, or the end of the connection. `head_request` is true when the request
    /// was `HEAD`, whose response has no body whatever its headers say.
    pub fn read_from(stream: &mut impl Read, head_request: bool) -> io::Result<RawResponse> {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if read_more(stream, &mut buf)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a response head; got {:?}",
                        String::from_utf8_lossy(&buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let mut rest = buf.split_off(head_end);
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            resp.body = read_chunked(stream, rest)?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
            while rest.len() < len {
                if read_more(stream, &mut rest)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the body",
                    ));
                }
            }
            rest.truncate(len);
            resp.body = rest;
        } else {
            stream.read_to_end(&mut rest)?;
            resp.body = rest;
        }
        Ok(resp)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_more(stream: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn read_chunked(stream: &mut impl Read, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf, b"\r\n") {
                break i;
            }
            if read_more(stream, &mut buf)? == 0 {
                return Err(invalid("connection closed inside a chunk size".into()));
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers (if any) end with an empty line; there are none in these tests.
            return Ok(body);
        }
        while buf.len() < size + 2 {
            if read_more(stream, &mut buf)? == 0 {
                return Err(invalid("connection closed inside a chunk".into()));
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// A reader that hands out one byte per read, so that [`RawResponse::read_from`] stops exactly
/// where a response ends and a pipelined response behind it stays unread.
pub struct ByteByByte<R>(pub R);

impl<R: Read> Read for ByteByByte<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

/// Connects to `addr` with read and write timeouts set, so a test fails instead of hanging.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Sends `request` as given on a new connection and reads one response.
///
/// A server may answer and close before reading everything (an oversized head, say); a write
/// error after part of the request went out is ignored so that the response can still be read.
pub fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<RawResponse> {
    let mut stream = connect(addr);
    if let Err(e) = stream.write_all(request)
        && !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    {
        return Err(e);
    }
    let head_request = request.starts_with(b"HEAD ");
    RawResponse::read_from(&mut stream, head_request)
}

/// A blocking `GET path` with `Connection: close`. For the admin listener, and for code that
/// runs outside any async runtime.
pub fn get(addr: SocketAddr, path: &str) -> io::Result<RawResponse> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    exchange(addr, req.as_bytes())
}

/// What a [`RawServer`] does with each accepted connection, on a thread of its own.
pub type ConnHandler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// A TCP server on `127.0.0.1:0` that runs a closure per connection, each on its own thread.
/// Stops accepting on drop; connection threads end when their closure returns.
pub struct RawServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl RawServer {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw server");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: ConnHandler = Arc::new(handler);
        let accept_thread = {
            let (connections, stop) = (connections.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("raw-server-{addr}"))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        connections.fetch_add(1, Ordering::Relaxed);
                        let handler = handler.clone();
                        std::thread::spawn(move || {
                            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
                            handler(stream);
                        });
                    }
                })
                .expect("spawn raw server thread")
        };
        RawServer {
            addr,
            connections,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    /// Echoes every byte back until the peer half-closes, then half-closes too.
    pub fn tcp_echo() -> RawServer {
        RawServer::start(|mut stream| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stream.shutdown(Shutdown::Write);
        })
    }

    /// Reads a request head, then writes `reply` verbatim and closes: an upstream that speaks
    /// broken or truncated HTTP.
    pub fn http_reply(reply: &'static [u8]) -> RawServer {
        RawServer::start(move |mut stream| {
            if read_head(&mut stream).is_ok() {
                let _ = stream.write_all(reply);
            }
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// The answer of an upstream that has nothing to say: `200 OK`, body `ok`.
pub const OK_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Every byte a [`RawServer::recording`] read, over all its connections, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<Mutex<Vec<u8>>>);

impl Received {
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap().is_empty()
    }

    fn append(&self, data: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(data);
    }
}

impl RawServer {
    /// A keep-alive HTTP/1.1 upstream that records every byte it reads and writes `reply`
    /// verbatim after each complete request (head, then the body its `Content-Length` or chunked
    /// framing gives), until the peer closes. An incomplete request gets no answer.
    pub fn recording(reply: &'static [u8]) -> (RawServer, Received) {
        let received = Received::default();
        let log = received.clone();
        let server = RawServer::start(move |mut stream| {
            let mut pending = Vec::new();
            while let Ok(n @ 1..) = read_more(&mut stream, &mut pending) {
                log.append(&pending[pending.len() - n..]);
                while let Some(len) = request_len(&pending) {
                    pending.drain(..len);
                    if stream.write_all(reply).is_err() {
                        return;
                    }
                }
            }
        });
        (server, received)
    }
}

/// The length of the complete request at the start of `buf`, if it is all there. A lenient
/// reading, for test upstreams: `Content-Length`, else chunked if `Transfer-Encoding` says so,
/// else no body.
fn request_len(buf: &[u8]) -> Option<usize> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if let Some(len) = field("content-length") {
        let len: usize = len.parse().ok()?;
        return (buf.len() >= head_end + len).then_some(head_end + len);
    }
    if !field("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return Some(head_end);
    }
    let mut pos = head_end;
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let size = String::from_utf8_lossy(&buf[pos..line_end]);
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // No trailers in these tests: the blank line follows.
            return (buf.len() >= pos + 2).then_some(pos + 2);
        }
        pos += size + 2;
        if buf.len() < pos {
            return None;
        }
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

/// A listening address where connection attempts hang: a listener that never accepts, with its
/// accept queue already full, so Linux drops every new SYN and `connect` waits until the
/// caller's timeout. For testing connect timeouts without a route to a black-holed network.
pub struct BlackHole {
    addr: SocketAddr,
    /// Kept open: closing it would refuse connections instead of ignoring them.
    _listener: TcpListener,
    /// The connections that fill the queue.
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        // std listens with a long backlog; tokio's TcpSocket takes one. Built on a thread of its
        // own so this works from inside an async test too.
        let listener = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            rt.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind("127.0.0.1:0".parse().unwrap())?;
                socket.listen(0)?.into_std()
            })
        })
        .join()
        .unwrap()
        .expect("listen with backlog 0");
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        // Fill the queue until an attempt hangs; the queue holds one or two on Linux.
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
                Ok(stream) => queued.push(stream),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => panic!("filling the accept queue of {addr}: {e}"),
            }
            assert!(queued.len() < 64, "the accept queue of {addr} never filled");
        }
        BlackHole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Reads up to and including the blank line that ends an HTTP head; returns the head.
pub fn read_head(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_framed_by_length_chunks_or_close() {
        let mut by_length: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA";
        let r = RawResponse::read_from(&mut by_length, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert_eq!(r.header("x-a"), Some("b"));

        let mut chunked: &[u8] =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = RawResponse::read_from(&mut chunked, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (201, "abcde"));

        let mut two: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 204 No Content\r\n\r\n";
        let mut one_by_one = ByteByByte(&mut two);
        for status in [200, 204] {
            let r = RawResponse::read_from(&mut one_by_one, false).unwrap();
            assert_eq!(r.status, status);
        }

        let mut until_close: &[u8] = b"HTTP/1.0 404 Not Found\r\n\r\nbye";
        let r = RawResponse::read_from(&mut until_close, false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "bye"));
    }

    #[test]
    fn requests_are_delimited_by_length_chunks_or_the_head() {
        let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(request_len(get), Some(get.len()));
        assert_eq!(request_len(&get[..get.len() - 1]), None);
        let post = b"POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET";
        assert_eq!(request_len(post), Some(post.len() - 3));
        assert_eq!(request_len(&post[..post.len() - 4]), None);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(request_len(chunked), Some(chunked.len()));
        assert_eq!(request_len(&chunked[..chunked.len() - 2]), None);
    }

    #[test]
    fn a_recording_server_answers_each_request_and_keeps_every_byte() {
        let (server, received) = RawServer::recording(OK_REPLY);
        let mut s = connect(server.addr());
        let two = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
        s.write_all(two).unwrap();
        // Both answers, read raw: `read_from` would drop what follows the first.
        let mut answers = Vec::new();
        while answers.len() < 2 * OK_REPLY.len() {
            assert_ne!(read_more(&mut s, &mut answers).unwrap(), 0, "{answers:?}");
        }
        assert_eq!(answers, [OK_REPLY, OK_REPLY].concat());
        assert_eq!(received.bytes(), two);
    }

    #[test]
    fn tcp_echo_echoes() {
        let server = RawServer::tcp_echo();
        let mut s = connect(server.addr());
        s.write_all(b"ping").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"ping");
        assert_eq!(server.connections(), 1);
    }
}
