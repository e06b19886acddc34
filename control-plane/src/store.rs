//! The config store: the mesh directory, loaded, checked, watched. Only a valid mesh is ever
//! published; a bad edit is logged, counted and shown in `remora status`, and the last good
//! version keeps being served.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use remora_config::mesh::{self, Mesh, Source};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Edits are applied once the directory has been quiet this long: an editor's save or a
/// ConfigMap update is several file events, and `git checkout` of many files is a burst.
/// Istio debounces at 100 ms.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// A version of the mesh that the control plane serves.
#[derive(Debug)]
pub struct Published {
    pub mesh: Mesh,
    pub generation: u64,
    /// When it was accepted: push latency runs from here to the last ACK.
    pub accepted_at: Instant,
}

/// What the store last made of the directory.
#[derive(Debug, Clone, Default)]
pub struct LoadState {
    /// The problems of the newest files, when they were refused (one `file:line:col` line each).
    pub rejected: Vec<String>,
}

/// The store's outputs: the published mesh (`None` until a first valid one), and the state of
/// the last load.
pub struct Store {
    pub published: watch::Receiver<Option<Arc<Published>>>,
    pub state: watch::Receiver<LoadState>,
}

/// Loads `dir` once and starts watching it. A first load that fails leaves nothing published:
/// sidecars wait (not ready) until a valid mesh appears.
/// With a `trust_domain` (the control plane is the CA), sidecars get mTLS settings.
pub fn start(
    dir: PathBuf,
    trust_domain: Option<String>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Store> {
    let (published_tx, published) = watch::channel(None);
    let (state_tx, state) = watch::channel(LoadState::default());
    let (events_tx, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the files is an event too (inotify's open/close): only changes count.
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = events_tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;
    let mut loader = Loader {
        dir,
        trust_domain,
        current: None,
        generation: 0,
        published: published_tx,
        state: state_tx,
        metrics,
    };
    loader.reload();
    tokio::spawn(loader.run(events, watcher));
    Ok(Store { published, state })
}

struct Loader {
    dir: PathBuf,
    trust_domain: Option<String>,
    /// The files last read, accepted or refused: the same files again change nothing.
    current: Option<Vec<Source>>,
    generation: u64,
    published: watch::Sender<Option<Arc<Published>>>,
    state: watch::Sender<LoadState>,
    metrics: Arc<Metrics>,
}

impl Loader {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<()>,
        _watcher: notify::RecommendedWatcher,
    ) {
        while events.recv().await.is_some() {
            // Debounce: wait for a quiet DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            self.reload();
        }
    }

    fn reload(&mut self) {
        let sources = match mesh::read_dir(&self.dir) {
            Ok(s) => s,
            Err(d) => return self.reject(d.iter().map(ToString::to_string).collect()),
        };
        if self.current.as_ref() == Some(&sources) {
            return;
        }
        match mesh::load_with(&sources, self.trust_domain.as_deref()) {
            Ok(mesh) => {
                let generation = next_generation(self.generation, newest_mtime(&sources));
                self.generation = generation;
                tracing::info!(
                    version = %mesh.version,
                    generation,
                    services = mesh.services.len(),
                    "mesh config accepted"
                );
                self.metrics.config_load(true, generation);
                self.current = Some(sources);
                self.state.send_replace(LoadState::default());
                self.published.send_replace(Some(Arc::new(Published {
                    mesh,
                    generation,
                    accepted_at: Instant::now(),
                })));
            }
            Err(d) => {
                self.reject(d.iter().map(ToString::to_string).collect());
                // Remembered, so it is not refused again at every event; fixing the files
                // (even back to the served version) is a change, and is loaded.
                self.current = Some(sources);
            }
        }
    }

    fn reject(&mut self, lines: Vec<String>) {
        for line in &lines {
            tracing::error!("{line}");
        }
        tracing::error!(
            problems = lines.len(),
            "mesh config rejected; the last good version keeps being served"
        );
        self.metrics.config_load(false, self.generation);
        self.current = None;
        self.state.send_replace(LoadState { rejected: lines });
    }
}

/// The newest modification time among the files, in milliseconds since the epoch.
fn newest_mtime(sources: &[Source]) -> u64 {
    sources
        .iter()
        .filter_map(|s| std::fs::metadata(&s.name).ok())
        .filter_map(|m| m.modified().ok())
        .filter_map(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .max()
        .unwrap_or(0)
}

/// The generation of a newly accepted version: the newest file's modification time (in ms),
/// so that replicas reading the same directory agree without talking to each other, and
/// always more than the previous one, so it only grows within a process.
pub fn next_generation(previous: u64, newest_mtime_ms: u64) -> u64 {
    newest_mtime_ms.max(previous + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_follow_the_files_and_only_grow() {
        assert_eq!(next_generation(0, 1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(
            next_generation(1_700_000_000_000, 1_700_000_000_500),
            1_700_000_000_500
        );
        // A file restored with an old timestamp still moves the generation on.
        assert_eq!(
            next_generation(1_700_000_000_500, 1_600_000_000_000),
            1_700_000_000_501
        );
        assert_eq!(next_generation(5, 0), 6);
    }
}
