//! TLS for what the control plane serves to the network: a certificate its own CA signs at
//! start for the names clients dial (the Service's DNS names), for the injection webhook and
//! the sidecars' API (`--listen-tls`). Clients trust the mesh's root: the API server through
//! the webhook configuration's `caBundle`, sidecars through `--control-plane-ca` (injection
//! sets it).

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ca::Ca;

/// A server config with a fresh certificate from `ca` for `dns_names`, TLS 1.3 and 1.2
/// (ECDHE + AEAD, ring's suites), offering `alpn`.
pub fn server_config(
    ca: &Ca,
    dns_names: &[String],
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (chain, key) = ca
        .serving_certificate(
            dns_names,
            std::time::SystemTime::now(),
            &mut crate::ca::os_rng(),
        )
        .map_err(|e| format!("serving certificate: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("serving key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
