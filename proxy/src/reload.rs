//! Hot reload in standalone mode: watch the config file, validate changes, hand valid configs to
//! the main loop ([`crate::server::Proxy::run`]) to apply.
//!
//! The file's directory is watched rather than the file, so every way of changing it is seen:
//! an editor writing in place or renaming a temporary file over it, and Kubernetes' ConfigMap
//! update, which swaps a `..data` symlink in the directory. A change is applied only once the
//! file has stayed the same for [`SETTLE`], so a file caught half-written is never applied;
//! identical content is ignored. An invalid file is refused with every error logged, and the
//! previous config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::context::Shared;

/// How long a file must stay unchanged before it is read as final. Istio debounces config
/// pushes by 100 ms; a writer still busy after that is caught by the second read.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Starts watching `path`, whose running config was loaded from `loaded`; valid new configs
/// are sent on `apply`. Watching stops when the receiving side is dropped. Returns false if
/// the directory cannot be watched (logged).
pub fn watch(
    path: PathBuf,
    loaded: Vec<u8>,
    apply: mpsc::UnboundedSender<crate::control::Reload>,
    shared: Arc<Shared>,
) -> bool {
    let (events_tx, events) = mpsc::unbounded_channel();
    // One look right away: the file may have changed between loading and watching.
    let _ = events_tx.send(());
    let mut watcher = match notify::recommended_watcher(move |event| {
        if let Ok(notify::Event { .. }) = event {
            let _ = events_tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config file; reloads are off");
            return false;
        }
    };
    let mut watched = Vec::new();
    if let Err(e) = watch_dirs(&mut watcher, &mut watched, &path) {
        tracing::error!(error = %e, "cannot watch the config directory; reloads are off");
        return false;
    }
    let files = Files {
        path,
        watcher,
        watched,
    };
    tokio::spawn(reload_loop(files, loaded, events, apply, shared));
    true
}

/// The config file and what is watched to see it change.
struct Files {
    path: PathBuf,
    watcher: notify::RecommendedWatcher,
    /// Directories watched so far. A symlinked config can be re-pointed into another
    /// directory; it is added then, so later edits there are seen too.
    watched: Vec<PathBuf>,
}

/// Watches the directories `path` needs that are not watched yet.
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut Vec<PathBuf>,
    path: &Path,
) -> notify::Result<()> {
    for dir in dirs_to_watch(path) {
        let key = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if !watched.contains(&key) {
            watcher.watch(&dir, RecursiveMode::NonRecursive)?;
            watched.push(key);
        }
    }
    Ok(())
}

/// The file's directory, and the directory of what it links to if that is elsewhere.
fn dirs_to_watch(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let real_dir = parent(&real);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&real_dir) {
            dirs.push(real_dir);
        }
    }
    dirs
}

async fn reload_loop(
    mut files: Files,
    mut current: Vec<u8>,
    mut events: mpsc::UnboundedReceiver<()>,
    apply: mpsc::UnboundedSender<crate::control::Reload>,
    shared: Arc<Shared>,
) {
    while events.recv().await.is_some() {
        let Some(text) = settled(&files.path, &mut events).await else {
            continue;
        };
        if let Err(e) = watch_dirs(&mut files.watcher, &mut files.watched, &files.path) {
            tracing::warn!(error = %e, "cannot watch where the config now points");
        }
        if text == current {
            continue;
        }
        current = text;
        let source = files.path.display().to_string();
        let text = String::from_utf8_lossy(&current);
        match remora_config::load_str(&source, &text) {
            Ok(config) => {
                let reload = crate::control::Reload {
                    config,
                    reply: None,
                };
                if apply.send(reload).is_err() {
                    return;
                }
            }
            Err(diagnostics) => {
                for d in &diagnostics.0 {
                    tracing::error!("{d}");
                }
                tracing::error!(
                    errors = diagnostics.0.len(),
                    "config reload rejected; the previous config stays"
                );
                shared.metrics.config_reload(false);
            }
        }
    }
}

/// Waits for events to stop for [`SETTLE`], then reads the file twice, [`SETTLE`] apart,
/// until two reads agree. `None` if the file cannot be read (deleted mid-swap: the next event
/// brings it back).
async fn settled(path: &Path, events: &mut mpsc::UnboundedReceiver<()>) -> Option<Vec<u8>> {
    quiet(events).await;
    let mut last = tokio::fs::read(path).await.ok()?;
    loop {
        quiet(events).await;
        let now = tokio::fs::read(path).await.ok()?;
        if now == last {
            return Some(now);
        }
        last = now;
    }
}

/// Returns once no event has arrived for [`SETTLE`].
async fn quiet(events: &mut mpsc::UnboundedReceiver<()>) {
    loop {
        match tokio::time::timeout(SETTLE, events.recv()).await {
            Err(_) | Ok(None) => return,
            Ok(Some(())) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_a_pause_in_events() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let sender = tokio::spawn(async move {
            for _ in 0..5 {
                tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tx
        });
        quiet(&mut rx).await;
        // Five events 50 ms apart keep it waiting; it returns SETTLE after the last one.
        assert!(start.elapsed() >= Duration::from_millis(200) + SETTLE);
        drop(sender.await);
    }

    #[test]
    fn watches_the_directory_and_a_symlink_target_elsewhere() {
        let base = std::env::temp_dir().join(format!("remora-reload-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("real.yaml"), "x").unwrap();
        let link = a.join("config.yaml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(b.join("real.yaml"), &link).unwrap();
        let dirs = dirs_to_watch(&link);
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        assert_eq!(dirs[0], a);
        assert_eq!(
            std::fs::canonicalize(&dirs[1]).unwrap(),
            std::fs::canonicalize(&b).unwrap()
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
