//! Real handshakes between two [`TlsState`]s over an in-memory pipe, with certificates made
//! here by a test CA: what is accepted, and each reason a peer is refused.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }
}

/// How a test leaf differs from a good one.
#[derive(Default)]
struct Leaf<'a> {
    uri: Option<&'a str>,
    dns: Option<&'a str>,
    common_name: Option<&'a str>,
    /// Seconds from now.
    not_before: i64,
    not_after: i64,
    ca: bool,
}

fn time(offset: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::seconds(offset)
}

/// A leaf signed by `ca`: chain PEM and key.
fn leaf(ca: &Ca, l: Leaf<'_>) -> (String, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    if let Some(uri) = l.uri {
        p.subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    if let Some(dns) = l.dns {
        p.subject_alt_names
            .push(SanType::DnsName(dns.try_into().unwrap()));
    }
    if let Some(cn) = l.common_name {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.not_before = time(if l.not_before == 0 { -60 } else { l.not_before });
    p.not_after = time(if l.not_after == 0 { 3600 } else { l.not_after });
    if l.ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    }
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.pem(), der)
}

const WEB: &str = "spiffe://td/ns/shop/sa/web";
const API: &str = "spiffe://td/ns/shop/sa/api";

fn state(ca: &Ca, uri: &str) -> TlsState {
    let s = TlsState::new();
    let (chain, key) = leaf(
        ca,
        Leaf {
            uri: Some(uri),
            ..Leaf::default()
        },
    );
    s.install(&chain, key, &ca.pem()).unwrap();
    s
}

/// A client that presents `chain` whatever it is (bypassing the sidecar's own refusal to use
/// a bad certificate) and trusts any server: to see what the server accepts.
fn raw_client(chain: &str, key: PrivateKeyDer<'static>) -> Arc<ClientConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(super::testing::AnyServer))
        .with_client_auth_cert(certs, key)
        .unwrap();
    Arc::new(c)
}

/// One handshake; each side's result (the peer's identity, or why it failed).
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<SpiffeId, String>, Result<SpiffeId, String>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = async {
        match tokio_rustls::TlsAcceptor::from(server).accept(a).await {
            Ok(mut s) => {
                // Complete the exchange so the client learns the outcome.
                let mut byte = [0u8; 1];
                let _ = s.read_exact(&mut byte).await;
                let _ = s.write_all(b"!").await;
                peer_identity(s.get_ref().1).ok_or_else(|| "no identity".to_owned())
            }
            Err(e) => Err(failure_reason(&e).to_owned()),
        }
    };
    let connect = async {
        let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        match tokio_rustls::TlsConnector::from(client)
            .connect(name, b)
            .await
        {
            Ok(mut s) => {
                let _ = s.write_all(b"?").await;
                let mut byte = [0u8; 1];
                match s.read_exact(&mut byte).await {
                    Ok(_) => peer_identity(s.get_ref().1).ok_or_else(|| "no identity".to_owned()),
                    Err(e) => Err(failure_reason(&e).to_owned()),
                }
            }
            Err(e) => Err(failure_reason(&e).to_owned()),
        }
    };
    tokio::join!(accept, connect)
}

#[tokio::test]
async fn two_sidecars_of_one_mesh_see_each_others_identity() {
    let ca = Ca::new("root");
    let (server, client) = (state(&ca, API), state(&ca, WEB));
    let (s, c) = handshake(server.server_config(), client.client_config(Some(true))).await;
    assert_eq!(s.unwrap().to_string(), WEB);
    assert_eq!(c.unwrap().to_string(), API);
    let workload = server.workload().unwrap();
    assert_eq!(workload.id.to_string(), API);
    assert!(!workload.serial.is_empty());
    assert!(workload.not_after > SystemTime::now() + Duration::from_secs(3000));
}

#[tokio::test]
async fn the_server_refuses_each_bad_client_certificate() {
    let ca = Ca::new("root");
    let other = Ca::new("another root");
    let server = state(&ca, API);
    let cases: Vec<(&str, (String, PrivateKeyDer<'static>), &str)> = vec![
        (
            "another CA",
            leaf(
                &other,
                Leaf {
                    uri: Some(WEB),
                    ..Leaf::default()
                },
            ),
            "unknown-issuer",
        ),
        (
            "expired",
            leaf(
                &ca,
                Leaf {
                    uri: Some(WEB),
                    not_before: -7200,
                    not_after: -60,
                    ..Leaf::default()
                },
            ),
            "expired",
        ),
        (
            "not yet valid",
            leaf(
                &ca,
                Leaf {
                    uri: Some(WEB),
                    not_before: 600,
                    not_after: 7200,
                    ..Leaf::default()
                },
            ),
            "not-yet-valid",
        ),
        (
            "a CA certificate as the leaf",
            leaf(
                &ca,
                Leaf {
                    uri: Some(WEB),
                    ca: true,
                    ..Leaf::default()
                },
            ),
            "invalid-certificate",
        ),
        (
            "the SPIFFE ID only as a DNS name",
            leaf(
                &ca,
                Leaf {
                    dns: Some("web.shop.svc"),
                    common_name: Some(WEB),
                    ..Leaf::default()
                },
            ),
            "no-spiffe-id",
        ),
        (
            "the SPIFFE ID only as the CN",
            leaf(
                &ca,
                Leaf {
                    common_name: Some(WEB),
                    ..Leaf::default()
                },
            ),
            "no-spiffe-id",
        ),
        (
            "a URI that is not a workload SPIFFE ID",
            leaf(
                &ca,
                Leaf {
                    uri: Some("https://web.shop/"),
                    ..Leaf::default()
                },
            ),
            "no-spiffe-id",
        ),
    ];
    for (what, (chain, key), reason) in cases {
        let (s, _) = handshake(server.server_config(), raw_client(&chain, key)).await;
        assert_eq!(s, Err(reason.to_owned()), "{what}");
    }
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let ca = Ca::new("root");
    let server = state(&ca, API);
    let client = TlsState::new();
    client.set_bundle(&ca.pem()).unwrap();
    let (s, c) = handshake(server.server_config(), client.client_config(Some(false))).await;
    assert_eq!(s, Err("no-client-certificate".to_owned()));
    assert!(c.is_err());
}

/// An expired certificate is never used (fail closed): the sidecar has no identity, and a
/// server with only an expired certificate cannot complete a handshake.
#[tokio::test]
async fn an_expired_workload_certificate_is_not_presented() {
    let ca = Ca::new("root");
    let server = TlsState::new();
    let (chain, key) = leaf(
        &ca,
        Leaf {
            uri: Some(API),
            not_before: -7200,
            not_after: -1,
            ..Leaf::default()
        },
    );
    server.install(&chain, key, &ca.pem()).unwrap();
    assert!(!server.has_identity());
    let client = state(&ca, WEB);
    let (s, c) = handshake(server.server_config(), client.client_config(Some(true))).await;
    assert!(s.is_err() && c.is_err(), "{s:?} {c:?}");
}

/// A client refuses a server whose certificate does not chain to its bundle; a new bundle
/// with both roots (a rollover) accepts either.
#[tokio::test]
async fn the_bundle_decides_whom_to_trust_and_may_hold_two_roots() {
    let old = Ca::new("old root");
    let new = Ca::new("new root");
    let server = state(&new, API);
    let client = state(&old, WEB);
    let (_, c) = handshake(server.server_config(), client.client_config(Some(true))).await;
    assert_eq!(c, Err("unknown-issuer".to_owned()));

    let both = format!("{}{}", old.pem(), new.pem());
    assert_eq!(client.set_bundle(&both).unwrap(), 2);
    assert_eq!(server.set_bundle(&both).unwrap(), 2);
    let (s, c) = handshake(server.server_config(), client.client_config(Some(true))).await;
    assert_eq!(c.unwrap().to_string(), API);
    assert_eq!(s.unwrap().to_string(), WEB);
}

#[test]
fn a_certificate_must_be_for_the_key() {
    let ca = Ca::new("root");
    let (chain, _) = leaf(
        &ca,
        Leaf {
            uri: Some(WEB),
            ..Leaf::default()
        },
    );
    let (_, other_key) = leaf(
        &ca,
        Leaf {
            uri: Some(WEB),
            ..Leaf::default()
        },
    );
    let err = TlsState::new().install(&chain, other_key, "").unwrap_err();
    assert!(err.contains("not for this key"), "{err}");
}

#[test]
fn peer_identity_series_are_bounded() {
    let m = TlsMetrics::default();
    for i in 0..MAX_IDENTITIES + 10 {
        m.peer(&SpiffeId::new("td", "ns", &format!("sa{i}")));
    }
    let mut registry = Registry::default();
    m.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("tls_peer_identities_total{"))
        .count();
    assert_eq!(series, MAX_IDENTITIES + 1, "256 IDs and 'other'");
    assert!(text.contains("tls_peer_identities_total{identity=\"other\"} 10"));
}
