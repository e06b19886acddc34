//! The end of an exchange: counting it in metrics and writing its access-log line.
//!
//! A [`Completion`] is filled in as the request moves through the proxy and travels inside the
//! response body ([`crate::body::ObservedBody`]), which calls [`Completion::finish`] when the last
//! byte has gone out or the client went away. A request dropped before it has a response (an
//! HTTP/2 reset, a closed connection) is counted when its `Completion` drops, as 499.

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
use crate::snapshot::{ListenerRt, RouteRt};

pub struct Completion {
    ctx: Arc<ConnCtx>,
    listener: Arc<ListenerRt>,
    start: Instant,
    pub status: StatusCode,
    /// The route and the index of the backend chosen, once routing has happened.
    pub route: Option<(Arc<RouteRt>, usize)>,
    /// The `x-remora-error` reason, for responses the proxy generated.
    pub error: Option<&'static str>,
    pub upstream: Option<SocketAddr>,
    pub request_body: Option<Arc<RequestBodyStats>>,
    /// Keeps the request counted as in flight at its endpoint (least-request balancing, the
    /// admin page) until the exchange is over.
    pub in_flight: Option<crate::health::InFlight>,
    /// The cluster's `requests` circuit-breaker permit, held until the exchange is over.
    pub permit: Option<crate::breaker::Permit>,
    /// Attempts sent upstream (0 when none was).
    pub attempts: u32,
    /// A retry was not sent because the cluster's retry budget was spent.
    pub budget_exhausted: bool,
    /// The fault injected: "delay", "abort" or "delay+abort".
    pub fault: Option<&'static str>,
    /// Captured only when the access log is on.
    log: Option<LogFields>,
    /// Set once the exchange has been counted, so that dropping it does not count it again.
    recorded: bool,
}

/// The status recorded for a request whose client went away before the response head (an
/// HTTP/2 reset, a closed connection): the request's future is dropped with its `Completion`.
/// nginx's "client closed request".
pub const CLIENT_CLOSED: u16 = 499;

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
        listener: Arc<ListenerRt>,
        start: Instant,
        req: &http::Request<hyper::body::Incoming>,
    ) -> Self {
        let log = ctx.shared.access_log.load().as_ref().map(|_| LogFields {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: req.headers().get(http::header::HOST).cloned(),
            request_id: None,
        });
        Completion {
            ctx,
            listener,
            start,
            status: StatusCode::OK,
            route: None,
            error: None,
            upstream: None,
            request_body: None,
            in_flight: None,
            permit: None,
            attempts: 0,
            budget_exhausted: false,
            fault: None,
            log,
            recorded: false,
        }
    }

    /// A failure the proxy answered for, or ended a response with: counted in
    /// `remora_proxy_errors_total` by reason, and shown in the access log.
    pub fn record_error(&mut self, reason: &'static str) {
        self.ctx
            .shared
            .metrics
            .proxy_error(&self.listener.name, reason);
        self.error = Some(reason);
    }

    pub fn set_request_id(&mut self, id: &HeaderValue) {
        if let Some(log) = &mut self.log {
            log.request_id = Some(id.clone());
        }
    }

    /// Records the exchange. `sent` is the response body bytes written; `complete` is false when
    /// the response was cut short.
    pub fn finish(mut self, sent: u64, complete: bool) {
        self.record(sent, complete);
    }

    fn record(&mut self, sent: u64, complete: bool) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        match &self.route {
            Some((route, backend)) => {
                route.backends[*backend].requests.record(self.status);
                route.latency.observe(elapsed.as_secs_f64());
            }
            None => self.listener.metrics.unrouted.record(self.status),
        }
        self.ctx.activity.request_finished();
        if let (Some(log), Some(writer)) = (&self.log, &*self.ctx.shared.access_log.load()) {
            writer.send(self.log_line(log, elapsed.as_secs_f64(), sent, complete));
        }
    }

    fn log_line(&self, log: &LogFields, secs: f64, sent: u64, complete: bool) -> String {
        let mut s = String::with_capacity(384);
        s.push_str("{\"time\":\"");
        s.push_str(&rfc3339_millis(SystemTime::now()));
        s.push_str("\",\"listener\":");
        push_json_str(&mut s, &self.listener.name);
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
        let _ = write!(s, ",\"attempts\":{}", self.attempts);
        s.push_str(",\"fault\":");
        opt_str(&mut s, self.fault);
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

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.recorded {
            self.status = StatusCode::from_u16(CLIENT_CLOSED).expect("a valid status code");
            self.record(0, false);
        }
    }
}

fn opt_str(s: &mut String, v: Option<&str>) {
    match v {
        Some(v) => push_json_str(s, v),
        None => s.push_str("null"),
    }
}
