//! Starting, running, reloading and draining a proxy.
//!
//! Binding and serving are separate steps so a caller (the CLI, or a test) learns the real
//! addresses of port-0 listeners before traffic starts. Each worker is a single-threaded tokio
//! runtime on its own thread, with an accept loop on every listener socket. The main thread runs
//! a small runtime for the admin listener, config reloads and the shutdown sequence; it is the
//! only place that binds or closes listener sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use remora_config::model::Config;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::access_log::AccessLog;
use crate::context::{ConnCtx, Shared};
use crate::discovery::{self, Resolved};
use crate::metrics::Metrics;
use crate::snapshot::{ListenerHandle, ListenerRtKind, Snapshot};

/// The longest wait between two sweeps for pooled upstream connections that outlived their
/// idle timeout.
const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// A proxy whose sockets are bound but which serves nothing yet.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Listeners,
    admin: Option<std::net::TcpListener>,
    /// Kept apart from the socket, which `run` hands to the admin server.
    admin_addr: Option<SocketAddr>,
    /// The admin status listener (`/live`, `/ready`, `/metrics` only), and its address.
    status: Option<std::net::TcpListener>,
    status_addr: Option<SocketAddr>,
    workers: usize,
    /// The last good DNS answer of each dns cluster: every snapshot is built with them.
    resolved: Resolved,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub admin: Option<SocketAddr>,
    pub status: Option<SocketAddr>,
    /// `(listener name, address)` in config order.
    pub listeners: Vec<(String, SocketAddr)>,
}

/// A callback for [`RunOptions::on_bound`].
pub type OnBound = Box<dyn Fn(&BoundAddrs) + Send>;

/// What [`Proxy::run`] does besides serving.
#[derive(Default)]
pub struct RunOptions {
    /// Watch this config file and apply valid changes to it (standalone mode), starting from
    /// the bytes the running config was loaded from.
    pub config_file: Option<(PathBuf, Vec<u8>)>,
    /// Called with the bound addresses whenever they change (after a reload adds or moves a
    /// listener); the CLI writes them to `--write-addrs`.
    pub on_bound: Option<OnBound>,
    /// Take the config from a control plane: not ready until its first version is applied,
    /// and each version is acknowledged or refused back to it.
    pub control_plane: Option<crate::control::Options>,
    /// Drain on SIGTERM or SIGINT (a second one exits at once). Without it, only the admin
    /// endpoint or [`crate::context::Drain::request`] stops the proxy.
    pub handle_signals: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} to {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// The listener sockets, by name, in config order.
struct Listeners(Vec<BoundListener>);

struct BoundListener {
    handle: Arc<ListenerHandle>,
    socket: std::net::TcpListener,
    /// As configured (port 0 stays 0), to tell whether a reload moved the listener.
    configured: SocketAddr,
}

impl Proxy {
    pub fn bind(config: Config) -> Result<Proxy, StartError> {
        let metrics = Metrics::new();
        let access_log = match config.access_log.enabled {
            true => {
                Some(AccessLog::start(&config.access_log.target).map_err(StartError::AccessLog)?)
            }
            false => None,
        };
        let admin = match &config.admin {
            Some(a) => Some(bind("the admin listener", a.address)?),
            None => None,
        };
        let status = match config.admin.as_ref().and_then(|a| a.status_address) {
            Some(addr) => Some(bind("the admin status listener", addr)?),
            None => None,
        };
        let workers = config.runtime.workers;
        let resolved = Resolved::default();
        let snapshot = Snapshot::build(Arc::new(config), &metrics, None, &resolved);
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        for (l, rt) in snapshot.config.listeners.iter().zip(&snapshot.listeners) {
            listeners.push(BoundListener {
                handle: ListenerHandle::new(rt.clone()),
                socket: bind(&format!("listener {}", l.name), l.address)?,
                configured: l.address,
            });
        }
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let status_addr = status.as_ref().and_then(|l| l.local_addr().ok());
        Ok(Proxy {
            shared: Arc::new(Shared::new(snapshot, metrics, access_log)),
            listeners: Listeners(listeners),
            admin,
            admin_addr,
            status,
            status_addr,
            workers,
            resolved,
        })
    }

    pub fn addrs(&self) -> BoundAddrs {
        BoundAddrs {
            admin: self.admin_addr,
            status: self.status_addr,
            listeners: self.listeners.addrs(),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until a signal (or the admin endpoint) asks to stop, then drains: stops
    /// accepting, lets in-flight requests finish for up to `runtime.drain_timeout`, and returns.
    /// A second signal during the drain ends it at once. Blocks the calling thread.
    pub fn run(mut self, mut options: RunOptions) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (workers, threads) = start_workers(self.workers, &self.shared, stop_rx)?;
        for l in &self.listeners.0 {
            serve_listener(&workers, &self.shared, l)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        rt.block_on(async {
            for (socket, scope) in [
                (self.admin.take(), crate::admin::Scope::All),
                (self.status.take(), crate::admin::Scope::Status),
            ] {
                let Some(socket) = socket else { continue };
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(l) => {
                        tokio::spawn(crate::admin::serve(l, self.shared.clone(), scope));
                    }
                    Err(e) => tracing::error!(error = %e, ?scope, "admin listener unusable"),
                }
            }
            let (reload_tx, mut reloads) = mpsc::unbounded_channel();
            let from_control_plane = options.control_plane.is_some();
            if let Some((path, loaded)) = options.config_file.take() {
                crate::reload::watch(path, loaded, reload_tx.clone(), self.shared.clone());
            }
            if let Some(cp) = options.control_plane.take() {
                tokio::spawn(crate::control::run(cp, reload_tx, self.shared.clone()));
            }
            let mut signals = Signals::new(options.handle_signals);
            // Health checks, DNS resolution and the pick sampler run here, on the main
            // runtime: off the workers that serve requests.
            for cluster in &self.shared.snapshot.load().clusters {
                cluster.start_health();
            }
            let (found_tx, mut found) = mpsc::unbounded_channel();
            let mut discovery = discovery::Tasks::new(
                found_tx,
                self.shared.metrics.clone(),
                self.shared.dns.clone(),
            );
            let mut warmup = Warmup::new(&self.shared.snapshot.load().config);
            discovery.reconcile(&self.shared.snapshot.load().config);
            tokio::spawn(sample_picks(self.shared.clone()));
            if from_control_plane {
                // Nothing to serve yet: ready once the first version is applied (and its dns
                // clusters have answered).
                warmup.await_config();
                tracing::info!("waiting for the first config from the control plane");
            }
            warmup.check(&self.shared);
            loop {
                tokio::select! {
                    () = signals.recv() => break,
                    () = self.shared.drain.requested() => break,
                    Some(reload) = reloads.recv() => {
                        let applied = self.apply(reload.config, &workers);
                        if applied.is_ok() {
                            let config = self.shared.snapshot.load().config.clone();
                            discovery.reconcile(&config);
                            if let Some(on_bound) = &options.on_bound {
                                on_bound(&self.addrs());
                            }
                            warmup.configured(&config);
                            warmup.check(&self.shared);
                        }
                        if let Some(reply) = reload.reply {
                            let _ = reply.send(applied);
                        }
                    }
                    Some(answer) = found.recv() => {
                        warmup.answered(&answer.cluster);
                        self.discovered(answer);
                        warmup.check(&self.shared);
                    }
                    () = warmup.timed_out() => warmup.give_up(&self.shared),
                }
            }
            self.drain(&mut signals).await;
        });
        let _ = stop_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    }

    /// Stops accepting, tells every connection to finish, and waits for them, for the drain
    /// timeout or until a second signal.
    async fn drain(&mut self, signals: &mut Signals) {
        let timeout = self.shared.snapshot.load().config.runtime.drain_timeout;
        let open = self.shared.drain.open_connections();
        tracing::info!(?timeout, open, "draining");
        self.shared.drain.start();
        // Close the listening sockets so new connections are refused rather than left in the
        // accept queue (the accept loops drop their copies as they stop).
        self.listeners.0.clear();
        tokio::select! {
            () = self.shared.drain.all_closed() => tracing::info!("drained"),
            () = tokio::time::sleep(timeout) => tracing::warn!(
                open = self.shared.drain.open_connections(),
                "drain timeout reached; exiting with connections open"
            ),
            () = signals.recv() => tracing::warn!("second signal; exiting now"),
        }
    }

    /// Applies a validated config. Listener sockets stay open unless their address changed;
    /// new ones are bound before anything is swapped, so a config that cannot be bound changes
    /// nothing. Returns why not when it was not applied.
    fn apply(&mut self, config: Config, workers: &[Handle]) -> Result<(), String> {
        let metrics = &self.shared.metrics;
        let previous = self.shared.snapshot.load_full();
        warn_restart_only(&previous.config, &config);
        let snapshot = Snapshot::build(Arc::new(config), metrics, Some(&previous), &self.resolved);
        // Everything that can fail is done before anything is swapped: a config that cannot
        // be bound or whose access log cannot be opened changes nothing.
        let prepared = self.listeners.plan(&snapshot).and_then(|plan| {
            let log = &snapshot.config.access_log;
            let writer = if *log == previous.config.access_log {
                None
            } else {
                let writer = log
                    .enabled
                    .then(|| AccessLog::start(&log.target))
                    .transpose();
                Some(writer.map_err(StartError::AccessLog)?)
            };
            Ok((plan, writer))
        });
        let (plan, writer) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; the previous config stays");
                metrics.config_reload(false);
                return Err(e.to_string());
            }
        };
        if let Some(writer) = writer {
            self.shared.access_log.store(writer.map(Arc::new));
        }
        let started = self.listeners.commit(plan, &snapshot);
        for l in started {
            if let Err(e) = serve_listener(workers, &self.shared, &self.listeners.0[l]) {
                tracing::error!(error = %e, "cannot serve a new listener");
            }
        }
        // New clusters start their checks; reused ones already run theirs. Clusters left behind
        // stop theirs when the last request using them ends.
        for cluster in &snapshot.clusters {
            cluster.start_health();
        }
        self.resolved.retain(&snapshot.config);
        self.shared.snapshot.store(Arc::new(snapshot));
        metrics.config_reload(true);
        tracing::info!("config reloaded");
        Ok(())
    }

    /// Applies a new DNS answer for a cluster: the snapshot is built again from the same config
    /// with it, which rebuilds only that cluster (keeping what its remaining endpoints know) and
    /// the listeners' route tables that point to it, and swapped in as a reload is. Requests
    /// in flight keep the cluster they picked their endpoint from.
    fn discovered(&mut self, found: discovery::Discovered) {
        let previous = self.shared.snapshot.load_full();
        let cluster = found.cluster.clone();
        if !self.resolved.update(&previous.config, found) {
            return;
        }
        let snapshot = Snapshot::build(
            previous.config.clone(),
            &self.shared.metrics,
            Some(&previous),
            &self.resolved,
        );
        // Same config, so the same listeners in the same order.
        for (bound, rt) in self.listeners.0.iter().zip(&snapshot.listeners) {
            bound.handle.store(rt.clone());
        }
        for c in &snapshot.clusters {
            c.start_health();
        }
        self.shared.snapshot.store(Arc::new(snapshot));
        tracing::info!(%cluster, "endpoints updated from dns");
    }
}

/// `/ready` waits for each dns cluster's first answer, for up to
/// [`discovery::WARMUP_TIMEOUT`] (Envoy's cluster warming): traffic sent to a pod that just
/// started should not meet 503 `no-endpoint` because DNS had not answered yet.
struct Warmup {
    /// Dns clusters of the first config still without an answer.
    waiting: std::collections::HashSet<String>,
    deadline: tokio::time::Instant,
    done: bool,
    /// A control-plane sidecar has no config to serve until the first version is applied.
    awaiting_config: bool,
}

impl Warmup {
    fn new(config: &Config) -> Self {
        Warmup {
            waiting: dns_clusters(config),
            deadline: tokio::time::Instant::now() + discovery::WARMUP_TIMEOUT,
            done: false,
            awaiting_config: false,
        }
    }

    /// Not ready until [`Warmup::configured`].
    fn await_config(&mut self) {
        self.awaiting_config = true;
    }

    /// The first config arrived (from the control plane): warming waits for its dns clusters.
    fn configured(&mut self, config: &Config) {
        if self.awaiting_config {
            self.awaiting_config = false;
            self.waiting = dns_clusters(config);
            self.deadline = tokio::time::Instant::now() + discovery::WARMUP_TIMEOUT;
        }
    }

    fn answered(&mut self, cluster: &str) {
        self.waiting.remove(cluster);
    }

    /// Ready once nothing is waiting.
    fn check(&mut self, shared: &Shared) {
        if !self.done && !self.awaiting_config && self.waiting.is_empty() {
            self.done = true;
            shared.set_ready();
            tracing::info!("ready");
        }
    }

    /// Resolves at the deadline while still warming; never after (nor before a config).
    async fn timed_out(&self) {
        if self.done || self.awaiting_config {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.deadline).await;
    }

    fn give_up(&mut self, shared: &Shared) {
        let waiting: Vec<&String> = self.waiting.iter().collect();
        tracing::warn!(clusters = ?waiting, timeout = ?discovery::WARMUP_TIMEOUT, "no dns answer yet; ready anyway, those clusters answer 503 until one arrives");
        self.waiting.clear();
        self.check(shared);
    }
}

fn dns_clusters(config: &Config) -> std::collections::HashSet<String> {
    config
        .clusters
        .iter()
        .filter(|c| matches!(c.discovery, remora_config::model::Discovery::Dns(_)))
        .map(|c| c.name.clone())
        .collect()
}

/// What a reload does to each listener of the new config, in its order.
enum Step {
    /// Same name and address: keep the socket, swap the runtime.
    Keep(usize),
    /// Renamed on the same fixed address: the old listener's socket, under the new name.
    Adopt(usize),
    /// New, or moved: a socket bound for it.
    Bind(std::net::TcpListener),
}

impl Listeners {
    fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.0
            .iter()
            .filter_map(|l| Some((l.handle.name.clone(), l.socket.local_addr().ok()?)))
            .collect()
    }

    /// Binds what the new config needs, without changing anything yet.
    fn plan(&self, snapshot: &Snapshot) -> Result<Vec<Step>, StartError> {
        let current: HashMap<(&str, SocketAddr), usize> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, l)| ((l.handle.name.as_str(), l.configured), i))
            .collect();
        let kept: std::collections::HashSet<usize> = snapshot
            .config
            .listeners
            .iter()
            .filter_map(|l| current.get(&(l.name.as_str(), l.address)).copied())
            .collect();
        // A socket on a fixed port whose listener is gone can serve a listener that takes its
        // address under another name; binding a second socket there would fail.
        let by_address: HashMap<SocketAddr, usize> = self
            .0
            .iter()
            .enumerate()
            .filter(|(i, l)| l.configured.port() != 0 && !kept.contains(i))
            .map(|(i, l)| (l.configured, i))
            .collect();
        snapshot
            .config
            .listeners
            .iter()
            .map(|l| match current.get(&(l.name.as_str(), l.address)) {
                Some(&i) => Ok(Step::Keep(i)),
                None => match by_address.get(&l.address) {
                    Some(&i) => Ok(Step::Adopt(i)),
                    None => bind(&format!("listener {}", l.name), l.address).map(Step::Bind),
                },
            })
            .collect()
    }

    /// Swaps in the new listeners; stops the ones that are gone. Returns the indices of
    /// listeners that need accept loops.
    fn commit(&mut self, plan: Vec<Step>, snapshot: &Snapshot) -> Vec<usize> {
        let mut old: Vec<Option<BoundListener>> = self.0.drain(..).map(Some).collect();
        let mut started = Vec::new();
        for (i, step) in plan.into_iter().enumerate() {
            let rt = snapshot.listeners[i].clone();
            let bound = match step {
                Step::Keep(j) => {
                    let kept = old[j].take().expect("each listener is kept at most once");
                    kept.handle.store(rt);
                    kept
                }
                Step::Adopt(j) => {
                    let old = old[j].take().expect("each socket is adopted at most once");
                    tracing::info!(from = %old.handle.name, to = %rt.name, "listener renamed");
                    old.handle.stop();
                    started.push(i);
                    BoundListener {
                        handle: ListenerHandle::new(rt),
                        socket: old.socket,
                        configured: old.configured,
                    }
                }
                Step::Bind(socket) => {
                    started.push(i);
                    BoundListener {
                        handle: ListenerHandle::new(rt),
                        socket,
                        configured: snapshot.config.listeners[i].address,
                    }
                }
            };
            self.0.push(bound);
        }
        for gone in old.into_iter().flatten() {
            tracing::info!(listener = %gone.handle.name, "listener closed by reload");
            gone.handle.stop();
        }
        started
    }
}

/// Settings that only take effect at start; a reload that changes them says so.
fn warn_restart_only(old: &Config, new: &Config) {
    if old.admin != new.admin {
        tracing::warn!("admin address changes take effect at the next restart");
    }
    if old.runtime.workers != new.runtime.workers {
        tracing::warn!("runtime.workers changes take effect at the next restart");
    }
}

fn bind(what: &str, addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let err = |source| StartError::Bind {
        what: what.to_owned(),
        addr,
        source,
    };
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(err)?;
    // Restarting the proxy must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    Ok(socket.into())
}

type Threads = Vec<std::thread::JoinHandle<()>>;

/// Starts the worker threads; returns their runtime handles once all are running.
fn start_workers(
    count: usize,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
) -> Result<(Vec<Handle>, Threads), StartError> {
    let (handles_tx, handles_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(count);
    for index in 0..count {
        let (shared, mut stop, handles_tx) = (shared.clone(), stop.clone(), handles_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("remora-worker-{index}"))
            .spawn(move || {
                crate::worker::set(index);
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = index, error = %e, "cannot start worker runtime");
                        return;
                    }
                };
                let _ = handles_tx.send(rt.handle().clone());
                // Dropped now so the starter's collect() ends once every worker reported.
                drop(handles_tx);
                rt.block_on(async move {
                    tokio::spawn(reap_loop(shared));
                    let _ = stop.wait_for(|stop| *stop).await;
                });
            })
            .map_err(StartError::Runtime)?;
        threads.push(thread);
    }
    drop(handles_tx);
    let handles: Vec<Handle> = handles_rx.iter().collect();
    if handles.len() != count {
        return Err(StartError::Runtime(std::io::Error::other(
            "a worker runtime failed to start",
        )));
    }
    Ok((handles, threads))
}

/// Starts an accept loop for `listener` on every worker.
fn serve_listener(
    workers: &[Handle],
    shared: &Arc<Shared>,
    listener: &BoundListener,
) -> Result<(), StartError> {
    for worker in workers {
        let socket = listener.socket.try_clone().map_err(StartError::Runtime)?;
        let (shared, handle) = (shared.clone(), listener.handle.clone());
        worker.spawn(async move {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(socket) => accept_loop(shared, handle, socket).await,
                Err(e) => tracing::error!(error = %e, "listener unusable"),
            }
        });
    }
    Ok(())
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: Arc<ListenerHandle>,
    socket: tokio::net::TcpListener,
) {
    let mut stopped = listener.stopped();
    let mut draining = shared.drain.watch();
    loop {
        let (stream, peer) = tokio::select! {
            res = socket.accept() => match res {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = until_set(&mut stopped) => return,
            () = until_set(&mut draining) => return,
        };
        let _ = stream.set_nodelay(true);
        let rt = listener.load();
        let http = !matches!(rt.kind, ListenerRtKind::Tcp(_));
        let ctx = Arc::new(ConnCtx::new(shared.clone(), listener.clone(), peer, http));
        tokio::spawn(serve_connection(ctx, stream, rt));
    }
}

/// Where an accepted connection goes, in its own task: redirected ones by their original
/// destination (transparent listeners: outside the mesh, passed through; a mesh endpoint's
/// opaque port, bytes to it), then mTLS if the listener has it, then by what
/// [`Forward`] says: another port of the workload, an opaque port, or the listener's kind.
async fn serve_connection(
    ctx: Arc<ConnCtx>,
    stream: tokio::net::TcpStream,
    rt: Arc<crate::snapshot::ListenerRt>,
) {
    let timeouts = crate::http::Timeouts {
        idle: rt.limits.idle_timeout,
        header_read: rt.limits.header_read_timeout,
    };
    let redirected = match rt.transparent || rt.follow_original_port || !rt.opaque_ports.is_empty()
    {
        true => redirected_to(&stream),
        false => None,
    };
    // The port the client connected to (the original destination's, when redirected), where
    // opaque ports or authorization rules (which may name ports) need it.
    let dialled = match !rt.opaque_ports.is_empty() || rt.normalize_paths {
        true => redirected
            .or_else(|| stream.local_addr().ok())
            .map(|a| a.port()),
        false => None,
    };
    let opaque = dialled.is_some_and(|p| rt.is_opaque(p));
    if rt.normalize_paths
        && let Some(port) = dialled
    {
        let _ = ctx.port.set(port);
    }
    if rt.transparent
        && let Some(dst) = redirected
    {
        if !rt.by_destination.contains_key(&dst) {
            if let Some(cluster) = rt.mesh_hosts.get(&dst.ip()).cloned() {
                // Another port of a meshed pod: bytes to it, over its cluster's mTLS.
                ctx.activity.not_http();
                let to = crate::tcp::To::Address(dst);
                return crate::tcp::serve_to(ctx, stream, cluster, to, timeouts.idle).await;
            }
            // Not a destination of the mesh: on its way.
            return pass_through(ctx, stream, rt, dst, timeouts).await;
        }
        if opaque && let Some((cluster, ep)) = rt.endpoint_of(dst) {
            // Bytes for that very endpoint, with its cluster's mTLS.
            ctx.activity.not_http();
            let to = crate::tcp::To::Endpoint(ep);
            return crate::tcp::serve_to(ctx, stream, cluster, to, timeouts.idle).await;
        }
        let _ = ctx.original_dst.set(dst);
    }
    let forward = match redirected.and_then(|dst| rt.other_port(dst.port())) {
        Some(to) => Forward::Port(to),
        None if opaque && rt.opaque_cluster().is_some() => Forward::Opaque,
        None => Forward::Detect,
    };
    if rt.mtls != remora_config::model::MtlsMode::Disabled {
        return crate::tls::inbound::serve(ctx, stream, rt, timeouts, forward).await;
    }
    serve_forward(ctx, stream, rt, timeouts, forward).await
}

/// Serves an accepted plaintext connection as its listener's kind says: HTTP, opaque TCP,
/// or detection first. (An mTLS listener's plaintext connections come here too.)
pub(crate) async fn serve_plain(
    ctx: Arc<ConnCtx>,
    stream: tokio::net::TcpStream,
    rt: Arc<crate::snapshot::ListenerRt>,
    t: crate::http::Timeouts,
) {
    match &rt.kind {
        ListenerRtKind::Http(_) => crate::http::serve(ctx, stream, rt.builder.clone(), t).await,
        ListenerRtKind::Tcp(cluster) => {
            crate::tcp::serve(ctx, stream, cluster.clone(), t.idle).await
        }
        ListenerRtKind::Auto { .. } => crate::detect::serve(ctx, stream, rt, t).await,
    }
}

/// A redirected connection for a destination outside the mesh: as bytes, untouched; or, with
/// `passthrough: http`, HTTP request by request through the passthrough route for `dst`
/// (anything that is not HTTP still as bytes).
async fn pass_through(
    ctx: Arc<ConnCtx>,
    stream: tokio::net::TcpStream,
    rt: Arc<crate::snapshot::ListenerRt>,
    dst: SocketAddr,
    t: crate::http::Timeouts,
) {
    if rt.passthrough.is_some() {
        use crate::detect::Outcome;
        match crate::detect::detect(&stream, remora_config::defaults::DETECT_TIMEOUT).await {
            Outcome::Http1 | Outcome::Http2 => {
                let _ = ctx.original_dst.set(dst);
                return crate::http::serve(ctx, stream, rt.builder.clone(), t).await;
            }
            Outcome::Closed => return,
            Outcome::Tls | Outcome::Opaque | Outcome::Timeout => {}
        }
    }
    crate::tcp::passthrough(ctx, stream, dst, t.idle).await
}

/// What a listener does with a connection's bytes (plaintext, or decrypted).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forward {
    /// As its kind says: HTTP, TCP, or detection first ([`serve_plain`]).
    Detect,
    /// To an opaque port: TCP to the listener's cluster, no detection.
    Opaque,
    /// Redirected from another port of the workload: TCP to that port
    /// ([`ListenerRt::other_port`]).
    Port(SocketAddr),
}

/// Serves a plaintext connection as `forward` says.
pub(crate) async fn serve_forward(
    ctx: Arc<ConnCtx>,
    stream: tokio::net::TcpStream,
    rt: Arc<crate::snapshot::ListenerRt>,
    t: crate::http::Timeouts,
    forward: Forward,
) {
    match forward {
        Forward::Detect => serve_plain(ctx, stream, rt, t).await,
        Forward::Opaque => serve_opaque(ctx, stream, rt, t.idle).await,
        Forward::Port(to) => serve_port(ctx, stream, rt, to, t.idle).await,
    }
}

/// Forwards a connection redirected from another port of the workload to that port (`to`),
/// if the listener's authorization admits the connection as a whole: nothing in it can be
/// read as a request.
pub(crate) async fn serve_port<S>(
    ctx: Arc<ConnCtx>,
    stream: S,
    rt: Arc<crate::snapshot::ListenerRt>,
    to: SocketAddr,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let caller = ctx.peer_identity.get().and_then(|v| v.to_str().ok());
    if let Some(authz) = &rt.authz
        && !authz.check_connection(caller, ctx.port.get().copied())
    {
        tracing::debug!(peer = %ctx.peer, ?caller, %to, "not authorized; closing");
        return;
    }
    crate::tcp::passthrough(ctx, stream, to, idle).await
}

/// Forwards a connection to an opaque port (plaintext, or decrypted) to the listener's cluster,
/// with no detection and no HTTP.
pub(crate) async fn serve_opaque<S>(
    ctx: Arc<ConnCtx>,
    stream: S,
    rt: Arc<crate::snapshot::ListenerRt>,
    idle: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some(cluster) = rt.opaque_cluster() {
        ctx.activity.not_http();
        crate::tcp::serve(ctx, stream, cluster.clone(), idle).await
    }
}

/// Where a connection was headed before iptables redirected it here (SO_ORIGINAL_DST), or
/// `None` if it was not redirected (it came to the listener's own address).
fn redirected_to(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let original = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    (original != local).then_some(original)
}

async fn reap_loop(shared: Arc<Shared>) {
    loop {
        let interval = {
            let snapshot = shared.snapshot.load();
            for cluster in &snapshot.clusters {
                cluster.reap_idle();
            }
            for passthrough in snapshot
                .listeners
                .iter()
                .filter_map(|l| l.passthrough.as_ref())
            {
                passthrough.reap_idle();
            }
            reap_interval(&snapshot.config)
        };
        tokio::time::sleep(interval).await;
    }
}

/// Often enough that a pooled connection outlives its cluster's idle timeout by at most half
/// of it, and at most every [`REAP_INTERVAL`].
fn reap_interval(config: &Config) -> Duration {
    let shortest = config.clusters.iter().map(|c| c.idle_timeout).min();
    shortest.map_or(REAP_INTERVAL, |t| {
        (t / 2).clamp(Duration::from_millis(100), REAP_INTERVAL)
    })
}

/// SIGTERM and SIGINT, when the proxy handles them.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn new(enabled: bool) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let pair = enabled.then(|| {
            Some((
                signal(SignalKind::terminate()).ok()?,
                signal(SignalKind::interrupt()).ok()?,
            ))
        });
        if enabled && pair.as_ref().is_none_or(Option::is_none) {
            tracing::error!(
                "cannot install signal handlers; stop the proxy from the admin endpoint"
            );
        }
        Signals(pair.flatten())
    }

    async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// Resolves once the flag is true (or its sender is gone).
pub(crate) async fn until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// Every ten seconds, notes each endpoint's pick count, for the admin page's share of picks over
/// the last minute.
async fn sample_picks(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        for cluster in &shared.snapshot.load().clusters {
            let picks = cluster
                .health
                .endpoints()
                .iter()
                .map(|e| e.picks())
                .collect();
            cluster
                .pick_history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .sample(picks);
        }
    }
}
