//! Mutual TLS between sidecars: the workload certificate, the trust bundle, and the rustls
//! configs that use them.
//!
//! - [`TlsState`] holds the workload's certificate and key (issued by the control plane for a
//!   CSR whose private key never leaves this process, see [`workload`]) and the roots it
//!   trusts. Both are swapped atomically: a rotation or a root rollover changes what the next
//!   handshake uses, and nothing else. Connections already open keep their session.
//! - Peers are authenticated by chain (to a root of the bundle, for the right usage: serverAuth
//!   or clientAuth) and by identity: exactly one URI SAN, a SPIFFE ID
//!   ([`remora_config::identity::SpiffeId`]). A certificate whose SPIFFE ID is only in a DNS
//!   name or the subject is refused in the handshake. A CA certificate used as a leaf, an
//!   expired or not-yet-valid one, or one from another CA fails the chain check (webpki).
//! - Without a valid certificate (none issued yet, or expired and not renewed) the sidecar
//!   fails closed: inbound handshakes fail, outbound requests to mTLS clusters get 503.
//!
//! The state is process-wide ([`global`]): a sidecar has one identity.

pub mod inbound;
pub mod workload;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remora_config::identity::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// ALPN: what the peer sidecar serves on the decrypted connection.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The workload's certificate, ready for handshakes.
#[derive(Debug)]
pub struct Workload {
    pub certified: Arc<CertifiedKey>,
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex, as the control plane logs it.
    pub serial: String,
}

impl Workload {
    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// What handshakes read: swapped whole on rotation or rollover.
#[derive(Debug)]
struct Store {
    workload: ArcSwapOption<Workload>,
    roots: ArcSwap<RootCertStore>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            workload: ArcSwapOption::empty(),
            roots: ArcSwap::from_pointee(RootCertStore::empty()),
        }
    }
}

impl Store {
    /// The certificate, unless it expired (or is not valid yet): then none, and handshakes
    /// that need one fail. Never an expired certificate: fail closed.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let w = self.workload.load();
        let w = w.as_ref()?;
        w.valid_at(SystemTime::now()).then(|| w.certified.clone())
    }
}

/// The process's identity and trust, and the configs built on them (once: they read the
/// store at each handshake).
pub struct TlsState {
    store: Arc<Store>,
    server: Arc<ServerConfig>,
    client_h1: Arc<ClientConfig>,
    client_h2: Arc<ClientConfig>,
    client_tcp: Arc<ClientConfig>,
    pub metrics: TlsMetrics,
}

/// The sidecar's TLS state.
pub fn global() -> &'static TlsState {
    static STATE: OnceLock<TlsState> = OnceLock::new();
    STATE.get_or_init(TlsState::new)
}

/// The roots in `pem` (`what` names it in errors); at least one.
fn root_store(pem: &str, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("{what}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{what}: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(roots)
}

/// A client config for the control plane's TLS listener: the server's certificate must chain
/// to one of `roots_pem` (the mesh's root, PEM) for the name dialled; ALPN h2; no client
/// certificate (the sidecar proves who it is with its token, inside).
pub fn control_plane_client(roots_pem: &str) -> Result<Arc<ClientConfig>, String> {
    let roots = root_store(roots_pem, "the control plane's CA")?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<CryptoProvider> {
    // ring's suites are TLS 1.3's three and, for TLS 1.2, only ECDHE with AES-GCM or
    // ChaCha20-Poly1305: exactly what the issue allows.
    Arc::new(rustls::crypto::ring::default_provider())
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

impl TlsState {
    pub fn new() -> Self {
        let store = Arc::new(Store::default());
        let versions: &[&'static rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("ring supports TLS 1.2 and 1.3")
            .with_client_cert_verifier(Arc::new(ClientVerifier(store.clone())))
            .with_cert_resolver(Arc::new(Resolver(store.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        let client = |alpn: &[&[u8]]| {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(versions)
                .expect("ring supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ServerVerifier(store.clone())))
                .with_client_cert_resolver(Arc::new(Resolver(store.clone())));
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        TlsState {
            server: Arc::new(server),
            client_h1: client(&[ALPN_HTTP1]),
            client_h2: client(&[ALPN_H2]),
            client_tcp: client(&[]),
            store,
            metrics: TlsMetrics::default(),
        }
    }

    /// Installs a certificate chain (leaf first, PEM) with its private key, and the trust
    /// bundle that came with it (PEM; empty keeps the current one).
    pub fn install(
        &self,
        chain_pem: &str,
        key: PrivateKeyDer<'static>,
        bundle_pem: &str,
    ) -> Result<Arc<Workload>, String> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| format!("certificate chain: {e}"))?;
        let leaf = chain.first().ok_or("the certificate chain is empty")?;
        let (id, not_before, not_after, serial) = describe(leaf)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("private key: {e}"))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| format!("the certificate is not for this key: {e}"))?;
        if !bundle_pem.is_empty() {
            self.set_bundle(bundle_pem)?;
        }
        let workload = Arc::new(Workload {
            certified: Arc::new(certified),
            id,
            not_before,
            not_after,
            serial,
        });
        self.metrics.expiry.set(
            not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        self.store.workload.store(Some(workload.clone()));
        Ok(workload)
    }

    /// Replaces the roots the mesh trusts (several during a root rollover).
    pub fn set_bundle(&self, bundle_pem: &str) -> Result<usize, String> {
        let roots = root_store(bundle_pem, "the trust bundle")?;
        let n = roots.len();
        self.store.roots.store(Arc::new(roots));
        Ok(n)
    }

    /// The current certificate, valid or not.
    pub fn workload(&self) -> Option<Arc<Workload>> {
        self.store.workload.load_full()
    }

    /// Whether there is a certificate valid now.
    pub fn has_identity(&self) -> bool {
        self.store.current().is_some()
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// A client config offering the ALPN of `protocol` (`None`: opaque TCP, no ALPN).
    pub fn client_config(&self, http2: Option<bool>) -> Arc<ClientConfig> {
        match http2 {
            Some(true) => self.client_h2.clone(),
            Some(false) => self.client_h1.clone(),
            None => self.client_tcp.clone(),
        }
    }
}

impl Default for TlsState {
    fn default() -> Self {
        Self::new()
    }
}

/// The identity, validity and serial of a certificate.
fn describe(
    der: &CertificateDer<'_>,
) -> Result<(SpiffeId, SystemTime, SystemTime, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let id = spiffe_id(der).map_err(|e| format!("the certificate's identity: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let validity = cert.validity();
    Ok((
        id,
        time(validity.not_before),
        time(validity.not_after),
        cert.raw_serial_as_string().replace(':', ""),
    ))
}

/// The certificate's SPIFFE ID: its one URI SAN. A DNS name or subject that looks like one
/// does not count, and neither do two URIs.
pub fn spiffe_id(der: &CertificateDer<'_>) -> Result<SpiffeId, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?
        .ok_or("no subjectAltName, so no SPIFFE ID")?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => SpiffeId::parse(uri),
        (None, _) => Err("no URI SAN, so no SPIFFE ID".into()),
        (Some(_), Some(_)) => Err("more than one URI SAN".into()),
    }
}

/// The verified peer's identity after a handshake.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<SpiffeId> {
    spiffe_id(conn.peer_certificates()?.first()?).ok()
}

/// Verifies a peer's chain against the bundle for `usage`, and that it carries a SPIFFE ID.
fn verify_peer(
    store: &Store,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<SpiffeId, rustls::Error> {
    let roots = store.roots.load();
    if roots.is_empty() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
    }
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    cert.verify_for_usage(
        algorithms().all,
        &roots.roots,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(webpki_error)?;
    spiffe_id(end_entity).map_err(|_| {
        rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
    })
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let kind = match e {
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        // A CA certificate as the leaf, a wrong extended key usage, and the rest.
        other => CertificateError::Other(rustls::OtherError(Arc::new(WebpkiError(other)))),
    };
    rustls::Error::InvalidCertificate(kind)
}

#[derive(Debug)]
struct WebpkiError(webpki::Error);

impl std::fmt::Display for WebpkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for WebpkiError {}

/// A short reason for a failed handshake, for metrics: bounded, unlike error messages.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not-yet-valid"
            }
            CertificateError::UnknownIssuer => "unknown-issuer",
            CertificateError::ApplicationVerificationFailure => "no-spiffe-id",
            CertificateError::BadEncoding => "bad-certificate",
            _ => "invalid-certificate",
        },
        rustls::Error::NoCertificatesPresented => "no-client-certificate",
        rustls::Error::AlertReceived(_) => "alert-received",
        rustls::Error::PeerIncompatible(_) | rustls::Error::PeerMisbehaved(_) => "incompatible",
        rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::InvalidMessage(_) => "bad-message",
        _ => "other",
    }
}

/// The handshake-signature checks of a verifier, the same on both sides: ring's algorithms.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            algorithms().supported_schemes()
        }
    };
}

/// For tests only: what a client that trusts any server needs, to see what a sidecar's server
/// side accepts of certificates made on purpose.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;
    use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
    use rustls_pki_types::{ServerName, UnixTime};

    /// Trusts any server certificate (handshake signatures are still checked).
    #[derive(Debug)]
    pub struct AnyServer;

    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        signature_checks!();
    }
}

/// The workload certificate for both sides of a handshake.
#[derive(Debug)]
struct Resolver(Arc<Store>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current()
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

/// Inbound: a client certificate is required, chained to the bundle for clientAuth, with a
/// SPIFFE ID.
#[derive(Debug)]
struct ClientVerifier(Arc<Store>);

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_peer(
            &self.0,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}

/// Outbound: the server's chain for serverAuth, with a SPIFFE ID. Which ID is checked after
/// the handshake, against the cluster's ([`peer_identity`]), before any request is sent; the
/// name rustls passes is not used (the peer has no DNS name to prove).
#[derive(Debug)]
struct ServerVerifier(Arc<Store>);

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_peer(
            &self.0,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

/// At most this many peer identities get a series of their own; the rest share `other`.
const MAX_IDENTITIES: usize = 256;

/// `remora_tls_*`.
#[derive(Default)]
pub struct TlsMetrics {
    handshakes: Family<HandshakeLabels, Counter>,
    expiry: Gauge,
    peers: Family<IdentityLabels, Counter>,
    seen: Mutex<HashSet<String>>,
}

impl TlsMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tls_handshakes",
            "TLS handshakes by direction and result (ok, or why they failed)",
            self.handshakes.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the workload certificate expires (0: none yet)",
            self.expiry.clone(),
        );
        registry.register(
            "tls_peer_identities",
            "Connections by peer SPIFFE ID (at most 256 IDs, then 'other')",
            self.peers.clone(),
        );
    }

    pub fn handshake(&self, direction: &'static str, result: &'static str) {
        self.handshakes
            .get_or_create(&HandshakeLabels { direction, result })
            .inc();
    }

    pub fn peer(&self, id: &SpiffeId) {
        let id = id.to_string();
        let identity = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(&id) || seen.len() < MAX_IDENTITIES {
                seen.insert(id.clone());
                id
            } else {
                "other".to_owned()
            }
        };
        self.peers.get_or_create(&IdentityLabels { identity }).inc();
    }
}

#[cfg(test)]
mod tests;
