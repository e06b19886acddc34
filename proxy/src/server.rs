//! Starting and running a proxy: bind every socket, then serve on worker threads until shutdown.
//!
//! Binding and serving are separate steps so a caller (the CLI, or a test) learns the real
//! addresses of port-0 listeners before traffic starts. Each worker is a single-threaded tokio
//! runtime on its own thread with its own accept loop on every listener socket; the main thread
//! runs a small runtime for the admin listener and the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use remora_config::model::Config;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::context::{ConnCtx, Shared};
use crate::metrics::Metrics;
use crate::snapshot::{ListenerRtKind, Snapshot};

/// How often each worker closes pooled upstream connections that outlived their idle timeout.
const REAP_INTERVAL: Duration = Duration::from_secs(5);

/// A proxy whose sockets are bound but which serves nothing yet.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
    workers: usize,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone)]
pub struct BoundAddrs {
    pub admin: Option<SocketAddr>,
    /// `(listener name, address)` in config order.
    pub listeners: Vec<(String, SocketAddr)>,
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

impl Proxy {
    pub fn bind(config: Config) -> Result<Proxy, StartError> {
        let metrics = Metrics::new();
        let access_log = match config.access_log.enabled {
            true => {
                Some(AccessLog::start(&config.access_log.target).map_err(StartError::AccessLog)?)
            }
            false => None,
        };
        let listeners = config
            .listeners
            .iter()
            .map(|l| bind(&format!("listener {}", l.name), l.address))
            .collect::<Result<Vec<_>, _>>()?;
        let admin = match &config.admin {
            Some(a) => Some(bind("the admin listener", a.address)?),
            None => None,
        };
        let workers = config.runtime.workers;
        let snapshot = Snapshot::build(Arc::new(config), &metrics);
        Ok(Proxy {
            shared: Arc::new(Shared::new(snapshot, metrics, access_log)),
            listeners,
            admin,
            workers,
        })
    }

    pub fn addrs(&self) -> BoundAddrs {
        let snapshot = self.shared.snapshot.load();
        BoundAddrs {
            admin: self.admin.as_ref().and_then(|l| l.local_addr().ok()),
            listeners: snapshot
                .listeners
                .iter()
                .zip(&self.listeners)
                .filter_map(|(l, s)| Some((l.name.clone(), s.local_addr().ok()?)))
                .collect(),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `shutdown` resolves. Blocks the calling thread.
    pub fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(self.workers);
        let mut threads = Vec::with_capacity(self.workers);
        for index in 0..self.workers {
            let sockets = self
                .listeners
                .iter()
                .map(|l| l.try_clone())
                .collect::<Result<Vec<_>, _>>()
                .map_err(StartError::Runtime)?;
            let shared = self.shared.clone();
            let stop = stop_rx.clone();
            let started = started_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("remora-worker-{index}"))
                .spawn(move || worker(index, shared, sockets, stop, started))
                .map_err(StartError::Runtime)?;
            threads.push(thread);
        }
        drop(started_tx);

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let shared = self.shared.clone();
        let admin = self.admin;
        rt.block_on(async move {
            if let Some(admin) = admin {
                match tokio::net::TcpListener::from_std(admin) {
                    Ok(l) => {
                        tokio::spawn(crate::admin::serve(l, shared.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "admin listener unusable"),
                }
            }
            // Ready once every worker accepts on every listener.
            while started_rx.recv().await.is_some() {}
            shared.set_ready();
            tracing::info!("ready");
            shutdown.await;
            tracing::info!("shutting down");
        });
        let _ = stop_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        Ok(())
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

fn worker(
    index: usize,
    shared: Arc<Shared>,
    sockets: Vec<std::net::TcpListener>,
    mut stop: watch::Receiver<bool>,
    started: tokio::sync::mpsc::Sender<()>,
) {
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
    rt.block_on(async move {
        for (listener, socket) in sockets.into_iter().enumerate() {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => {
                    tokio::spawn(accept_loop(shared.clone(), listener, l));
                }
                Err(e) => tracing::error!(worker = index, error = %e, "listener unusable"),
            }
        }
        tokio::spawn(reap_loop(shared.clone()));
        let _ = started.send(()).await;
        drop(started);
        let _ = stop.wait_for(|stop| *stop).await;
    });
}

async fn accept_loop(shared: Arc<Shared>, index: usize, listener: tokio::net::TcpListener) {
    let snapshot = shared.snapshot.load_full();
    let limits = &snapshot.config.limits;
    let builder = Arc::new(crate::http::builder(limits));
    let timeouts = crate::http::Timeouts {
        idle: limits.idle_timeout,
        header_read: limits.header_read_timeout,
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match &snapshot.listeners[index].kind {
            ListenerRtKind::Http(_) => {
                let ctx = Arc::new(ConnCtx::new(shared.clone(), index, peer, true));
                tokio::spawn(crate::http::serve(ctx, stream, builder.clone(), timeouts));
            }
            ListenerRtKind::Tcp(cluster) => {
                let ctx = Arc::new(ConnCtx::new(shared.clone(), index, peer, false));
                let idle = timeouts.idle;
                tokio::spawn(crate::tcp::serve(ctx, stream, cluster.clone(), idle));
            }
        }
    }
}

async fn reap_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    loop {
        tick.tick().await;
        for cluster in &shared.snapshot.load().clusters {
            cluster.reap_idle();
        }
    }
}
