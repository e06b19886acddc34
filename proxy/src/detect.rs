//! Protocol detection for `protocol: auto` listeners.
//!
//! The first bytes a client sends decide: an HTTP/1.x request line or the HTTP/2 preface is
//! served as HTTP; a TLS ClientHello or anything else goes to the listener's fallback cluster as
//! opaque TCP. A client that sends nothing within the detect timeout is taken to be waiting for
//! the server to speak first (MySQL, SMTP, ...) and is forwarded as opaque TCP at once. Bytes
//! are only peeked, never consumed, so whichever side takes the connection sees all of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::context::ConnCtx;
use crate::http::Timeouts;
use crate::snapshot::{ListenerRt, ListenerRtKind};

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest HTTP method we recognise from its first bytes (the registered ones are at most
/// 17 characters, e.g. `UPDATEREDIRECTREF`).
const MAX_METHOD: usize = 20;

/// How long to wait between peeks while a client has sent only part of what we need to decide.
const REPEEK: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Http1,
    Http2,
    Tls,
    Opaque,
    /// Nothing arrived within the detect timeout: a server-speaks-first protocol.
    Timeout,
    /// The client closed (or reset) before sending anything.
    Closed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Http1 => "http1",
            Outcome::Http2 => "http2",
            Outcome::Tls => "tls",
            Outcome::Opaque => "opaque",
            Outcome::Timeout => "timeout",
            Outcome::Closed => "closed",
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, Outcome::Http1 | Outcome::Http2)
    }
}

/// Classifies the first bytes of a connection; `None` when more bytes are needed to decide.
pub fn classify(bytes: &[u8]) -> Option<Outcome> {
    let first = *bytes.first()?;
    if first == 0x16 {
        // A TLS record of type handshake; the version byte that follows is always 0x03.
        return match bytes.get(1) {
            None => None,
            Some(0x03) => Some(Outcome::Tls),
            Some(_) => Some(Outcome::Opaque),
        };
    }
    if bytes.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(bytes) {
        // `P`, `PR`, `PRI ` ... could still be the preface or a method such as `PRINT`.
        return if bytes.len() >= 4 {
            Some(Outcome::Http2)
        } else {
            None
        };
    }
    if bytes.starts_with(H2_PREFACE) {
        return Some(Outcome::Http2);
    }
    // An HTTP/1.x request line starts with a method token (uppercase letters here) and a space.
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD => continue,
            b' ' if i > 0 => return Some(Outcome::Http1),
            _ => return Some(Outcome::Opaque),
        }
    }
    None
}

/// Peeks at `stream` until the first bytes decide, or `timeout` passes.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 32];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(n)) => n,
        };
        seen = n;
        if let Some(outcome) = classify(&buf[..n]) {
            return outcome;
        }
        // A partial method or preface: wait for more (peek returns at once while any data
        // is buffered, so pace it).
        if Instant::now() + REPEEK >= deadline {
            break;
        }
        tokio::time::sleep(REPEEK).await;
    }
    // Timed out. A client that started an HTTP request line and stalled is HTTP (the header
    // read timeout deals with it); one that sent nothing waits for the server to speak.
    if seen == 0 {
        Outcome::Timeout
    } else {
        Outcome::Http1
    }
}

pub async fn serve(ctx: Arc<ConnCtx>, stream: TcpStream, rt: Arc<ListenerRt>, t: Timeouts) {
    let ListenerRtKind::Auto {
        fallback,
        detect_timeout,
        ..
    } = &rt.kind
    else {
        return;
    };
    let outcome = detect(&stream, *detect_timeout).await;
    ctx.shared.metrics.detection(&rt.name, outcome.as_str());
    if outcome.is_http() {
        crate::http::serve(ctx, stream, rt.builder.clone(), t).await;
        return;
    }
    ctx.activity.not_http();
    match fallback {
        Some(cluster) => crate::tcp::serve(ctx, stream, cluster.clone(), t.idle).await,
        None => tracing::debug!(
            listener = %rt.name,
            peer = %ctx.peer,
            outcome = outcome.as_str(),
            "not HTTP and no fallback cluster; closing"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Outcome::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Outcome::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Outcome::Http2)
        );
        assert_eq!(classify(b"PR"), None);
        assert_eq!(classify(b"PRI "), Some(Outcome::Http2));
        assert_eq!(classify(b"PRINT /x HTTP/1.1"), Some(Outcome::Http1));
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), Some(Outcome::Tls));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(b"\x00\x00\x00\x08"), Some(Outcome::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Outcome::Opaque));
        assert_eq!(classify(b" GET"), Some(Outcome::Opaque));
        assert_eq!(classify(&[b'A'; 32]), Some(Outcome::Opaque));
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn a_silent_client_times_out_quickly() {
        let (_client, server) = pair().await;
        let start = std::time::Instant::now();
        let outcome = detect(&server, Duration::from_millis(100)).await;
        assert_eq!(outcome, Outcome::Timeout);
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_request_line_in_two_pieces_is_http_and_nothing_is_consumed() {
        let (mut client, server) = pair().await;
        client.write_all(b"GE").await.unwrap();
        let detecting = tokio::spawn(async move {
            let outcome = detect(&server, Duration::from_secs(5)).await;
            (outcome, server)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        let (outcome, server) = detecting.await.unwrap();
        assert_eq!(outcome, Outcome::Http1);
        let mut buf = [0u8; 16];
        let n = server.peek(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"GET /"));
    }

    #[tokio::test]
    async fn a_closed_client_is_closed() {
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(
            detect(&server, Duration::from_secs(5)).await,
            Outcome::Closed
        );
    }
}
