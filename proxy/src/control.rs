//! The sidecar side of the control plane's watch (docs/control-plane.md).
//!
//! One long-lived HTTP/2 connection; on it, one `POST /v1/watch` after another. Each request
//! says which version the sidecar last received and whether it applied it (ACK) or refused it
//! (NACK, with the reason); the control plane answers with a newer version as soon as it has
//! one. A received version is validated, then applied through the same path as a reload of
//! the config file, so listeners are kept, in-flight requests finish on their snapshot, and a
//! listener that cannot be bound refuses the whole version.
//!
//! When the control plane is unreachable the sidecar keeps serving the last config it applied,
//! for as long as that lasts, and reconnects with jittered exponential backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use remora_config::model::{AccessLog, Admin, Config, ListenerKind};
use remora_config::protocol::{
    CERTIFICATE_PATH, CertificateRequest, CertificateResponse, EndpointHealth, HEALTH_PATH,
    HEALTH_REFRESH_SECS, HealthReport, WATCH_PATH, WatchRequest, WatchResponse,
};
use tokio::sync::{mpsc, oneshot};

use crate::context::Shared;
use crate::retry::backoff::Backoff;

/// How long the control plane may hold a watch with nothing new.
pub const HOLD: Duration = Duration::from_secs(30);

/// Reconnects start at 100 ms and back off to 10 s: a restarted control plane is found within
/// a second, and a thousand sidecars of a dead one make a request a second between them
/// per 10 sidecars.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// A version that came in, for the main loop to apply; the reply says whether it was.
pub struct Reload {
    pub config: Config,
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// Who this sidecar is, and what it sets itself whatever the control plane sends.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port` of the control plane (a Kubernetes Service name resolves to any replica).
    pub address: String,
    pub node: String,
    pub service: String,
    pub namespace: String,
    /// `https://`: TLS, verified against the control plane's CA.
    pub tls: Option<ControlTls>,
    /// Bind the inbound/outbound listeners here instead (several sidecars on one host).
    pub inbound: Option<SocketAddr>,
    pub outbound: Option<SocketAddr>,
    /// Added to the inbound and outbound listeners' `opaque_ports`.
    pub opaque_ports: Vec<u16>,
    /// The admin listener bound at start (it cannot move).
    pub admin: Option<Admin>,
    pub access_log: Option<AccessLog>,
    pub workers: Option<usize>,
    /// Ask the control plane for a workload certificate (mTLS), proving who this is with a
    /// token.
    pub identity: Option<IdentityOptions>,
}

#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// Read from `--identity-token-file` (in Kubernetes, the service-account token).
    pub token: String,
    pub service_account: String,
}

impl Options {
    /// Applies the sidecar's own settings to a received config.
    pub fn localize(&self, config: &mut Config) {
        for listener in &mut config.listeners {
            match (listener.name.as_str(), self.inbound, self.outbound) {
                ("inbound", Some(a), _) | ("outbound", _, Some(a)) => listener.address = a,
                _ => {}
            }
            // Only where an opaque connection has somewhere to go (the mesh's inbound
            // listener has the workload's cluster; its outbound one is transparent).
            let takes_opaque = listener.transparent
                || matches!(
                    listener.kind,
                    ListenerKind::Auto {
                        cluster: Some(_),
                        ..
                    }
                );
            if takes_opaque && matches!(listener.name.as_str(), "inbound" | "outbound") {
                listener.opaque_ports.extend(&self.opaque_ports);
                listener.opaque_ports.sort_unstable();
                listener.opaque_ports.dedup();
            }
        }
        config.admin = self.admin.clone();
        if let Some(log) = &self.access_log {
            config.access_log = log.clone();
        }
        if let Some(n) = self.workers {
            config.runtime.workers = n;
        }
    }
}

/// `http://host:port`, `https://host:port` or `host:port`, as the `--control-plane` flag
/// takes it: the address, and whether it is TLS.
pub fn parse_address(url: &str) -> Result<(String, bool), String> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok((rest.into(), tls))
        }
        _ => Err(format!("'{url}' is not http[s]://HOST:PORT")),
    }
}

/// TLS to the control plane: the client config (its roots) and the name its certificate must
/// have (the host of `https://HOST:PORT`).
#[derive(Debug, Clone)]
pub struct ControlTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl ControlTls {
    /// For `address` (`host:port`), trusting `roots_pem`.
    pub fn new(address: &str, roots_pem: &str) -> Result<ControlTls, String> {
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = rustls_pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("'{host}' cannot be checked against a certificate: {e}"))?;
        Ok(ControlTls {
            config: crate::tls::control_plane_client(roots_pem)?,
            server_name,
        })
    }
}

/// Runs the watch until the proxy stops.
pub async fn run(
    options: Options,
    apply: mpsc::UnboundedSender<Reload>,
    shared: std::sync::Arc<Shared>,
) {
    if let Some(identity) = options.identity.clone() {
        // The first certificate before the first config: a config with mTLS would otherwise
        // fail closed until it came.
        let (first_tx, first) = oneshot::channel();
        tokio::spawn(keep_identity(
            options.address.clone(),
            options.tls.clone(),
            options.namespace.clone(),
            identity,
            first_tx,
        ));
        let _ = first.await;
    }
    let mut state = Watch::default();
    let mut failures = 0u32;
    loop {
        match session(&options, &apply, &shared, &mut state, &mut failures).await {
            Ok(()) => return,
            Err(e) => {
                let delay = reconnect_delay(failures, &mut crate::rng::ThreadRng);
                failures = failures.saturating_add(1);
                tracing::warn!(
                    control_plane = %options.address,
                    error = %e,
                    retry_in = ?delay,
                    "control plane unreachable; serving the last config applied"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What the watch reports next: the version last received, and what became of it.
#[derive(Debug, Default)]
struct Watch {
    version: String,
    error: Option<String>,
    /// The YAML last applied: the same config again (another mesh file changed) is
    /// acknowledged without a reload.
    applied_yaml: Option<String>,
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// One connection's worth of watching. `Ok` only when the proxy is shutting down.
async fn session(
    options: &Options,
    apply: &mpsc::UnboundedSender<Reload>,
    shared: &std::sync::Arc<Shared>,
    state: &mut Watch,
    failures: &mut u32,
) -> Result<(), String> {
    let mut sender = connect(&options.address, options.tls.as_ref()).await?;
    // Health reports go on their own streams of the same connection, beside the held watch.
    let reporter = tokio::spawn(report_health(
        sender.clone(),
        options.address.clone(),
        options.node.clone(),
        shared.clone(),
    ));
    let _stop_reporting = AbortOnDrop(reporter);
    loop {
        let request = WatchRequest {
            node: options.node.clone(),
            service: options.service.clone(),
            namespace: options.namespace.clone(),
            version: state.version.clone(),
            error: state.error.clone(),
            hold_ms: HOLD.as_millis() as u64,
        };
        let (status, body) = post(&mut sender, &options.address, &request).await?;
        *failures = 0;
        match status {
            hyper::StatusCode::OK => {
                let response: WatchResponse = serde_json::from_slice(&body)
                    .map_err(|e| format!("a watch answer that is not one: {e}"))?;
                if !receive(options, apply, state, response).await {
                    return Ok(());
                }
            }
            hyper::StatusCode::NOT_MODIFIED => {}
            other => {
                let text = String::from_utf8_lossy(&body);
                return Err(format!("the watch was answered {other}: {text}"));
            }
        }
    }
}

/// Validates and applies a version; false when the proxy is shutting down.
async fn receive(
    options: &Options,
    apply: &mpsc::UnboundedSender<Reload>,
    state: &mut Watch,
    response: WatchResponse,
) -> bool {
    state.version = response.version.clone();
    if !response.trust_bundle.is_empty()
        && let Err(e) = crate::tls::global().set_bundle(&response.trust_bundle)
    {
        tracing::error!(error = %e, "trust bundle from the control plane refused");
    }
    if state.applied_yaml.as_deref() == Some(response.config.as_str()) {
        state.error = None;
        tracing::info!(version = %response.version, "config version unchanged for this sidecar");
        return true;
    }
    let label = format!("<control plane version {}>", response.version);
    let mut config = match remora_config::load_str(&label, &response.config) {
        Ok(c) => c,
        Err(d) => {
            state.error = Some(format!("invalid config: {d}"));
            tracing::error!(version = %response.version, "refused: {d}");
            return true;
        }
    };
    options.localize(&mut config);
    let (tx, rx) = oneshot::channel();
    let reload = Reload {
        config,
        reply: Some(tx),
    };
    if apply.send(reload).is_err() {
        return false;
    }
    match rx.await {
        Ok(Ok(())) => {
            tracing::info!(version = %response.version, generation = response.generation, "config version applied");
            state.error = None;
            state.applied_yaml = Some(response.config);
        }
        Ok(Err(reason)) => {
            tracing::error!(version = %response.version, %reason, "config version refused");
            state.error = Some(reason);
        }
        Err(_) => return false,
    }
    true
}

/// Aborts the task when dropped (the session it belongs to ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every endpoint of every cluster and its state, as `/clusters` shows it.
pub fn endpoint_health(shared: &Shared) -> Vec<EndpointHealth> {
    let snapshot = shared.snapshot.load();
    let now = tokio::time::Instant::now();
    let mut out = Vec::new();
    for cluster in &snapshot.clusters {
        let states = cluster.health.snapshot(now);
        for (endpoint, state) in cluster.endpoints.iter().zip(&states) {
            out.push(EndpointHealth {
                cluster: cluster.name.clone(),
                address: endpoint.address.to_string(),
                state: match endpoint.weight {
                    0 => "drained",
                    _ => state.state(),
                }
                .to_owned(),
            });
        }
    }
    out
}

/// Sends the endpoints' health when it changes (looked at every second), and at least every
/// [`HEALTH_REFRESH_SECS`] seconds.
async fn report_health(
    mut sender: Sender,
    address: String,
    node: String,
    shared: std::sync::Arc<Shared>,
) {
    let mut last: Option<(Vec<EndpointHealth>, tokio::time::Instant)> = None;
    let refresh = Duration::from_secs(HEALTH_REFRESH_SECS);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let endpoints = endpoint_health(&shared);
        let due = match &last {
            None => true,
            Some((sent, at)) => *sent != endpoints || now.duration_since(*at) >= refresh,
        };
        if !due {
            continue;
        }
        let report = HealthReport {
            node: node.clone(),
            endpoints: endpoints.clone(),
        };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let Ok(req) = http::Request::post(format!("http://{address}{HEALTH_PATH}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
        else {
            return;
        };
        if sender.ready().await.is_err() {
            return;
        }
        match sender.send_request(req).await {
            Ok(resp) if resp.status().is_success() => last = Some((endpoints, now)),
            Ok(resp) => tracing::debug!(status = %resp.status(), "health report refused"),
            Err(_) => return,
        }
    }
}

async fn connect(address: &str, tls: Option<&ControlTls>) -> Result<Sender, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for addr in addrs {
        let connect = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return match tls {
                    None => handshake(stream, addr).await,
                    Some(tls) => {
                        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                        let name = tls.server_name.clone();
                        let stream = tokio::time::timeout(
                            Duration::from_secs(5),
                            connector.connect(name, stream),
                        )
                        .await
                        .map_err(|_| format!("TLS handshake with {addr} timed out"))?
                        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
                        handshake(stream, addr).await
                    }
                };
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => last = format!("connecting to {addr} timed out"),
        }
    }
    Err(last)
}

/// HTTP/2 on a connected stream (plain or TLS), its connection driven by a task of its own.
async fn handshake<S>(stream: S, addr: SocketAddr) -> Result<Sender, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "control plane connection closed");
        }
    });
    Ok(sender)
}

async fn post(
    sender: &mut Sender,
    address: &str,
    request: &WatchRequest,
) -> Result<(hyper::StatusCode, Bytes), String> {
    post_json(sender, address, WATCH_PATH, request).await
}

async fn post_json<T: serde::Serialize>(
    sender: &mut Sender,
    address: &str,
    path: &str,
    request: &T,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    let req = http::Request::post(format!("http://{address}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    // A held watch answers within HOLD; past that and a margin, the connection is dead.
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(HOLD + Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "the watch went unanswered".to_owned())?
}

/// Keeps a valid workload certificate: asks for one, installs it, and asks again at about 70%
/// of its lifetime; after a failure, again soon (never past the time left). `first` is told
/// once the first one is in, or the first attempt failed (the watch then starts anyway).
async fn keep_identity(
    address: String,
    control_tls: Option<ControlTls>,
    namespace: String,
    identity: IdentityOptions,
    first: oneshot::Sender<()>,
) {
    let tls = crate::tls::global();
    let mut first = Some(first);
    let mut failures = 0u32;
    loop {
        let asked = request_certificate(&address, control_tls.as_ref(), &namespace, &identity);
        let wait = match asked.await {
            Ok(workload) => {
                failures = 0;
                // Counted from now, not from `not_before`: the CA backdates that a minute for
                // clock skew, which would otherwise eat into a short lifetime (and renew a 20 s
                // certificate at once, in a loop).
                let now = std::time::SystemTime::now();
                let wait = crate::tls::workload::refresh_in(
                    workload.not_before.max(now),
                    workload.not_after,
                    now,
                    &mut crate::rng::ThreadRng,
                );
                tracing::info!(
                    identity = %workload.id,
                    serial = %workload.serial,
                    renew_in = ?wait,
                    "workload certificate installed"
                );
                wait
            }
            Err(e) => {
                let left = tls
                    .workload()
                    .and_then(|w| {
                        w.not_after
                            .duration_since(std::time::SystemTime::now())
                            .ok()
                    })
                    .unwrap_or_default();
                let wait = crate::tls::workload::retry_in(failures, left);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, retry_in = ?wait, time_left = ?left, "no workload certificate");
                wait
            }
        };
        if let Some(first) = first.take() {
            let _ = first.send(());
        }
        tokio::time::sleep(wait).await;
    }
}

/// One CSR, on a connection of its own (rare: once per lifetime).
async fn request_certificate(
    address: &str,
    tls: Option<&ControlTls>,
    namespace: &str,
    identity: &IdentityOptions,
) -> Result<std::sync::Arc<crate::tls::Workload>, String> {
    let (csr, key) = crate::tls::workload::new_request(namespace, &identity.service_account)?;
    let request = CertificateRequest {
        token: identity.token.clone(),
        namespace: namespace.to_owned(),
        service_account: identity.service_account.clone(),
        csr,
    };
    let mut sender = connect(address, tls).await?;
    let (status, body) = post_json(&mut sender, address, CERTIFICATE_PATH, &request).await?;
    if status != hyper::StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "the certificate request was answered {status}: {text}"
        ));
    }
    let response: CertificateResponse = serde_json::from_slice(&body)
        .map_err(|e| format!("a certificate answer that is not one: {e}"))?;
    crate::tls::global().install(&response.certificate_chain, key, &response.trust_bundle)
}

/// The delay before reconnect number `attempt + 1`: full jitter under 100 ms × 2^attempt,
/// capped at 10 s.
pub fn reconnect_delay<R: Rng + ?Sized>(attempt: u32, rng: &mut R) -> Duration {
    Backoff::try_new(RECONNECT_BASE, RECONNECT_MAX)
        .expect("base <= max")
        .delay(attempt, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            parse_address("http://127.0.0.1:15010").unwrap(),
            ("127.0.0.1:15010".into(), false)
        );
        assert_eq!(
            parse_address("remora.remora-system.svc:15010/").unwrap(),
            ("remora.remora-system.svc:15010".into(), false)
        );
        assert_eq!(
            parse_address("https://remora.remora-system.svc:15012").unwrap(),
            ("remora.remora-system.svc:15012".into(), true)
        );
        assert!(parse_address("http://nohost").is_err());
        assert!(parse_address("https://nohost").is_err());
    }

    /// Reconnects spread over [0, cap], the cap doubling from 100 ms up to 10 s.
    #[test]
    fn reconnects_back_off_with_full_jitter() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (attempt, cap_ms) in [
            (0, 100),
            (1, 200),
            (3, 800),
            (6, 6400),
            (7, 10_000),
            (30, 10_000),
        ] {
            let draws: Vec<Duration> = (0..2000)
                .map(|_| reconnect_delay(attempt, &mut rng))
                .collect();
            let cap = Duration::from_millis(cap_ms);
            assert!(draws.iter().all(|d| *d <= cap), "attempt {attempt}");
            let mean = draws.iter().sum::<Duration>().as_secs_f64() / draws.len() as f64;
            let expected = cap.as_secs_f64() / 2.0;
            // Uniform on [0, cap]: the mean of 2000 draws is within 5 sd (sd = cap/sqrt(12*2000)).
            let sd = cap.as_secs_f64() / (12.0f64 * 2000.0).sqrt();
            assert!(
                (mean - expected).abs() < 5.0 * sd,
                "attempt {attempt}: mean {mean}"
            );
        }
    }

    /// `--opaque-ports` joins the mesh's own on the inbound and outbound listeners, sorted and
    /// once each, and the result is still a valid config.
    #[test]
    fn opaque_ports_from_the_flag_join_the_mesh_ones() {
        let text = "\
services:
  - name: db
    app: 127.0.0.1:5432
    opaque_ports: [5432]
    cluster: { endpoints: [{ address: 10.0.0.7:5432 }] }
  - name: web
    app: 127.0.0.1:8080
    calls: [db]
";
        let mesh = remora_config::mesh::load(&[remora_config::mesh::Source {
            name: "m.yaml".into(),
            text: text.into(),
        }])
        .unwrap();
        let mut config = mesh.service("web").unwrap().config.clone();
        let options = Options {
            address: "cp:15010".into(),
            tls: None,
            node: "web-1".into(),
            service: "web".into(),
            namespace: "default".into(),
            inbound: None,
            outbound: None,
            opaque_ports: vec![9000, 5432, 25],
            admin: None,
            access_log: None,
            workers: None,
            identity: None,
        };
        options.localize(&mut config);
        let ports: Vec<(&str, &[u16])> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), &l.opaque_ports[..]))
            .collect();
        assert_eq!(
            ports,
            [
                ("inbound", &[25, 5432, 9000][..]),
                ("outbound", &[25, 5432, 9000][..])
            ]
        );
        let yaml = remora_config::to_yaml(&config);
        remora_config::load_str("localized", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    }
}
