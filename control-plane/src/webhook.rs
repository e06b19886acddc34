//! The mutating admission webhook: `POST /inject` with an AdmissionReview v1, answered with a
//! JSON Patch that injects the sidecar ([`crate::inject`]), over TLS with a certificate the
//! control plane's CA signs for the Service's DNS names at start (its root is the webhook
//! configuration's `caBundle`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::ca::Ca;
use crate::inject;
use crate::metrics::Metrics;

/// AdmissionReviews carry one object; Kubernetes caps requests at 3 MiB.
const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

pub struct Options {
    pub listen: SocketAddr,
    /// The names the API server reaches the webhook by, e.g.
    /// `remora-control-plane.remora-system.svc`.
    pub dns_names: Vec<String>,
    pub inject: inject::Options,
}

/// Binds and serves until the process ends. Returns the bound address.
pub async fn start(options: Options, ca: &Ca, metrics: Arc<Metrics>) -> Result<SocketAddr, String> {
    let config = crate::tls::server_config(ca, &options.dns_names, &[b"h2", b"http/1.1"])
        .map_err(|e| format!("webhook: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (webhook): {e}", options.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, names = ?options.dns_names, "injection webhook up");
    let inject = Arc::new(options.inject);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let inject = inject.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let (inject, metrics) = (inject.clone(), metrics.clone());
                    async move { Ok::<_, Infallible>(handle(req, &inject, &metrics).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    req: Request<Incoming>,
    options: &inject::Options,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        resp
    };
    if req.uri().path() != "/inject" || req.method() != Method::POST {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"POST /inject"}"#.into());
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            metrics.admission_review("invalid");
            let msg = serde_json::json!({ "error": e.to_string() });
            return reply(StatusCode::BAD_REQUEST, msg.to_string());
        }
    };
    let review = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v["request"]["uid"].is_string() => v,
        Ok(_) => {
            metrics.admission_review("invalid");
            let msg = r#"{"error":"not an AdmissionReview: no request.uid"}"#;
            return reply(StatusCode::BAD_REQUEST, msg.into());
        }
        Err(e) => {
            metrics.admission_review("invalid");
            let msg = serde_json::json!({ "error": format!("not an AdmissionReview: {e}") });
            return reply(StatusCode::BAD_REQUEST, msg.to_string());
        }
    };
    let answer = inject::admission_response(&review, options);
    let patched = answer["response"]["patch"].is_string();
    metrics.admission_review(if patched { "injected" } else { "unchanged" });
    tracing::info!(
        uid = %review["request"]["uid"],
        namespace = %review["request"]["namespace"],
        patched,
        "admission review"
    );
    reply(StatusCode::OK, answer.to_string())
}
