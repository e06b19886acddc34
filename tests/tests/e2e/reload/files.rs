//! The ways a config file changes on disk: a Kubernetes ConfigMap's symlink swap, a writer
//! caught half-way, a file deleted and written again, a symlink pointed elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use remora_tests::client::{self, background};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, TempDir, Upstream, eventually};

use super::{RELOAD_TIMEOUT, Reloads, reloads, two_clusters, wait_reloads};

/// Kubernetes mounts a ConfigMap as `dir/config.yaml -> ..data/config.yaml` with
/// `..data -> ..<timestamp>`; an update writes a new timestamped directory, points `..data_tmp`
/// at it, renames `..data_tmp` over `..data`, and deletes the old directory.
struct ConfigMapVolume {
    dir: TempDir,
    version: u32,
}

impl ConfigMapVolume {
    fn new(yaml: &str) -> ConfigMapVolume {
        let mut volume = ConfigMapVolume {
            dir: TempDir::new("configmap"),
            version: 0,
        };
        volume.update(yaml);
        std::os::unix::fs::symlink("..data/config.yaml", volume.config_file()).unwrap();
        volume
    }

    fn config_file(&self) -> std::path::PathBuf {
        self.dir.path().join("config.yaml")
    }

    fn update(&mut self, yaml: &str) {
        let root = self.dir.path();
        self.version += 1;
        let new = format!("..v{}", self.version);
        std::fs::create_dir(root.join(&new)).unwrap();
        std::fs::write(root.join(&new).join("config.yaml"), yaml).unwrap();
        std::os::unix::fs::symlink(&new, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(root.join(format!("..v{}", self.version - 1))).unwrap();
        }
    }
}

#[tokio::test]
async fn a_kubernetes_configmap_update_is_applied() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let mut volume = ConfigMapVolume::new(&two_clusters(&a, &b, "a"));
    let proxy = ProxyProcess::builder()
        .config_file(volume.config_file())
        .start();
    let mut client = Client::connect(proxy.listener("main"), Proto::Http1).await;
    assert_eq!(client.get("/").await.echo().upstream(), "a");

    volume.update(&two_clusters(&a, &b, "b"));
    wait_reloads(&proxy, 1, 0);
    assert_eq!(client.get("/").await.echo().upstream(), "b");

    // Again, now that the directory first linked to is gone.
    volume.update(&two_clusters(&a, &b, "a"));
    wait_reloads(&proxy, 2, 0);
    assert_eq!(client.get("/").await.echo().upstream(), "a");
}

/// Sends `GET /` on one keep-alive connection in a loop until stopped; counts answers by
/// upstream and keeps every other outcome.
struct Prober {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 2]>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Prober {
    async fn start(addr: SocketAddr, names: [&'static str; 2]) -> Prober {
        let mut client = Client::connect(addr, Proto::Http1).await;
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Arc<[AtomicU64; 2]> = Arc::default();
        let task = {
            let (stop, counts) = (stop.clone(), counts.clone());
            background().spawn(async move {
                let mut unexpected = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let reply = client.get("/").await;
                    let upstream = (reply.status == 200)
                        .then(|| reply.header("x-upstream").map(str::to_owned))
                        .flatten();
                    match names.iter().position(|n| Some(*n) == upstream.as_deref()) {
                        Some(i) => counts[i].fetch_add(1, Ordering::Relaxed),
                        None => {
                            unexpected.push(format!("{} {}", reply.status, reply.text()));
                            0
                        }
                    };
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                unexpected
            })
        };
        Prober { stop, counts, task }
    }

    fn count(&self, i: usize) -> u64 {
        self.counts[i].load(Ordering::Relaxed)
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

/// The new config of [`a_half_written_file_is_never_applied`]: a route that matches nothing
/// the prober sends, then the catch-all. Cut after the first route it is still valid, and
/// would answer the prober 404.
fn guarded(a: &Upstream, b: &Upstream, target: &str) -> String {
    two_clusters(a, b, target).replace(
        "routes:\n",
        &format!(
            "routes:\n      - name: never\n        match: {{ path: {{ prefix: /never }} }}\n        \
             cluster: {target}\n"
        ),
    )
}

#[tokio::test]
async fn a_half_written_file_is_never_applied() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    let file = proxy.config_file().to_owned();
    let prober = Prober::start(proxy.listener("main"), ["a", "b"]).await;

    // Round 1: a prefix that is a valid config on its own (routing `/` nowhere), then the
    // rest 40 ms later, written in place as a slow writer would.
    let full = reorder_clusters_first(&guarded(&a, &b, "b"));
    let cut = full.find("      - name: all").expect("the catch-all route");
    let (head, tail) = full.split_at(cut);
    remora_config::load_str("prefix", head)
        .expect("the prefix on its own is a valid config, or the test would prove little");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(head.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        f.write_all(tail.as_bytes()).unwrap();
    }
    wait_reloads(&proxy, 1, 0);
    eventually("answers from b", RELOAD_TIMEOUT, || {
        (prober.count(1) > 10).then_some(())
    })
    .await;
    // Several settle periods: a second (late) apply would show now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_reloads(&proxy, 1, 0);

    // Round 2: the next config trickled in 20 pieces, 2 ms apart, truncating first.
    let next = reorder_clusters_first(&guarded(&a, &b, "a"));
    let before_a = prober.count(0);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        for piece in next.as_bytes().chunks(next.len().div_ceil(20)) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    wait_reloads(&proxy, 2, 0);
    eventually("answers from a again", RELOAD_TIMEOUT, || {
        (prober.count(0) > before_a + 10).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_reloads(&proxy, 2, 0);

    let unexpected = prober.stop().await;
    assert!(
        unexpected.is_empty(),
        "answers from an intermediate config: {unexpected:?}"
    );
}

/// The same config with its `clusters:` section moved before `listeners:`, so that cutting it
/// inside the routes leaves a complete, valid config.
fn reorder_clusters_first(yaml: &str) -> String {
    let at = yaml.find("clusters:\n").expect("a clusters section");
    let listeners = yaml.find("listeners:\n").expect("a listeners section");
    assert!(listeners < at);
    format!(
        "{}{}{}",
        &yaml[..listeners],
        &yaml[at..],
        &yaml[listeners..at]
    )
}

#[tokio::test]
async fn a_deleted_config_file_changes_nothing_until_it_is_back() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    let proxy = ProxyProcess::start(&two_clusters(&a, &b, "a"));
    std::fs::remove_file(proxy.config_file()).unwrap();
    // Nothing to wait for: give the watcher several settle periods to (wrongly) react.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        reloads(&proxy),
        Reloads {
            applied: 0.0,
            rejected: 0.0,
            last_ok: 1.0
        }
    );
    let main = proxy.listener("main");
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "a"
    );
    std::fs::write(proxy.config_file(), two_clusters(&a, &b, "b")).unwrap();
    wait_reloads(&proxy, 1, 0);
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "b"
    );
}

#[tokio::test]
async fn a_config_symlink_pointed_elsewhere_is_followed_for_later_edits() {
    let a = Upstream::start_named("a", Behaviour::Echo);
    let b = Upstream::start_named("b", Behaviour::Echo);
    // `link/remora.yaml -> ../one/remora.yaml`, as deploy tools lay out releases.
    let root = TempDir::new("symlinked");
    for dir in ["link", "one", "two"] {
        std::fs::create_dir(root.path().join(dir)).unwrap();
    }
    let real = |dir: &str| root.path().join(dir).join("remora.yaml");
    std::fs::write(real("one"), two_clusters(&a, &b, "a")).unwrap();
    let link = root.path().join("link/remora.yaml");
    std::os::unix::fs::symlink("../one/remora.yaml", &link).unwrap();
    let proxy = ProxyProcess::builder().config_file(&link).start();
    let main = proxy.listener("main");

    // Edited where it lives.
    std::fs::write(real("one"), two_clusters(&a, &b, "b")).unwrap();
    wait_reloads(&proxy, 1, 0);
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "b"
    );
    // Pointed at another directory (link replaced by rename, as `ln -sfn` does).
    std::fs::write(real("two"), two_clusters(&a, &b, "a")).unwrap();
    let tmp = root.path().join("link/remora.yaml.new");
    std::os::unix::fs::symlink("../two/remora.yaml", &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    wait_reloads(&proxy, 2, 0);
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "a"
    );
    // Edited where it lives now.
    std::fs::write(real("two"), two_clusters(&a, &b, "b")).unwrap();
    wait_reloads(&proxy, 3, 0);
    assert_eq!(
        client::get(main, Proto::Http1, "/").await.echo().upstream(),
        "b"
    );
}
