//! State shared by the whole process ([`Shared`]) and by one downstream connection ([`ConnCtx`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::access_log::AccessLog;
use crate::io::Activity;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

pub struct Shared {
    /// The config in effect and everything built from it.
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    /// `None` when the access log is off.
    pub access_log: Option<AccessLog>,
    /// Set once every listener accepts connections; `/ready` reports it.
    ready: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            access_log,
            ready: AtomicBool::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// One accepted downstream connection.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    /// Index of the listener in the snapshot.
    pub listener: usize,
    pub peer: SocketAddr,
    /// The peer's IP rendered once, for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    pub activity: Arc<Activity>,
}

impl ConnCtx {
    /// `http`: whether the connection speaks HTTP (its request heads are timed).
    pub fn new(shared: Arc<Shared>, listener: usize, peer: SocketAddr, http: bool) -> Self {
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .expect("an IP address is a valid header value");
        ConnCtx {
            shared,
            listener,
            peer,
            client_ip,
            activity: Arc::new(Activity::new(http)),
        }
    }
}
