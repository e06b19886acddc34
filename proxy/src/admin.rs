//! The admin listener: liveness, readiness, metrics and introspection.
//!
//! | path        | what                                                            |
//! |-------------|-----------------------------------------------------------------|
//! | `/live`     | 200 while the process runs                                      |
//! | `/ready`    | 200 once every listener accepts, a config is loaded and every dns cluster has had its first answer (or 10 s passed); 503 before, and while draining |
//! | `/metrics`  | Prometheus text format                                          |
//! | `/config`   | the config in effect, as YAML with every default explicit       |
//! | `/clusters` | each cluster's endpoints with weight and state, as JSON         |
//! | `POST /drain`, `POST /shutdown` | drain (as SIGTERM) and exit              |
//!
//! `admin.status_address` serves `/live`, `/ready` and `/metrics` only ([`Scope::Status`]):
//! what may face the pod's network, for the kubelet and Prometheus.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use remora_config::model::{Discovery, DnsDiscovery};
use serde_json::json;
use tokio::net::TcpListener;

use crate::context::Shared;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// `GET /live`, `/ready` and `/metrics`: nothing that reveals the config or changes state.
    Status,
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, scope: Scope) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    let response = match scope {
                        Scope::All => route(&shared, &req),
                        Scope::Status => status_route(&shared, &req),
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The status listener's app: `GET /live`, `/ready`, `/metrics` as on the admin listener;
/// anything else is not here.
pub fn status_route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/live" | "/ready" | "/metrics" => route(shared, req),
        _ => text(
            StatusCode::NOT_FOUND,
            "this is the status listener: GET /live /ready /metrics; the rest of the admin \
             endpoints are on the admin address\n"
                .into(),
        ),
    }
}

/// The admin app, callable without a socket.
pub fn route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() == Method::POST {
        return match req.uri().path() {
            // Both drain and then exit: Kubernetes Jobs and CI stop the sidecar with either,
            // depending on what they were written for (Envoy's and Linkerd's names).
            "/drain" | "/shutdown" => {
                shared.drain.request();
                text(StatusCode::ACCEPTED, "draining\n".into())
            }
            "/live" | "/ready" | "/metrics" | "/config" | "/clusters" => {
                text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into())
            }
            _ => text(StatusCode::NOT_FOUND, "POST /drain or /shutdown\n".into()),
        };
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET, or POST /drain\n".into(),
        );
    }
    match req.uri().path() {
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" if shared.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        "/metrics" => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.metrics.encode(),
        ),
        "/config" => with_type(
            StatusCode::OK,
            "application/yaml",
            remora_config::to_yaml(&shared.snapshot.load().config),
        ),
        "/clusters" => with_type(StatusCode::OK, "application/json", clusters(shared)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /live /ready /metrics /config /clusters\n".into(),
        ),
    }
}

fn clusters(shared: &Shared) -> String {
    let snapshot = shared.snapshot.load();
    let now = tokio::time::Instant::now();
    let dns = shared.dns.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let clusters: Vec<_> = snapshot
        .clusters
        .iter()
        .map(|c| {
            let mut json = cluster(c, now);
            if let Discovery::Dns(d) = &c.config.discovery {
                json["dns"] = dns_state(d, dns.get(&c.name), now);
            }
            json
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&json!({ "clusters": clusters }))
        .expect("JSON values serialize");
    out.push('\n');
    out
}

/// One cluster for `/clusters`: policy, and per endpoint its weight, load, latency estimate,
/// health and ejection state, and share of the picks over the last minute.
fn cluster(c: &crate::upstream::ClusterRt, now: tokio::time::Instant) -> serde_json::Value {
    let states = c.health.snapshot(now);
    let budget = c.budget.counts(now);
    let picks: Vec<u64> = c.health.endpoints().iter().map(|e| e.picks()).collect();
    let shares = c
        .pick_history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .shares(&picks);
    let endpoints: Vec<_> = c
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut ep = states[i].to_json();
            ep["weight"] = e.weight.into();
            if e.weight == 0 {
                // Configured but never picked, whatever its health.
                ep["state"] = "drained".into();
            }
            ep["idle_connections"] = c.idle_connections(i).into();
            ep["ewma_latency_ms"] = c.latency_estimate(i).map(|s| s * 1000.0).into();
            ep["picks_share_last_minute"] = shares[i].into();
            ep
        })
        .collect();
    json!({
        "name": c.name,
        "protocol": c.protocol.as_str(),
        "policy": c.config.load_balancer.policy.as_str(),
        "panic_threshold": c.config.load_balancer.panic_threshold,
        "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
        "circuit_breakers": circuit_breakers(c),
        "retry_budget": {
            "requests": budget.requests,
            "retries": budget.retries,
        },
        "endpoints": endpoints,
    })
}

/// A dns cluster's name and record, and how its resolution goes: endpoints in the last good
/// answer, when that was, the last error and failures since, and when it resolves next.
fn dns_state(
    d: &DnsDiscovery,
    state: Option<&crate::discovery::DnsState>,
    now: tokio::time::Instant,
) -> serde_json::Value {
    let state = state.cloned().unwrap_or_default();
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    json!({
        "name": d.name,
        "record": d.record.as_str(),
        "endpoints": state.endpoints,
        "last_success_ms_ago": state.last_success.map(|t| ms(now.saturating_duration_since(t))),
        "failures_in_a_row": state.failures_in_a_row,
        "last_error": state.last_error,
        "next_resolution_in_ms": state.next_resolution.map(|t| ms(t.saturating_duration_since(now))),
    })
}

/// Each limit's use and maximum, and the consecutive-failure breaker's state.
fn circuit_breakers(c: &crate::upstream::ClusterRt) -> serde_json::Value {
    let l = &c.limits;
    let limit = |x: &crate::breaker::Limit| json!({ "used": x.current(), "max": x.max() });
    let state = c.breaker.as_ref().map(|b| match b.state() {
        crate::breaker::State::Closed => "closed",
        crate::breaker::State::Open { .. } => "open",
        crate::breaker::State::HalfOpen => "half-open",
    });
    json!({
        "connections": limit(&l.connections),
        "pending_requests": limit(&l.pending_requests),
        "requests": limit(&l.requests),
        "retries": limit(&l.retries),
        "consecutive_failures": state,
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
