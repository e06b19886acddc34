//! gRPC check: `grpc.health.v1.Health/Check` over h2c, which must answer SERVING. The two
//! messages are tiny, so they are encoded by hand rather than with a protobuf library:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }` with SERVING = 1.
//! The HTTP/2 connection is kept between checks while it stays open.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use remora_config::identity::SpiffeId;

use super::{CheckFailure, FailureReason, Probe, connect};

const PATH: &str = "/grpc.health.v1.Health/Check";
/// A health response is a few bytes; anything much larger is not one.
const MAX_BODY: usize = 16 * 1024;
/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u64 = 1;

pub struct GrpcProbe {
    addr: SocketAddr,
    /// The request message, framed; the same for every check.
    request: Bytes,
    conn: Option<http2::SendRequest<Full<Bytes>>>,
    /// The peer identity to require over mTLS; `None`: plaintext.
    mtls: Option<SpiffeId>,
}

impl GrpcProbe {
    pub fn new(addr: SocketAddr, service: String) -> Self {
        GrpcProbe {
            addr,
            request: frame(&encode_request(&service)),
            conn: None,
            mtls: None,
        }
    }

    /// Checks through mTLS, requiring this peer identity.
    pub fn with_mtls(mut self, mtls: Option<SpiffeId>) -> Self {
        self.mtls = mtls;
        self
    }

    async fn open(&self) -> Result<http2::SendRequest<Full<Bytes>>, CheckFailure> {
        let stream = connect(self.addr, self.mtls.as_ref(), Some(true)).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CheckFailure::from_hyper(&e))?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "gRPC health-check connection ended");
            }
        });
        Ok(sender)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.request.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::builder()
            .scheme("http")
            .authority(self.addr.to_string())
            .path_and_query(PATH)
            .build()
            .expect("an address is a valid authority");
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(TE, HeaderValue::from_static("trailers"));
        h.insert(USER_AGENT, HeaderValue::from_static("remora-health-check"));
        req
    }

    async fn call(&self, sender: &mut http2::SendRequest<Full<Bytes>>) -> Result<(), CheckFailure> {
        sender
            .ready()
            .await
            .map_err(|e| CheckFailure::from_hyper(&e))?;
        let resp = sender
            .send_request(self.request())
            .await
            .map_err(|e| CheckFailure::from_hyper(&e))?;
        if resp.status() != http::StatusCode::OK {
            return Err(CheckFailure::new(
                FailureReason::Status,
                format!("HTTP status {}", resp.status().as_u16()),
            ));
        }
        // A trailers-only response carries its grpc-status in the head.
        grpc_status(resp.headers())?;
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CheckFailure::new(FailureReason::Closed, e.to_string()))?;
        if let Some(trailers) = body.trailers() {
            grpc_status(trailers)?;
        }
        let body = body.to_bytes();
        let message = unframe(&body)?;
        match decode_status(message)? {
            SERVING => Ok(()),
            other => Err(CheckFailure::new(
                FailureReason::Status,
                format!("serving status {}", status_name(other)),
            )),
        }
    }
}

impl Probe for GrpcProbe {
    async fn check(&mut self) -> Result<(), CheckFailure> {
        let mut sender = match self.conn.take().filter(|c| !c.is_closed()) {
            Some(reused) => reused,
            None => self.open().await?,
        };
        let result = self.call(&mut sender).await;
        // One HTTP/2 connection carries every check; a failed call does not close it.
        if !sender.is_closed() {
            self.conn = Some(sender);
        }
        result
    }
}

/// Fails unless `grpc-status` is absent (not yet sent) or 0 (OK).
fn grpc_status(headers: &HeaderMap) -> Result<(), CheckFailure> {
    match headers.get("grpc-status").map(|v| v.as_bytes()) {
        None | Some(b"0") => Ok(()),
        Some(code) => {
            let message = headers
                .get("grpc-message")
                .and_then(|m| m.to_str().ok())
                .unwrap_or("");
            Err(CheckFailure::new(
                FailureReason::GrpcStatus,
                format!("grpc-status {} {message}", String::from_utf8_lossy(code))
                    .trim_end()
                    .to_owned(),
            ))
        }
    }
}

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// `HealthCheckRequest { service }` in protobuf: field 1, length-delimited; omitted when empty,
/// as proto3 does for defaults.
pub fn encode_request(service: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.put_u8(1 << 3 | 2);
        put_varint(&mut out, service.len() as u64);
        out.put_slice(service.as_bytes());
    }
    out.freeze()
}

/// `HealthCheckResponse { status }` in protobuf (for tests and test servers).
pub fn encode_response(status: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(11);
    if status != 0 {
        out.put_u8(1 << 3);
        put_varint(&mut out, status);
    }
    out.freeze()
}

/// The `status` of a `HealthCheckResponse`; unknown fields are skipped, an absent status is 0
/// (UNKNOWN), and the last occurrence wins, as protobuf decoders do.
pub fn decode_status(mut msg: &[u8]) -> Result<u64, CheckFailure> {
    let bad = || CheckFailure::new(FailureReason::Protocol, "malformed HealthCheckResponse");
    let mut status = 0;
    while !msg.is_empty() {
        let key = take_varint(&mut msg).ok_or_else(bad)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = take_varint(&mut msg).ok_or_else(bad)?;
                if field == 1 {
                    status = v;
                }
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                msg = msg.get(n..).ok_or_else(bad)?;
            }
            2 => {
                let n = take_varint(&mut msg).ok_or_else(bad)?;
                let n = usize::try_from(n).map_err(|_| bad())?;
                msg = msg.get(n..).ok_or_else(bad)?;
            }
            _ => return Err(bad()),
        }
    }
    Ok(status)
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The one message of a unary response body.
fn unframe(body: &[u8]) -> Result<&[u8], CheckFailure> {
    let bad = |what: &str| CheckFailure::new(FailureReason::Protocol, what.to_owned());
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(bad("no response message"));
    };
    if head[0] != 0 {
        return Err(bad("compressed response message"));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    rest.get(..len)
        .ok_or_else(|| bad("truncated response message"))
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http::Response;
    use http_body_util::combinators::BoxBody;
    use hyper::body::Incoming;
    use hyper::server::conn::http2 as server;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::health::probe::check_within;

    /// The service name in a framed `HealthCheckRequest` (test-side decoding).
    fn requested_service(body: &[u8]) -> String {
        let msg = unframe(body).unwrap();
        if msg.is_empty() {
            return String::new();
        }
        assert_eq!(msg[0], 1 << 3 | 2);
        let mut rest = &msg[1..];
        let n = take_varint(&mut rest).unwrap() as usize;
        String::from_utf8(rest[..n].to_vec()).unwrap()
    }

    type Body = BoxBody<Bytes, Infallible>;

    /// A health service as a gRPC server would answer: "" and "up" are SERVING, "down" is
    /// NOT_SERVING, anything else is the NOT_FOUND call error (trailers-only).
    async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        assert_eq!(req.uri().path(), PATH);
        assert_eq!(req.headers()[CONTENT_TYPE], "application/grpc");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let status = match requested_service(&body).as_str() {
            "" | "up" => SERVING,
            "down" => 2,
            _ => {
                let mut resp = Response::new(Full::new(Bytes::new()).boxed());
                let h = resp.headers_mut();
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                h.insert("grpc-status", HeaderValue::from_static("5"));
                h.insert("grpc-message", HeaderValue::from_static("unknown service"));
                return Ok(resp);
            }
        };
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(frame(&encode_response(status)))
            .with_trailers(async move { Some(Ok(trailers)) })
            .boxed();
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        Ok(resp)
    }

    /// An h2c server answering the health RPC; returns its address and accepted-connection count.
    async fn health_server() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(
                    server::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(answer)),
                );
            }
        });
        (addr, accepted)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn serving_passes_and_reuses_the_connection() {
        let (addr, accepted) = health_server().await;
        let mut whole = GrpcProbe::new(addr, String::new());
        let mut named = GrpcProbe::new(addr, "up".into());
        for _ in 0..3 {
            assert_eq!(check_within(&mut whole, T).await, Ok(()));
            assert_eq!(check_within(&mut named, T).await, Ok(()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn not_serving_fails_with_status() {
        let (addr, _) = health_server().await;
        let err = check_within(&mut GrpcProbe::new(addr, "down".into()), T)
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::Status);
        assert_eq!(err.detail, "serving status NOT_SERVING");
    }

    #[tokio::test]
    async fn call_error_fails_with_grpc_status() {
        let (addr, _) = health_server().await;
        let err = check_within(&mut GrpcProbe::new(addr, "nope".into()), T)
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::GrpcStatus);
        assert_eq!(err.detail, "grpc-status 5 unknown service");
    }

    #[tokio::test]
    async fn an_http1_server_is_not_a_grpc_server() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
        });
        let err = check_within(&mut GrpcProbe::new(addr, String::new()), T)
            .await
            .unwrap_err();
        assert!(
            matches!(err.reason, FailureReason::Protocol | FailureReason::Closed),
            "{err}"
        );
    }

    #[test]
    fn protobuf_round_trips() {
        assert_eq!(&encode_request("")[..], b"");
        assert_eq!(&encode_request("db")[..], b"\x0a\x02db");
        let long = "s".repeat(200);
        let enc = encode_request(&long);
        assert_eq!(&enc[..3], b"\x0a\xc8\x01");
        assert_eq!(decode_status(&encode_response(1)).unwrap(), 1);
        assert_eq!(decode_status(&encode_response(2)).unwrap(), 2);
        // Absent means UNKNOWN; unknown fields of every wire type are skipped.
        assert_eq!(decode_status(b"").unwrap(), 0);
        let mixed =
            b"\x10\x05\x1a\x03abc\x21\x00\x00\x00\x00\x00\x00\x00\x00\x2d\x00\x00\x00\x00\x08\x01";
        assert_eq!(decode_status(mixed).unwrap(), 1);
        for bad in [
            &b"\x08"[..],
            b"\x0a\x05ab",
            b"\x0b",
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ] {
            assert_eq!(
                decode_status(bad).unwrap_err().reason,
                FailureReason::Protocol
            );
        }
        assert_eq!(unframe(&frame(b"xy")).unwrap(), b"xy");
        assert!(unframe(b"\x00\x00\x00\x00\x05ab").is_err());
        assert!(unframe(b"\x01\x00\x00\x00\x00").is_err());
    }
}
