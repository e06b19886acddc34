//! `remora control-plane`: serves the mesh config to sidecars (the watch, on `--listen`), signs
//! their certificates (`POST /v1/certificate`, same port; see [`crate::ca`]), and shows its own
//! state (`/status`, `/metrics`, `/ready` on `--admin`).
//!
//! It keeps no state beyond what it reads from the directory and hears from sidecars, so any
//! number of replicas can serve the same directory: they publish the same versions, and a
//! sidecar that moves from one to another reports its version and carries on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use remora_config::protocol::{
    CERTIFICATE_PATH, CertificateRequest, HEALTH_PATH, HealthReport, WATCH_PATH, WatchRequest,
    WatchResponse,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ca::{Ca, Refusal};
use crate::explain::{ExplainRequest, Node, explain};
use crate::metrics::Metrics;
use crate::sidecars::{Report, Sidecars};
use crate::store::{self, LoadState, Published};
use crate::tokens::{TokenError, Tokens};

/// The longest a watch is held with nothing new: long enough that idle sidecars cost almost
/// nothing, short enough that a dead connection is noticed.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// A watch request body is a few hundred bytes and a certificate request (with its CSR) a few
/// KiB; anything past this is neither.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub struct Options {
    pub config_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Once listening, write `{"listen": ..., "admin": ...}` here (for tests on port 0).
    pub write_addrs: Option<PathBuf>,
    /// Signs sidecars' certificates; `None`: none are signed (503) and the watch carries no
    /// trust bundle.
    pub ca: Option<Ca>,
    /// Who may ask for which identity (`--bootstrap-tokens`); `None`: nobody, every
    /// certificate request is refused.
    pub tokens: Option<Tokens>,
    /// The sidecars' API over TLS too, here, with a certificate from the CA for these names.
    pub listen_tls: Option<(SocketAddr, Vec<String>)>,
    /// The injection webhook, if served (it needs the CA for its certificate).
    pub webhook: Option<crate::webhook::Options>,
    /// Kubernetes service-account tokens as credentials, checked by TokenReview.
    pub token_review: Option<crate::token_review::TokenReviewer>,
}

struct State {
    published: watch::Receiver<Option<Arc<Published>>>,
    load: watch::Receiver<LoadState>,
    sidecars: Sidecars,
    metrics: Arc<Metrics>,
    config_dir: PathBuf,
    ca: Option<Ca>,
    tokens: Option<Tokens>,
    token_review: Option<crate::token_review::TokenReviewer>,
}

type Body = Full<Bytes>;

/// Runs until killed.
pub fn run(options: Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(options))
}

async fn serve(options: Options) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    // Sidecars talk mTLS to each other when this control plane can issue their certificates:
    // a CA, and tokens for sidecars to prove who they are. Without tokens no sidecar could
    // get a certificate, and mTLS would only fail every call (closed).
    let can_prove = options.tokens.is_some() || options.token_review.is_some();
    let trust_domain = match &options.ca {
        Some(ca) if can_prove => Some(ca.trust_domain().to_owned()),
        _ => None,
    };
    let store = store::start(options.config_dir.clone(), trust_domain, metrics.clone())
        .map_err(|e| format!("cannot watch {}: {e}", options.config_dir.display()))?;
    let api = TcpListener::bind(options.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let admin = TcpListener::bind(options.admin)
        .await
        .map_err(|e| format!("cannot listen on {} (admin): {e}", options.admin))?;
    let (api_addr, admin_addr) = (local(&api)?, local(&admin)?);
    let api_tls = match (&options.listen_tls, &options.ca) {
        (None, _) => None,
        (Some((addr, names)), Some(ca)) => {
            let config = crate::tls::server_config(ca, names, &[b"h2"])
                .map_err(|e| format!("--listen-tls: {e}"))?;
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} (TLS): {e}"))?;
            tracing::info!(listen_tls = %local(&listener)?, ?names, "sidecar API over TLS up");
            Some((listener, tokio_rustls::TlsAcceptor::from(config)))
        }
        (Some(_), None) => {
            return Err("--listen-tls needs the CA (for its certificate); drop --no-ca".into());
        }
    };
    let tls_addr = match &api_tls {
        Some((l, _)) => Some(local(l)?),
        None => None,
    };
    let webhook_addr = match (options.webhook, &options.ca) {
        (None, _) => None,
        (Some(w), Some(ca)) => Some(crate::webhook::start(w, ca, metrics.clone()).await?),
        (Some(_), None) => {
            return Err(
                "the injection webhook needs the CA (for its TLS certificate); drop --no-ca".into(),
            );
        }
    };
    tracing::info!(listen = %api_addr, admin = %admin_addr, dir = %options.config_dir.display(), "control plane up");
    if let Some(path) = &options.write_addrs {
        let text = json!({
            "listen": api_addr.to_string(),
            "admin": admin_addr.to_string(),
            "webhook": webhook_addr.map(|a| a.to_string()),
            "listen_tls": tls_addr.map(|a| a.to_string()),
        });
        // Written aside and renamed, so a reader never sees half of it.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let state = Arc::new(State {
        published: store.published.clone(),
        load: store.state,
        sidecars: Sidecars::default(),
        metrics,
        config_dir: options.config_dir,
        ca: options.ca,
        tokens: options.tokens,
        token_review: options.token_review,
    });
    tokio::spawn(track_pushes(state.clone(), store.published));
    tokio::spawn(tick(state.clone()));
    tokio::spawn(accept(admin, state.clone(), false, None));
    if let Some((listener, acceptor)) = api_tls {
        tokio::spawn(accept(listener, state.clone(), true, Some(acceptor)));
    }
    accept(api, state, true, None).await;
    Ok(())
}

fn local(l: &TcpListener) -> Result<SocketAddr, String> {
    l.local_addr().map_err(|e| e.to_string())
}

/// Starts the push clock of every newly published version.
async fn track_pushes(state: Arc<State>, mut published: watch::Receiver<Option<Arc<Published>>>) {
    loop {
        let current = published.borrow_and_update().clone();
        if let Some(p) = current {
            state.sidecars.published(&p, &state.metrics);
        }
        if published.changed().await.is_err() {
            return;
        }
    }
}

/// Notices sidecars that went away (see [`Sidecars::tick`]) within a quarter of a second of
/// their grace running out.
async fn tick(state: Arc<State>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        every.tick().await;
        let current = state.published.borrow().clone();
        state.sidecars.tick(current.as_deref(), &state.metrics);
    }
}

/// Serves `listener`: the sidecars' API or the admin endpoints, over TLS with `tls`.
async fn accept(
    listener: TcpListener,
    state: Arc<State>,
    api: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move {
                    Ok::<_, Infallible>(match api {
                        true => api_request(&state, req).await,
                        false => admin_request(&state, req).await,
                    })
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(Duration::from_secs(10), handshake).await
                    else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            }
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    let body = json!({ "error": message.to_string() }).to_string();
    respond(status, "application/json", body)
}

/// A POST's JSON body, or the response refusing it.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    what: &str,
) -> Result<T, Response<Body>> {
    if req.method() != Method::POST {
        return Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{what} is a POST"),
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("cannot read the request: {e}");
            return Err(error(StatusCode::BAD_REQUEST, msg));
        }
    };
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("not {what}: {e}")))
}

async fn api_request(state: &State, req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        WATCH_PATH => match json_body(req, "a watch request").await {
            Ok(watch) => watch_request(state, watch).await,
            Err(resp) => resp,
        },
        HEALTH_PATH => match json_body::<HealthReport>(req, "a health report").await {
            Ok(report) => match state.sidecars.set_health(&report.node, report.endpoints) {
                true => respond(StatusCode::NO_CONTENT, "application/json", Bytes::new()),
                false => error(StatusCode::NOT_FOUND, "open a watch first"),
            },
            Err(resp) => resp,
        },
        CERTIFICATE_PATH => match json_body(req, "a certificate request").await {
            Ok(ask) => certificate_request(state, &ask).await,
            Err(resp) => {
                state.metrics.certificate_refused("bad_request");
                resp
            }
        },
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such path; the watch is POST {WATCH_PATH}"),
        ),
    }
}

async fn watch_request(state: &State, watch: WatchRequest) -> Response<Body> {
    if watch.node.is_empty() || watch.service.is_empty() {
        return error(StatusCode::BAD_REQUEST, "'node' and 'service' are required");
    }
    let mut published = state.published.clone();
    let report = Report {
        node: &watch.node,
        service: &watch.service,
        namespace: &watch.namespace,
        version: &watch.version,
        error: watch.error.as_deref(),
    };
    let current = published.borrow_and_update().clone();
    state
        .sidecars
        .report(&report, current.as_deref(), &state.metrics);
    let hold = Duration::from_millis(watch.hold_ms).min(MAX_HOLD);
    let _held = state.sidecars.hold(&watch.node);
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let current = published.borrow_and_update().clone();
        if let Some(current) = current
            && current.mesh.version != watch.version
        {
            let Some(service) = current.mesh.service(&watch.service) else {
                return error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no service '{}' in the mesh config (version {})",
                        watch.service, current.mesh.version
                    ),
                );
            };
            let resp = WatchResponse {
                version: current.mesh.version.clone(),
                generation: current.generation,
                config: service.yaml.clone(),
                trust_bundle: state
                    .ca
                    .as_ref()
                    .map(|ca| ca.trust_bundle().to_owned())
                    .unwrap_or_default(),
            };
            state.metrics.pushed();
            let body = serde_json::to_vec(&resp).unwrap_or_default();
            return respond(StatusCode::OK, "application/json", body);
        }
        match tokio::time::timeout_at(deadline, published.changed()).await {
            Ok(Ok(())) => continue,
            // Nothing new within the hold, or shutting down.
            _ => return respond(StatusCode::NOT_MODIFIED, "application/json", Bytes::new()),
        }
    }
}

/// Signs the identity the request's token proves (see [`Ca::certify`]); every refusal is
/// logged and counted with its reason.
async fn certificate_request(state: &State, ask: &CertificateRequest) -> Response<Body> {
    let Some(ca) = &state.ca else {
        state.metrics.certificate_refused("no_ca");
        let msg = "this control plane issues no certificates (started with --no-ca)";
        return error(StatusCode::SERVICE_UNAVAILABLE, msg);
    };
    let now = SystemTime::now();
    let mut result = ca.certify(state.tokens.as_ref(), ask, now, &mut crate::ca::os_rng());
    // Not a bootstrap token: perhaps a service-account token the API server can vouch for.
    if let (Err(Refusal::Token(TokenError::UnknownToken | TokenError::NoTokens)), Some(reviewer)) =
        (&result, &state.token_review)
    {
        result = match reviewer.review(&ask.token).await {
            Ok((ns, sa)) if ns == ask.namespace && sa == ask.service_account => {
                ca.certify_proven(ask, now, &mut crate::ca::os_rng())
            }
            Ok((ns, sa)) => {
                tracing::warn!(token_of = %format!("{ns}/{sa}"), asked = %format!("{}/{}", ask.namespace, ask.service_account), "a service-account token asked for another identity");
                Err(Refusal::Token(TokenError::NotGranted))
            }
            Err(e) => {
                tracing::warn!(error = %e, "token review refused the token");
                Err(Refusal::Token(TokenError::UnknownToken))
            }
        };
    }
    match result {
        Ok(issued) => {
            let r = &issued.response;
            tracing::info!(
                identity = %issued.id,
                serial = %r.serial,
                expires = %remora_config::timestamp::format_timestamp(r.not_after_unix),
                "certificate issued"
            );
            state.metrics.certificate_issued();
            let body = serde_json::to_vec(r).unwrap_or_default();
            respond(StatusCode::OK, "application/json", body)
        }
        Err(refusal) => {
            // Never the token: only what was asked for, and why it was refused.
            tracing::warn!(
                namespace = %ask.namespace,
                service_account = %ask.service_account,
                reason = refusal.reason(),
                error = %refusal,
                "certificate refused"
            );
            state.metrics.certificate_refused(refusal.reason());
            error(refusal_status(&refusal), refusal)
        }
    }
}

fn refusal_status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Identity(_) | Refusal::Csr { .. } => StatusCode::BAD_REQUEST,
        Refusal::Token(_) => StatusCode::FORBIDDEN,
        Refusal::Sign(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn admin_request(state: &State, req: Request<Incoming>) -> Response<Body> {
    let current = state.published.borrow().clone();
    // What is shown (the gauge, pushes) is brought up to now first.
    state.sidecars.tick(current.as_deref(), &state.metrics);
    match req.uri().path() {
        "/explain" => match json_body::<ExplainRequest>(req, "an explain request").await {
            Ok(ask) => explain_request(state, current.as_deref(), &ask),
            Err(resp) => resp,
        },
        "/live" => respond(StatusCode::OK, "text/plain", "live\n"),
        "/ready" => match current {
            Some(_) => respond(StatusCode::OK, "text/plain", "ready\n"),
            None => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready: no valid mesh config yet\n",
            ),
        },
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        "/status" => {
            let (sidecars, push) = state.sidecars.rows(current.as_deref());
            let rejected = state.load.borrow().rejected.clone();
            let body = json!({
                "config_dir": state.config_dir.display().to_string(),
                "version": current.as_ref().map(|c| c.mesh.version.clone()),
                "generation": current.as_ref().map(|c| c.generation),
                "rejected": rejected,
                "push": push,
                "sidecars": sidecars,
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "try /status, /metrics, /ready, /live or POST /explain",
        ),
    }
}

fn explain_request(
    state: &State,
    current: Option<&Published>,
    ask: &ExplainRequest,
) -> Response<Body> {
    let Some(current) = current else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no valid mesh config yet");
    };
    let Some(known) = state.sidecars.known(&ask.node) else {
        let msg = format!(
            "no sidecar named '{}' has connected to this control plane",
            ask.node
        );
        return error(StatusCode::NOT_FOUND, msg);
    };
    let node = Node {
        service: &known.service,
        namespace: &known.namespace,
        health: known.health.as_ref().map(|(h, age)| (h.as_slice(), *age)),
    };
    match explain(&current.mesh, &node, ask) {
        Ok(v) => respond(StatusCode::OK, "application/json", v.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}
