//! Kubernetes service-account tokens as the credential for a workload certificate: the
//! injected sidecar shows its pod's projected token (audience `remora`), and the control plane
//! asks the API server who it belongs to (a TokenReview). The identity signed is the one the
//! API server names, `system:serviceaccount:<namespace>:<name>`, and only if it is the one
//! asked for.
//!
//! The control plane needs `create` on `tokenreviews` for this (the built-in
//! `system:auth-delegator` ClusterRole).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// The audience injected sidecars' projected tokens are minted for: a token for another
/// audience (the API server's own, say) is not accepted, so a stolen token of another kind
/// cannot be replayed here.
pub const AUDIENCE: &str = "remora";

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to ask the API server.
pub struct TokenReviewer {
    /// `host:port` of the API server.
    authority: String,
    /// The name its certificate is checked against.
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    /// The control plane's own token, re-read at every review (kubelet rotates it).
    bearer: PathBuf,
    audience: String,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("authority", &self.authority)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// `url`: `https://host:port` of the API server; `ca`: PEM roots for its certificate;
    /// `bearer`: a file holding the control plane's own token.
    pub fn new(
        url: &str,
        ca: &std::path::Path,
        bearer: PathBuf,
        audience: &str,
    ) -> Result<Self, String> {
        let authority = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("'{url}' is not https://HOST:PORT"))?
            .trim_end_matches('/')
            .to_owned();
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => authority.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("'{host}' is not a server name: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(TokenReviewer {
            authority,
            server_name,
            tls: Arc::new(tls),
            bearer,
            audience: audience.to_owned(),
        })
    }

    /// The in-cluster API server, from the pod's environment and service-account files.
    pub fn in_cluster(audience: &str) -> Result<Self, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "not in a Kubernetes pod (no KUBERNETES_SERVICE_HOST)".to_owned())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = match host.contains(':') {
            true => format!("[{host}]"),
            false => host,
        };
        let sa = std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
        Self::new(
            &format!("https://{host}:{port}"),
            &sa.join("ca.crt"),
            sa.join("token"),
            audience,
        )
        .map(|mut r| {
            // The API server's certificate names `kubernetes.default.svc`, not the IP.
            r.server_name = ServerName::try_from("kubernetes.default.svc").expect("a DNS name");
            r
        })
    }

    /// Who `token` belongs to: `(namespace, service account)`, if the API server says it is
    /// a valid service-account token for our audience.
    pub async fn review(&self, token: &str) -> Result<(String, String), String> {
        let bearer = std::fs::read_to_string(&self.bearer)
            .map_err(|e| format!("cannot read our own token {}: {e}", self.bearer.display()))?;
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token, "audiences": [self.audience] },
        });
        let answer = tokio::time::timeout(TIMEOUT, self.post(bearer.trim(), body.to_string()))
            .await
            .map_err(|_| "the API server did not answer in time".to_owned())??;
        identity_of(&answer, &self.audience)
    }

    async fn post(&self, bearer: &str, body: String) -> Result<Value, String> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("cannot reach the API server at {}: {e}", self.authority))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS with the API server: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post("/apis/authentication.k8s.io/v1/tokenreviews")
            .header(http::header::HOST, &self.authority)
            .header(http::header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "the API server answered the TokenReview {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("not a TokenReview: {e}"))
    }
}

/// The service account a TokenReview answer names, if it authenticated the token for
/// `audience`.
pub fn identity_of(review: &Value, audience: &str) -> Result<(String, String), String> {
    let status = &review["status"];
    if status["authenticated"] != json!(true) {
        let why = status["error"].as_str().unwrap_or("not authenticated");
        return Err(format!("the API server did not accept the token: {why}"));
    }
    // An API server that checked audiences says which; one that did not, says none.
    let audiences = status["audiences"].as_array();
    if !audiences.is_some_and(|a| a.iter().any(|x| x == audience)) {
        return Err(format!("the token is not for audience '{audience}'"));
    }
    let username = status["user"]["username"].as_str().unwrap_or_default();
    let mut parts = username.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("system"), Some("serviceaccount"), Some(ns), Some(sa))
            if !ns.is_empty() && !sa.is_empty() =>
        {
            Ok((ns.to_owned(), sa.to_owned()))
        }
        _ => Err(format!("'{username}' is not a service account")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(authenticated: bool, username: &str, audiences: &[&str]) -> Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "status": {
                "authenticated": authenticated,
                "user": { "username": username, "groups": ["system:serviceaccounts"] },
                "audiences": audiences,
            }
        })
    }

    #[test]
    fn only_an_authenticated_service_account_for_our_audience_counts() {
        assert_eq!(
            identity_of(
                &answer(true, "system:serviceaccount:shop:web", &["remora"]),
                "remora"
            ),
            Ok(("shop".into(), "web".into()))
        );
        assert!(
            identity_of(
                &answer(false, "system:serviceaccount:shop:web", &["remora"]),
                "remora"
            )
            .is_err()
        );
        assert!(
            identity_of(
                &answer(
                    true,
                    "system:serviceaccount:shop:web",
                    &["https://kubernetes.default.svc"]
                ),
                "remora"
            )
            .is_err()
        );
        assert!(
            identity_of(
                &answer(true, "system:serviceaccount:shop:web", &[]),
                "remora"
            )
            .is_err()
        );
        assert!(identity_of(&answer(true, "alice", &["remora"]), "remora").is_err());
        assert!(
            identity_of(
                &answer(true, "system:serviceaccount:shop", &["remora"]),
                "remora"
            )
            .is_err()
        );
        assert!(identity_of(&answer(true, "system:node:worker-1", &["remora"]), "remora").is_err());
    }
}
