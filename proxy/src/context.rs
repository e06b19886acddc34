//! State shared by the whole process ([`Shared`]) and by one downstream connection ([`ConnCtx`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::HeaderValue;
use tokio::sync::{Notify, watch};

use crate::access_log::AccessLog;
use crate::io::Activity;
use crate::metrics::Metrics;
use crate::snapshot::{ListenerHandle, ListenerRt, Snapshot};

pub struct Shared {
    /// The config in effect and everything built from it (the admin pages read it; reloads
    /// diff against it).
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// `None` when the access log is off. Swapped when a reload changes it.
    pub access_log: ArcSwapOption<AccessLog>,
    pub drain: Drain,
    /// Set once every listener accepts connections and every dns cluster has had its first
    /// answer (or the warm-up timed out); `/ready` reports it (and draining clears it).
    ready: AtomicBool,
    /// Each dns cluster's resolution state, for `/clusters`.
    pub dns: crate::discovery::Status,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            access_log: ArcSwapOption::from(access_log.map(Arc::new)),
            drain: Drain::default(),
            ready: AtomicBool::new(false),
            dns: Default::default(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.drain.is_draining()
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// Graceful shutdown: a signal every connection and accept loop watches, and a count of open
/// connections to wait for.
pub struct Drain {
    signal: watch::Sender<bool>,
    /// Asked for by the admin endpoint (`POST /drain`, `POST /shutdown`).
    requested: Notify,
    open: AtomicUsize,
    all_closed: Notify,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            signal: watch::channel(false).0,
            requested: Notify::new(),
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
        }
    }
}

impl Drain {
    /// Starts draining: listeners stop accepting, HTTP/1 connections close after their current
    /// response (`Connection: close`), HTTP/2 connections get GOAWAY.
    pub fn start(&self) {
        self.signal.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    /// Asks the main loop to drain and exit (from the admin endpoint).
    pub fn request(&self) {
        self.requested.notify_one();
    }

    pub async fn requested(&self) {
        self.requested.notified().await;
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no downstream connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn opened(&self) {
        self.open.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

/// One accepted downstream connection. Alive as long as the connection or any of its requests.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub listener: Arc<ListenerHandle>,
    pub peer: SocketAddr,
    /// The peer's IP rendered once, for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    pub activity: Arc<Activity>,
    /// The peer's SPIFFE ID, set once its mTLS handshake verified it; what the app gets in
    /// `x-remora-peer-identity`.
    pub peer_identity: std::sync::OnceLock<HeaderValue>,
    /// Where a connection redirected by iptables was headed (transparent listeners).
    pub original_dst: std::sync::OnceLock<SocketAddr>,
    /// The port the client dialled (the original destination's when redirected, else the
    /// listener's), for authorization rules with `ports`; set only on listeners with rules.
    pub port: std::sync::OnceLock<u16>,
}

impl ConnCtx {
    /// `http`: whether the connection speaks HTTP (its request heads are timed).
    pub fn new(
        shared: Arc<Shared>,
        listener: Arc<ListenerHandle>,
        peer: SocketAddr,
        http: bool,
    ) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a valid header value");
        shared.drain.opened();
        ConnCtx {
            shared,
            listener,
            peer,
            client_ip,
            activity: Arc::new(Activity::new(http)),
            peer_identity: std::sync::OnceLock::new(),
            original_dst: std::sync::OnceLock::new(),
            port: std::sync::OnceLock::new(),
        }
    }

    /// The listener's runtime as configured now (for an HTTP connection, the last HTTP
    /// configuration if a reload has since turned the listener into TCP).
    pub fn listener_rt(&self) -> Arc<ListenerRt> {
        self.listener.load_http()
    }
}

impl Drop for ConnCtx {
    fn drop(&mut self) {
        self.shared.drain.closed();
    }
}
