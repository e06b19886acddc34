//! The end of an exchange: counting it in metrics and writing its access-log line.
//!
//! A [`Completion`] is filled in as the request moves through the proxy and travels inside the
//! response body ([`crate::body::ObservedBody`]), which calls [`Completion::finish`] when the last
//! byte has gone out or the client went away.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use http::{HeaderValue, Method, StatusCode, Uri, Version};
use tokio::time::Instant;

use crate::access_log::{push_json_str, rfc3339_millis};
use crate::body::RequestBodyStats;
use crate::context::ConnCtx;
use crate::snapshot::{RouteRt, Snapshot};

pub struct Completion {
    ctx: Arc<ConnCtx>,
    snapshot: Arc<Snapshot>,
    start: Instant,
    pub status: StatusCode,
    /// The route and the index of the backend chosen, once routing has happened.
    pub route: Option<(Arc<RouteRt>, usize)>,
    /// The `x-remora-error` reason, for responses the proxy generated.
    pub error: Option<&'static str>,
    pub upstream: Option<SocketAddr>,
    pub request_body: Option<Arc<RequestBodyStats>>,
    /// Captured only when the access log is on.
    log: Option<LogFields>,
}

struct LogFields {
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    request_id: Option<HeaderValue>,
}

impl Completion {
    pub fn new(
        ctx: Arc<ConnCtx>,
        snapshot: Arc<Snapshot>,
        start: Instant,
        req: &http::Request<hyper::body::Incoming>,
    ) -> Self {
        let log = ctx.shared.access_log.as_ref().map(|_| LogFields {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: req.headers().get(http::header::HOST).cloned(),
            request_id: None,
        });
        Completion {
            ctx,
            snapshot,
            start,
            status: StatusCode::OK,
            route: None,
            error: None,
            upstream: None,
            request_body: None,
            log,
        }
    }

    pub fn set_request_id(&mut self, id: &HeaderValue) {
        if let Some(log) = &mut self.log {
            log.request_id = Some(id.clone());
        }
    }

    /// Records the exchange. `sent` is the response body bytes written; `complete` is false when
    /// the response was cut short.
    pub fn finish(self, sent: u64, complete: bool) {
        let elapsed = self.start.elapsed();
        match &self.route {
            Some((route, backend)) => {
                route.backends[*backend].requests.record(self.status);
                route.latency.observe(elapsed.as_secs_f64());
            }
            None => self.snapshot.listeners[self.ctx.listener]
                .metrics
                .unrouted
                .record(self.status),
        }
        self.ctx.activity.request_finished();
        if let (Some(log), Some(writer)) = (&self.log, &self.ctx.shared.access_log) {
            writer.send(self.log_line(log, elapsed.as_secs_f64(), sent, complete));
        }
    }

    fn log_line(&self, log: &LogFields, secs: f64, sent: u64, complete: bool) -> String {
        let mut s = String::with_capacity(384);
        s.push_str("{\"time\":\"");
        s.push_str(&rfc3339_millis(SystemTime::now()));
        s.push_str("\",\"listener\":");
        push_json_str(&mut s, &self.snapshot.listeners[self.ctx.listener].name);
        s.push_str(",\"client\":\"");
        let _ = write!(s, "{}", self.ctx.peer);
        s.push_str("\",\"method\":");
        push_json_str(&mut s, log.method.as_str());
        s.push_str(",\"authority\":");
        match (log.uri.authority(), &log.host) {
            (Some(a), _) => push_json_str(&mut s, a.as_str()),
            (None, Some(h)) => push_json_str(&mut s, &String::from_utf8_lossy(h.as_bytes())),
            (None, None) => s.push_str("null"),
        }
        s.push_str(",\"path\":");
        let path = log.uri.path_and_query().map_or("/", |p| p.as_str());
        push_json_str(&mut s, path);
        let _ = write!(
            s,
            ",\"protocol\":\"{:?}\",\"status\":{},\"duration_ms\":{:.3}",
            log.version,
            self.status.as_u16(),
            secs * 1000.0
        );
        s.push_str(",\"route\":");
        opt_str(&mut s, self.route.as_ref().map(|(r, _)| r.name.as_str()));
        s.push_str(",\"cluster\":");
        opt_str(
            &mut s,
            self.route
                .as_ref()
                .map(|(r, b)| r.backends[*b].cluster.name.as_str()),
        );
        s.push_str(",\"upstream\":");
        match self.upstream {
            Some(a) => {
                let _ = write!(s, "\"{a}\"");
            }
            None => s.push_str("null"),
        }
        let received = self
            .request_body
            .as_ref()
            .map_or(0, |b| b.bytes.load(Ordering::Relaxed));
        let _ = write!(
            s,
            ",\"bytes_received\":{received},\"bytes_sent\":{sent},\"complete\":{complete}"
        );
        s.push_str(",\"request_id\":");
        let id = log.request_id.as_ref().and_then(|v| v.to_str().ok());
        opt_str(&mut s, id);
        s.push_str(",\"error\":");
        opt_str(&mut s, self.error);
        s.push_str("}\n");
        s
    }
}

fn opt_str(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => push_json_str(s, v),
        None => s.push_str("null"),
    }
}
