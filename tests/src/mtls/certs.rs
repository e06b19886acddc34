//! Certificates made in the test ([`TestCa`], [`Leaf`]) and a TLS client that presents them
//! whatever they are ([`tls_get`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, ClientConnection};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::raw::{self, RawResponse};

/// A CA that signs test certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM.
    pem: String,
}

impl TestCa {
    /// A new self-signed root, trusted by nobody.
    pub fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let pem = p.self_signed(&key).expect("self-sign the CA").pem();
        TestCa {
            issuer: Issuer::new(p, key),
            pem,
        }
    }

    /// A CA from its certificate and key files (`ca.crt`, `ca.key`), e.g. the mesh's dev CA.
    pub fn from_files(cert: &Path, key: &Path) -> TestCa {
        let read = |p: &Path| {
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        };
        let pem = read(cert);
        let key = KeyPair::from_pem(&read(key)).expect("the CA key");
        TestCa {
            issuer: Issuer::from_ca_cert_pem(&pem, key).expect("the CA certificate"),
            pem,
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate signed by this CA, and its key.
    pub fn sign(&self, leaf: &Leaf) -> Credential {
        let key = KeyPair::generate().expect("a leaf key");
        let mut p = CertificateParams::default();
        if let Some(uri) = &leaf.uri {
            p.subject_alt_names
                .push(SanType::URI(uri.as_str().try_into().expect("an IA5 URI")));
        }
        if let Some(dns) = &leaf.dns {
            p.subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into().expect("IA5")));
        }
        if let Some(cn) = &leaf.common_name {
            p.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        let at = |secs: i64| time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
        p.not_before = at(leaf.not_before);
        p.not_after = at(leaf.not_after);
        if leaf.ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        } else {
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        // As the mesh's own leaves: usable by both ends (a CA too, so that only its being a
        // CA is wrong with it).
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).expect("sign the leaf");
        Credential {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

/// A test certificate: what it names and when it is valid. [`Leaf::spiffe`] is a good one;
/// change a field to make it bad in one way.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// A URI SAN (where the SPIFFE ID belongs).
    pub uri: Option<String>,
    /// A DNS SAN.
    pub dns: Option<String>,
    /// The subject's CN.
    pub common_name: Option<String>,
    /// Seconds from now (negative: in the past).
    pub not_before: i64,
    pub not_after: i64,
    /// basicConstraints CA:true and keyCertSign: a CA certificate used as a leaf.
    pub ca: bool,
}

impl Leaf {
    /// A valid leaf for `id`, from a minute ago to an hour from now.
    pub fn spiffe(id: &str) -> Leaf {
        Leaf {
            uri: Some(id.to_owned()),
            dns: None,
            common_name: None,
            not_before: -60,
            not_after: 3600,
            ca: false,
        }
    }
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Credential {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// What [`tls_get`] saw.
#[derive(Debug)]
pub struct TlsExchange {
    /// The server's certificate chain, once the server sent it (leaf first).
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The version the handshake settled on, once it got that far.
    pub version: Option<rustls::ProtocolVersion>,
    /// The HTTP response, or why there was none.
    pub response: Result<RawResponse, String>,
}

impl TlsExchange {
    /// The server certificate's URI SANs.
    pub fn server_uris(&self) -> Vec<String> {
        self.server_chain.first().map(uris).unwrap_or_default()
    }
}

/// The URI SANs of a certificate.
pub fn uris(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

/// TLS 1.3 or 1.2.
pub type TlsVersion = &'static rustls::SupportedProtocolVersion;

pub const TLS13: TlsVersion = &rustls::version::TLS13;
pub const TLS12: TlsVersion = &rustls::version::TLS12;

/// Connects to `addr`, handshakes with TLS `version` presenting `client` (or no certificate),
/// trusting any server certificate, offering ALPN `http/1.1`, then sends `GET path` with
/// `Host: host` and reads the response. A server that refuses the client's certificate ends
/// the connection during the handshake (TLS 1.2) or right after it (TLS 1.3, where the client
/// finishes first): either way `response` is an `Err`.
///
/// Blocking, as [`raw`]: for a few milliseconds.
pub fn tls_get(
    addr: SocketAddr,
    version: TlsVersion,
    client: Option<&Credential>,
    host: &str,
    path: &str,
) -> TlsExchange {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[version])
            .expect("ring does TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(remora_proxy::tls::testing::AnyServer));
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .expect("a usable client certificate"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut conn = ClientConnection::new(Arc::new(config), ServerName::IpAddress(addr.ip().into()))
        .expect("a client connection");
    let mut sock = raw::connect(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let response = {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(request.as_bytes())
            .and_then(|()| tls.flush())
            .map_err(|e| format!("handshake or send: {e}"))
            .and_then(|()| {
                RawResponse::read_from(&mut tls, false).map_err(|e| format!("read: {e}"))
            })
    };
    TlsExchange {
        server_chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default(),
        version: conn.protocol_version(),
        response,
    }
}

/// The key identifier of the CA that signed a certificate (its authority key identifier):
/// which root a leaf chains to, during a rollover.
pub fn authority_key_id(der: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The subject key identifier of the first certificate of a PEM text (a CA's `ca.crt`).
pub fn subject_key_id(pem: &str) -> Option<Vec<u8>> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}
