//! What the control plane knows of each sidecar: which version it received, applied or
//! refused, and when it was last heard from. This is `remora status`.
//!
//! A NACK is never counted as synced (Istio does, istio/istio#30498): a sidecar that refused
//! the current version is NACKED, with its reason, until it applies one.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use remora_config::protocol::EndpointHealth;

use crate::metrics::Metrics;
use crate::store::Published;

/// A sidecar between two watches (answered, not yet asking again) still counts as connected
/// for this long.
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Sidecar {
    service: String,
    namespace: String,
    /// The version it runs (its last ACK).
    applied: Option<String>,
    /// The last version it refused, and why.
    nacked: Option<(String, String)>,
    /// The version of its last report, so each ACK or NACK is counted once.
    reported: Option<String>,
    /// Watches held open now.
    open: u32,
    last_seen: Instant,
    last_seen_wall: SystemTime,
    /// Its last health report, and when it came.
    health: Option<(Instant, Vec<EndpointHealth>)>,
}

/// What `remora explain` needs of a sidecar: its service, and its last health report with
/// its age.
pub struct Known {
    pub service: String,
    pub namespace: String,
    pub health: Option<(Vec<EndpointHealth>, Duration)>,
}

/// The state `remora status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Runs the version served now.
    Synced,
    /// Runs an older version (or none yet).
    Stale,
    /// Refused the version served now.
    Nacked,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub node: String,
    pub service: String,
    pub namespace: String,
    /// The version it runs; empty if none yet.
    pub version: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub connected: bool,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// When, in seconds since the epoch.
    pub last_seen_unix: f64,
}

/// How the newest version's push went: from its acceptance to the last connected sidecar's
/// report.
#[derive(Debug, Clone, Serialize)]
pub struct Push {
    pub version: String,
    pub generation: u64,
    /// `None` while some connected sidecar has not reported it yet.
    pub complete_after_ms: Option<f64>,
    pub sidecars: usize,
}

#[derive(Default)]
pub struct Sidecars {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<String, Sidecar>,
    push: Option<Push>,
}

/// What a sidecar says in a watch request.
pub struct Report<'a> {
    pub node: &'a str,
    pub service: &'a str,
    pub namespace: &'a str,
    pub version: &'a str,
    pub error: Option<&'a str>,
}

impl Sidecars {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a watch request; `open` says whether the request now waits (a watch held open).
    pub fn report(&self, r: &Report<'_>, current: Option<&Published>, metrics: &Metrics) {
        let now = Instant::now();
        let mut inner = self.lock();
        let sidecar = inner
            .nodes
            .entry(r.node.to_owned())
            .or_insert_with(|| Sidecar {
                service: String::new(),
                namespace: String::new(),
                applied: None,
                nacked: None,
                reported: None,
                open: 0,
                last_seen: now,
                last_seen_wall: SystemTime::now(),
                health: None,
            });
        sidecar.service = r.service.to_owned();
        sidecar.namespace = r.namespace.to_owned();
        sidecar.last_seen = now;
        sidecar.last_seen_wall = SystemTime::now();
        if !r.version.is_empty() && sidecar.reported.as_deref() != Some(r.version) {
            sidecar.reported = Some(r.version.to_owned());
            match r.error {
                None => {
                    sidecar.applied = Some(r.version.to_owned());
                    sidecar.nacked = None;
                    metrics.reported(true);
                    tracing::info!(node = r.node, version = r.version, "ACK");
                }
                Some(reason) => {
                    sidecar.nacked = Some((r.version.to_owned(), reason.to_owned()));
                    metrics.reported(false);
                    tracing::warn!(node = r.node, version = r.version, reason, "NACK");
                }
            }
        }
        if let Some(current) = current {
            inner.check_push(current, metrics);
        }
        metrics.set_connected(inner.connected(now));
    }

    /// Keeps a sidecar's health report; false for a node that never opened a watch.
    pub fn set_health(&self, node: &str, endpoints: Vec<EndpointHealth>) -> bool {
        let mut inner = self.lock();
        match inner.nodes.get_mut(node) {
            Some(s) => {
                s.health = Some((Instant::now(), endpoints));
                true
            }
            None => false,
        }
    }

    pub fn known(&self, node: &str) -> Option<Known> {
        let inner = self.lock();
        let s = inner.nodes.get(node)?;
        Some(Known {
            service: s.service.clone(),
            namespace: s.namespace.clone(),
            health: s
                .health
                .as_ref()
                .map(|(at, h)| (h.clone(), Instant::now().saturating_duration_since(*at))),
        })
    }

    /// A watch is held open for `node` while the guard lives.
    pub fn hold(&self, node: &str) -> Held<'_> {
        if let Some(s) = self.lock().nodes.get_mut(node) {
            s.open += 1;
        }
        Held {
            sidecars: self,
            node: node.to_owned(),
        }
    }

    /// A new version was published: its push starts now.
    pub fn published(&self, current: &Published, metrics: &Metrics) {
        let mut inner = self.lock();
        inner.push = Some(Push {
            version: current.mesh.version.clone(),
            generation: current.generation,
            complete_after_ms: None,
            sidecars: 0,
        });
        inner.check_push(current, metrics);
    }

    pub fn rows(&self, current: Option<&Published>) -> (Vec<Row>, Option<Push>) {
        let now = Instant::now();
        let inner = self.lock();
        let version = current.map(|c| c.mesh.version.as_str());
        let rows = inner
            .nodes
            .iter()
            .map(|(node, s)| {
                let state = s.state(version);
                Row {
                    node: node.clone(),
                    service: s.service.clone(),
                    namespace: s.namespace.clone(),
                    version: s.applied.clone().unwrap_or_default(),
                    state,
                    reason: match state {
                        State::Nacked => s.nacked.as_ref().map(|(_, r)| r.clone()),
                        _ if current.is_some_and(|c| c.mesh.service(&s.service).is_none()) => {
                            Some(format!("service '{}' is not in the mesh config", s.service))
                        }
                        _ => None,
                    },
                    connected: s.connected(now),
                    // Holding a watch open is being heard from now.
                    last_seen_ms: match s.open {
                        0 => now.saturating_duration_since(s.last_seen).as_millis() as u64,
                        _ => 0,
                    },
                    last_seen_unix: s
                        .last_seen_wall
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                }
            })
            .collect();
        (rows, inner.push.clone())
    }
}

impl Inner {
    fn connected(&self, now: Instant) -> usize {
        self.nodes.values().filter(|s| s.connected(now)).count()
    }

    /// Completes the current push once every connected sidecar has reported the version.
    fn check_push(&mut self, current: &Published, metrics: &Metrics) {
        let now = Instant::now();
        let version = current.mesh.version.as_str();
        let Some(push) = self.push.as_mut().filter(|p| p.version == version) else {
            return;
        };
        if push.complete_after_ms.is_some() {
            return;
        }
        // Sidecars of a service the mesh does not have are sent nothing, so wait for none.
        let connected: Vec<&Sidecar> = self
            .nodes
            .values()
            .filter(|s| s.connected(now) && current.mesh.service(&s.service).is_some())
            .collect();
        if connected.is_empty()
            || connected
                .iter()
                .any(|s| s.reported.as_deref() != Some(version))
        {
            return;
        }
        let took = now.saturating_duration_since(current.accepted_at);
        push.complete_after_ms = Some(took.as_secs_f64() * 1000.0);
        push.sidecars = connected.len();
        metrics.push_complete(took.as_secs_f64());
        tracing::info!(version, sidecars = connected.len(), ?took, "push complete");
    }
}

impl Sidecar {
    fn connected(&self, now: Instant) -> bool {
        self.open > 0 || now.saturating_duration_since(self.last_seen) < RECONNECT_GRACE
    }

    fn state(&self, current: Option<&str>) -> State {
        match (current, &self.applied, &self.nacked) {
            (Some(v), _, Some((n, _))) if n == v => State::Nacked,
            (Some(v), Some(a), _) if a == v => State::Synced,
            _ => State::Stale,
        }
    }
}

/// A watch held open; counts the sidecar as connected until dropped.
pub struct Held<'a> {
    sidecars: &'a Sidecars,
    node: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut inner = self.sidecars.lock();
        if let Some(s) = inner.nodes.get_mut(&self.node) {
            s.open = s.open.saturating_sub(1);
            s.last_seen = Instant::now();
            s.last_seen_wall = SystemTime::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(applied: Option<&str>, nacked: Option<&str>) -> Sidecar {
        Sidecar {
            service: "s".into(),
            namespace: "n".into(),
            applied: applied.map(Into::into),
            nacked: nacked.map(|v| (v.into(), "cannot bind".into())),
            reported: None,
            open: 0,
            last_seen: Instant::now(),
            last_seen_wall: SystemTime::now(),
            health: None,
        }
    }

    fn published(text: &str) -> Published {
        let sources = [remora_config::mesh::Source {
            name: "m.yaml".into(),
            text: text.into(),
        }];
        Published {
            mesh: remora_config::mesh::load(&sources).unwrap(),
            generation: 1,
            accepted_at: Instant::now(),
        }
    }

    fn report<'a>(
        node: &'a str,
        service: &'a str,
        version: &'a str,
        error: Option<&'a str>,
    ) -> Report<'a> {
        Report {
            node,
            service,
            namespace: "default",
            version,
            error,
        }
    }

    /// A push completes when every connected sidecar of a known service has reported the
    /// version, ACK or NACK; a sidecar of an unknown service does not hold it up.
    #[test]
    fn a_push_completes_with_the_last_report() {
        let metrics = Metrics::new();
        let sidecars = Sidecars::default();
        let p = published(
            "services:\n  - { name: a, app: 127.0.0.1:1 }\n  - { name: b, app: 127.0.0.1:2 }\n",
        );
        let v = p.mesh.version.clone();
        sidecars.report(&report("a-1", "a", "", None), Some(&p), &metrics);
        sidecars.report(&report("b-1", "b", "", None), Some(&p), &metrics);
        sidecars.report(&report("x-1", "nope", "", None), Some(&p), &metrics);
        sidecars.published(&p, &metrics);
        let complete = |s: &Sidecars| s.rows(Some(&p)).1.unwrap().complete_after_ms;
        assert_eq!(complete(&sidecars), None);
        sidecars.report(&report("a-1", "a", &v, None), Some(&p), &metrics);
        assert_eq!(complete(&sidecars), None, "b has not reported");
        sidecars.report(
            &report("b-1", "b", &v, Some("cannot bind")),
            Some(&p),
            &metrics,
        );
        assert!(complete(&sidecars).is_some());

        let (rows, push) = sidecars.rows(Some(&p));
        assert_eq!(push.unwrap().sidecars, 2);
        let state = |node: &str| rows.iter().find(|r| r.node == node).unwrap().clone();
        assert_eq!(state("a-1").state, State::Synced);
        assert_eq!(state("b-1").state, State::Nacked);
        assert_eq!(state("b-1").reason.as_deref(), Some("cannot bind"));
        assert_eq!(state("x-1").state, State::Stale);
        assert!(state("x-1").reason.unwrap().contains("not in the mesh"));
        let text = metrics.render();
        assert!(text.contains("remora_cp_acks_total 1"), "{text}");
        assert!(text.contains("remora_cp_nacks_total 1"), "{text}");
        assert!(
            text.contains("remora_cp_push_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("remora_cp_connected_sidecars 3"), "{text}");
    }

    #[test]
    fn a_nack_of_the_current_version_is_never_synced() {
        assert_eq!(sidecar(Some("v2"), None).state(Some("v2")), State::Synced);
        assert_eq!(sidecar(Some("v1"), None).state(Some("v2")), State::Stale);
        assert_eq!(sidecar(None, None).state(Some("v2")), State::Stale);
        // Runs v1, refused v2: NACKED while v2 is served, whatever it ran before.
        assert_eq!(
            sidecar(Some("v1"), Some("v2")).state(Some("v2")),
            State::Nacked
        );
        // A NACK of an older version is history once a newer one is served.
        assert_eq!(
            sidecar(Some("v1"), Some("v2")).state(Some("v3")),
            State::Stale
        );
        assert_eq!(
            sidecar(Some("v3"), Some("v2")).state(Some("v3")),
            State::Synced
        );
        assert_eq!(sidecar(Some("v1"), None).state(None), State::Stale);
    }
}
