//! HTTP/1.1 check: `GET path` must be answered with a status in one of the accepted ranges. The
//! connection is kept for the next check while the server keeps it alive, as Envoy does, so a
//! check costs a request rather than a handshake and a TIME_WAIT socket.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use remora_config::identity::SpiffeId;
use remora_config::model::UpstreamProtocol;

use super::{CheckFailure, FailureReason, Probe, connect};

/// A check response body is read (so the connection can be reused) up to this much; past it the
/// connection is dropped instead.
const MAX_BODY: usize = 64 * 1024;

const AGENT: HeaderValue = HeaderValue::from_static("remora-health-check");

pub struct HttpProbe {
    addr: SocketAddr,
    /// The cluster's protocol: an h2c-only server would refuse an HTTP/1.1 check.
    protocol: UpstreamProtocol,
    path: String,
    host: String,
    statuses: Vec<(u16, u16)>,
    /// The connection kept from the last check, if the server left it open.
    conn: Option<Conn>,
    /// The peer identity to require over mTLS; `None`: plaintext.
    mtls: Option<SpiffeId>,
}

enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    fn is_closed(&self) -> bool {
        match self {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }
    }

    async fn send(&mut self, req: Request<Empty<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Conn::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Conn::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

impl HttpProbe {
    /// Without a configured `host`, the endpoint's address is the Host header.
    pub fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        path: String,
        host: Option<String>,
        statuses: Vec<(u16, u16)>,
        mtls: Option<SpiffeId>,
    ) -> Self {
        HttpProbe {
            addr,
            protocol,
            path,
            host: host.unwrap_or_else(|| addr.to_string()),
            statuses,
            conn: None,
            mtls,
        }
    }

    async fn open(&self) -> Result<Conn, CheckFailure> {
        let http2 = self.protocol == UpstreamProtocol::Http2;
        let io = TokioIo::new(connect(self.addr, self.mtls.as_ref(), Some(http2)).await?);
        let hyper_err = |e: hyper::Error| CheckFailure::from_hyper(&e);
        let addr = self.addr;
        // Each connection task ends when the server closes it or the probe drops the sender.
        Ok(match self.protocol {
            UpstreamProtocol::Http1 => {
                let (sender, conn) = http1::handshake(io).await.map_err(hyper_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%addr, error = %e, "health-check connection ended");
                    }
                });
                Conn::H1(sender)
            }
            UpstreamProtocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await
                    .map_err(hyper_err)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%addr, error = %e, "health-check connection ended");
                    }
                });
                Conn::H2(sender)
            }
        })
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>, CheckFailure> {
        let invalid = |what: &str| CheckFailure::new(FailureReason::Protocol, what.to_owned());
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = match self.protocol {
            UpstreamProtocol::Http1 => self.path.parse(),
            // HTTP/2 carries the host as the :authority of an absolute URI.
            UpstreamProtocol::Http2 => format!("http://{}{}", self.host, self.path).parse(),
        }
        .map_err(|_| invalid("invalid check path or host"))?;
        if self.protocol == UpstreamProtocol::Http1 {
            let host = HeaderValue::try_from(self.host.as_str())
                .map_err(|_| invalid("invalid check host"))?;
            req.headers_mut().insert(HOST, host);
        }
        req.headers_mut().insert(USER_AGENT, AGENT);
        Ok(req)
    }

    /// One exchange on `conn`; gives the connection back if it can take another request.
    async fn exchange(&self, mut conn: Conn) -> Result<(u16, Option<Conn>), CheckFailure> {
        let resp = conn
            .send(self.request()?)
            .await
            .map_err(|e| CheckFailure::from_hyper(&e))?;
        let status = resp.status().as_u16();
        // Reading the body to its end is what frees an HTTP/1.1 connection for the next check.
        let read = Limited::new(resp.into_body(), MAX_BODY).collect().await;
        let keep = read.is_ok() && !conn.is_closed();
        Ok((status, keep.then_some(conn)))
    }
}

impl Probe for HttpProbe {
    async fn check(&mut self) -> Result<(), CheckFailure> {
        // Taken out while in use: a check cancelled by its timeout drops the connection with it.
        let (status, kept) = match self.conn.take().filter(|c| !c.is_closed()) {
            Some(reused) => match self.exchange(reused).await {
                Ok(done) => done,
                // The server may have closed the idle connection just as it was reused: that
                // says nothing about its health, so try once on a fresh connection.
                Err(_) => self.exchange(self.open().await?).await?,
            },
            None => self.exchange(self.open().await?).await?,
        };
        self.conn = kept;
        if self
            .statuses
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&status))
        {
            Ok(())
        } else {
            Err(CheckFailure::new(
                FailureReason::Status,
                format!("HTTP status {status}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::time::Duration;

    use http::Response;
    use http_body_util::Full;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;
    use crate::health::probe::check_within;

    /// A scripted upstream: answers with `status`, counts accepted connections, records the
    /// last request's path and Host, and closes after each response when `close` is set.
    struct Upstream {
        addr: SocketAddr,
        status: Arc<AtomicU16>,
        accepted: Arc<AtomicUsize>,
        seen: Arc<std::sync::Mutex<Option<(String, String)>>>,
    }

    async fn upstream(close: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            status: status.clone(),
            accepted: accepted.clone(),
            seen: seen.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (status, seen) = (status.clone(), seen.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get(HOST)
                        .map(|h| h.to_str().unwrap().to_owned());
                    *seen.lock().unwrap() = Some((req.uri().to_string(), host.unwrap_or_default()));
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    *resp.status_mut() = status.load(Ordering::SeqCst).try_into().unwrap();
                    if close {
                        resp.headers_mut()
                            .insert("connection", HeaderValue::from_static("close"));
                    }
                    async move { Ok::<_, Infallible>(resp) }
                });
                tokio::spawn(server::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        up
    }

    const T: Duration = Duration::from_secs(5);

    fn probe(addr: SocketAddr, host: Option<&str>) -> HttpProbe {
        HttpProbe::new(
            addr,
            UpstreamProtocol::Http1,
            "/healthz".into(),
            host.map(str::to_owned),
            vec![(200, 299), (418, 418)],
            None,
        )
    }

    #[tokio::test]
    async fn passes_and_fails_by_status() {
        let up = upstream(false).await;
        let mut p = probe(up.addr, Some("svc.local"));
        assert_eq!(check_within(&mut p, T).await, Ok(()));
        assert_eq!(
            *up.seen.lock().unwrap(),
            Some(("/healthz".to_owned(), "svc.local".to_owned()))
        );

        up.status.store(503, Ordering::SeqCst);
        let err = check_within(&mut p, T).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::Status);
        assert_eq!(err.detail, "HTTP status 503");

        // A second range is accepted too.
        up.status.store(418, Ordering::SeqCst);
        assert_eq!(check_within(&mut p, T).await, Ok(()));
    }

    #[tokio::test]
    async fn host_defaults_to_the_address() {
        let up = upstream(false).await;
        check_within(&mut probe(up.addr, None), T).await.unwrap();
        let (_, host) = up.seen.lock().unwrap().clone().unwrap();
        assert_eq!(host, up.addr.to_string());
    }

    #[tokio::test]
    async fn reuses_a_kept_alive_connection() {
        let up = upstream(false).await;
        let mut p = probe(up.addr, None);
        for _ in 0..4 {
            assert_eq!(check_within(&mut p, T).await, Ok(()));
        }
        // A failing status does not cost the connection either.
        up.status.store(500, Ordering::SeqCst);
        assert!(check_within(&mut p, T).await.is_err());
        assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn reconnects_when_the_server_closes() {
        let up = upstream(true).await;
        let mut p = probe(up.addr, None);
        for _ in 0..3 {
            assert_eq!(check_within(&mut p, T).await, Ok(()));
        }
        assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn checks_an_h2c_server_over_one_connection() {
        use hyper::server::conn::http2 as h2server;
        use hyper_util::rt::TokioExecutor;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let ok = req.uri().path() == "/healthz"
                        && req.uri().authority().map(|a| a.as_str()) == Some("svc.local");
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = if ok { 204 } else { 400 }.try_into().unwrap();
                    Ok::<_, Infallible>(resp)
                });
                tokio::spawn(
                    h2server::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        let mut p = HttpProbe::new(
            addr,
            UpstreamProtocol::Http2,
            "/healthz".into(),
            Some("svc.local".into()),
            vec![(200, 299)],
            None,
        );
        for _ in 0..3 {
            assert_eq!(check_within(&mut p, T).await, Ok(()));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refused_is_connect_and_silence_is_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let err = check_within(&mut probe(addr, None), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::Timeout);
        drop(listener);
        let err = check_within(&mut probe(addr, None), T).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::Connect);
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_failure() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        });
        let err = check_within(&mut probe(addr, None), T).await.unwrap_err();
        assert_eq!(err.reason, FailureReason::Protocol);
    }
}
