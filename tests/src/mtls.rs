//! Mutual TLS between sidecars, seen from outside: the files a mesh with a CA needs, certificates
//! made here to knock on a sidecar's door with, a TLS client that presents them, and a forwarder
//! that records what crosses the wire.
//!
//! - [`MeshPki`]: a bootstrap-tokens file, a token file for sidecars, and a `--dev-ca-dir`
//!   (kept across control-plane restarts); the flags for both;
//! - [`TestCa`]: a CA made here, or the mesh's own read from the dev CA directory, and the
//!   [`Leaf`] certificates it signs, good or bad on purpose;
//! - [`tls_get`]: one TLS handshake presenting a chosen certificate (or none) and, if it gets
//!   that far, one `GET`: what a peer sees of a sidecar's inbound listener;
//! - [`Recorder`]: a TCP forwarder that keeps every byte of every connection, both ways;
//! - [`installed_serials`] and [`ca_init`]: a sidecar's certificate history from its log, and
//!   `remora ca init`.

mod certs;
mod recorder;

pub use certs::{
    Credential, Leaf, TLS12, TLS13, TestCa, TlsExchange, TlsVersion, authority_key_id,
    subject_key_id, tls_get, uris,
};
pub use recorder::{Recorded, Recorder};

use std::path::{Path, PathBuf};

use crate::control_plane::remora;
use crate::process::ProxyProcess;
use crate::util::TempDir;

/// The trust domain the control plane uses unless told otherwise.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The SPIFFE ID of a workload.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// The files of a mesh that issues certificates: one bootstrap token granting every service
/// account of the namespaces it was made for, and the dev CA's directory.
pub struct MeshPki {
    dir: TempDir,
}

/// The bootstrap token of every test mesh: as long and random-looking as the docs ask.
const TOKEN: &str = "e2e0b5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9";

impl MeshPki {
    /// Grants `namespace/*` for each namespace.
    pub fn new(namespaces: &[&str]) -> MeshPki {
        let dir = TempDir::new("pki");
        let tokens: String = namespaces
            .iter()
            .map(|ns| format!("{TOKEN} {ns}/*\n"))
            .collect();
        std::fs::write(dir.path().join("tokens"), tokens).expect("write the tokens file");
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("write the token");
        MeshPki { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `--bootstrap-tokens`.
    pub fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// What sidecars get as `--identity-token-file`.
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// `--dev-ca-dir`: made by the control plane on its first start, reused after.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("dev-ca")
    }

    /// Control-plane flags: the tokens, the dev CA kept in [`MeshPki::ca_dir`], and this
    /// certificate lifetime (`60s`, say).
    pub fn control_plane_args(&self, cert_lifetime: &str) -> Vec<String> {
        vec![
            "--bootstrap-tokens".into(),
            self.tokens_file().display().to_string(),
            "--dev-ca-dir".into(),
            self.ca_dir().display().to_string(),
            "--cert-lifetime".into(),
            cert_lifetime.into(),
        ]
    }

    /// Control-plane flags with a CA of one's own instead of the dev CA.
    pub fn own_ca_args(
        &self,
        cert_lifetime: &str,
        ca: &Path,
        bundle: Option<&Path>,
    ) -> Vec<String> {
        let mut args = vec![
            "--bootstrap-tokens".into(),
            self.tokens_file().display().to_string(),
            "--cert-lifetime".into(),
            cert_lifetime.into(),
            "--ca-cert".into(),
            ca.join("ca.crt").display().to_string(),
            "--ca-key".into(),
            ca.join("ca.key").display().to_string(),
        ];
        if let Some(bundle) = bundle {
            args.push("--trust-bundle".into());
            args.push(bundle.display().to_string());
        }
        args
    }

    /// Sidecar flags: the token file, in `namespace`, on any ports.
    pub fn sidecar_args(&self, namespace: &str) -> Vec<String> {
        vec![
            "--identity-token-file".into(),
            self.token_file().display().to_string(),
            "--namespace".into(),
            namespace.into(),
            "--outbound".into(),
            "127.0.0.1:0".into(),
        ]
    }

    /// The mesh's dev CA, to sign certificates the sidecars trust. Panics if the control
    /// plane has not made it yet.
    pub fn mesh_ca(&self) -> TestCa {
        let dir = self.ca_dir();
        TestCa::from_files(&dir.join("ca.crt"), &dir.join("ca.key"))
    }
}

/// `remora ca init --trust-domain cluster.local --out DIR`: a new root, `DIR/ca.crt` and
/// `DIR/ca.key`. Panics if it fails.
pub fn ca_init(out: &Path) {
    let out_s = out.display().to_string();
    let done = remora(&[
        "ca",
        "init",
        "--trust-domain",
        TRUST_DOMAIN,
        "--out",
        &out_s,
    ]);
    assert!(
        done.status.success(),
        "remora ca init: {}\n{}",
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
}

/// What a sidecar logged about its certificates so far: the serial of each one installed
/// (`workload certificate installed identity=... serial=... renew_in=...`), oldest first.
pub fn installed_serials(proxy: &ProxyProcess) -> Vec<String> {
    proxy
        .stderr()
        .lines()
        .iter()
        .filter(|l| l.contains("workload certificate installed"))
        .filter_map(|l| {
            let serial = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("serial="))?;
            Some(serial.to_owned())
        })
        .collect()
}

/// `remora_tls_handshakes_total{direction, result}` of a sidecar (0 when never counted).
pub fn handshakes(proxy: &ProxyProcess, direction: &str, result: &str) -> f64 {
    proxy
        .metric(
            "remora_tls_handshakes_total",
            &[("direction", direction), ("result", result)],
        )
        .unwrap_or(0.0)
}

/// Every `remora_tls_handshakes_total{direction}` result of a sidecar with its count, e.g.
/// `[("ok", 12.0)]`: to check that nothing but the expected results happened.
pub fn handshake_results(proxy: &ProxyProcess, direction: &str) -> Vec<(String, f64)> {
    let m = proxy.scrape();
    let mut results: Vec<(String, f64)> = m
        .matching("remora_tls_handshakes_total", &[("direction", direction)])
        .map(|s| (s.label("result").unwrap_or("").to_owned(), s.value))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}
