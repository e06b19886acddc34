//! The demo upstream that `scripts/demo.sh` puts behind the proxy: answers every request with a
//! short text showing what arrived, so the headers the proxy added are visible.
//!
//! Usage: `demo-upstream [ADDR]` (default `127.0.0.1:8081`)

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn describe(req: &Request<Incoming>) -> String {
    let mut out = format!(
        "hello from the demo upstream\nyou sent: {} {} {:?}\nheaders as received:\n",
        req.method(),
        req.uri(),
        req.version()
    );
    for (name, value) in req.headers() {
        out.push_str(&format!(
            "  {name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("demo-upstream: listening on {addr}");
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let body = describe(&req);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}
