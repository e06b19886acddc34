//! The control plane as the mesh's CA: every property of an issued certificate, read back with
//! x509-parser and checked by rustls as a sidecar would; who may ask for what; the CA files
//! checked at start; and `POST /v1/certificate` over a real socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use remora_config::protocol::{CertificateRequest, CertificateResponse};
use remora_control_plane::ca::{self, BACKDATE, Ca, Issued, Policy, Refusal};
use remora_control_plane::token_review::TokenReviewer;
use remora_control_plane::tokens::{TokenError, Tokens};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// A fixed "now" (2026-09-21): every check of validity is against it, not the clock.
const NOW_SECS: u64 = 1_790_000_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn policy() -> Policy {
    Policy::try_new("cluster.local", ca::DEFAULT_LIFETIME).unwrap()
}

fn new_root() -> (String, String) {
    ca::generate_root("cluster.local", 365 * DAY, now()).unwrap()
}

const TOKENS: &str = "tok-web shop/web\ntok-shop shop/*\n";

fn tokens() -> Tokens {
    Tokens::parse(TOKENS).unwrap()
}

/// A CSR that asks for much more than it will get: another identity, DNS names, a subject.
fn greedy_csr(key: &KeyPair) -> String {
    let mut params =
        CertificateParams::new(vec!["evil.example.com".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://cluster.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    params
        .distinguished_name
        .push(DnType::CommonName, "admin.kube-system");
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn ask(token: &str, namespace: &str, service_account: &str, csr: &str) -> CertificateRequest {
    CertificateRequest {
        token: token.to_owned(),
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        csr: csr.to_owned(),
    }
}

fn certify(ca: &Ca, ask: &CertificateRequest) -> Result<Issued, Refusal> {
    ca.certify(Some(&tokens()), ask, now(), &mut ca::os_rng())
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn x509<'a>(der: &'a [u8]) -> X509Certificate<'a> {
    let (rest, cert) = X509Certificate::from_der(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn ski(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .expect("a subject key identifier")
}

fn aki(cert: &X509Certificate<'_>) -> Vec<u8> {
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .expect("an authority key identifier")
}

/// Whether rustls (webpki), as a sidecar accepting a client, takes `chain` under `roots`.
fn rustls_accepts(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    at: SystemTime,
) -> Result<(), rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .unwrap();
    let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap());
    verifier
        .verify_client_cert(&chain[0], &chain[1..], at)
        .map(drop)
}

#[test]
fn a_leaf_has_exactly_the_properties_of_a_workload_certificate() {
    let (root_pem, root_key) = new_root();
    let ca = Ca::from_pem(&root_pem, &root_key, None, &policy(), now()).unwrap();
    let key = KeyPair::generate().unwrap();
    let issued = certify(&ca, &ask("tok-web", "shop", "web", &greedy_csr(&key))).unwrap();
    let r = &issued.response;
    let chain = ders(&r.certificate_chain);
    assert_eq!(chain.len(), 1, "a root CA sends the leaf alone");
    assert_eq!(chain[0].as_ref(), issued.leaf.as_slice());
    let root_der = ders(&root_pem).remove(0);
    assert_eq!(ders(&r.trust_bundle), vec![root_der.clone()]);
    let (leaf, root) = (x509(&chain[0]), x509(&root_der));

    // Validity: from a minute ago (clock skew) to now + the lifetime.
    let v = leaf.validity();
    assert_eq!(
        v.not_before.timestamp() as u64,
        NOW_SECS - BACKDATE.as_secs()
    );
    assert_eq!(v.not_after.timestamp() as u64, NOW_SECS + 24 * 3600);
    assert_eq!(
        (r.not_before_unix, r.not_after_unix),
        (NOW_SECS - 60, NOW_SECS + 86400)
    );

    // The subject and the one name: the token's identity, not what the CSR asked for.
    assert_eq!(leaf.subject().to_string(), "O=cluster.local, CN=web.shop");
    assert_eq!(leaf.issuer().as_raw(), root.subject().as_raw());
    let san = leaf.subject_alternative_name().unwrap().expect("a SAN");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://cluster.local/ns/shop/sa/web")]
    );
    assert_eq!(
        issued.id.to_string(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );

    // Key usage: digitalSignature only, critical.
    let ku = leaf.key_usage().unwrap().expect("key usage");
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert_eq!(ku.value.flags, 1, "digitalSignature and nothing else");
    // Extended key usage: serverAuth and clientAuth, nothing else.
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extended key usage")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && !eku.email_protection && !eku.time_stamping);
    assert!(!eku.ocsp_signing && eku.other.is_empty());
    // Not a CA, critically.
    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("basic constraints");
    assert!(bc.critical && !bc.value.ca);

    // Key identifiers: the leaf's own, and its issuer's.
    assert!(!ski(&leaf).is_empty());
    assert_eq!(aki(&leaf), ski(&root));

    // Serial: positive, at least 64 bits, as the response says.
    let serial = leaf.raw_serial();
    assert_eq!(serial[0] & 0x80, 0, "positive");
    assert!(serial.len() >= 8, "{} bytes", serial.len());
    let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(r.serial, hex);

    // The CSR's key, signed by the CA.
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    leaf.verify_signature(Some(root.public_key())).unwrap();
    assert!(leaf.verify_signature(Some(leaf.public_key())).is_err());
    rustls_accepts(&chain, &[root_der], now()).unwrap();
}

#[test]
fn serials_are_random() {
    let (cert, key) = new_root();
    let ca = Ca::from_pem(&cert, &key, None, &policy(), now()).unwrap();
    let csr = greedy_csr(&KeyPair::generate().unwrap());
    let mut serials: Vec<String> = (0..64)
        .map(|_| {
            certify(&ca, &ask("tok-web", "shop", "web", &csr))
                .unwrap()
                .response
                .serial
        })
        .collect();
    assert!(serials.iter().all(|s| s.len() == 32), "{serials:?}");
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 64);
}

#[test]
fn a_token_proves_only_what_it_grants() {
    let (cert, key) = new_root();
    let ca = Ca::from_pem(&cert, &key, None, &policy(), now()).unwrap();
    let csr = greedy_csr(&KeyPair::generate().unwrap());
    let refused = |token, ns, sa| match certify(&ca, &ask(token, ns, sa, &csr)) {
        Err(Refusal::Token(e)) => e,
        other => panic!("{token} {ns}/{sa}: {other:?}"),
    };
    assert_eq!(refused("tok-web", "shop", "api"), TokenError::NotGranted);
    assert_eq!(refused("tok-web", "billing", "web"), TokenError::NotGranted);
    assert_eq!(
        refused("tok-shop", "billing", "api"),
        TokenError::NotGranted
    );
    assert_eq!(refused("tok-nope", "shop", "web"), TokenError::UnknownToken);
    assert_eq!(refused("", "shop", "web"), TokenError::UnknownToken);
    // `shop/*`: any service account of shop.
    let any = certify(&ca, &ask("tok-shop", "shop", "payments", &csr)).unwrap();
    assert_eq!(
        any.id.to_string(),
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
    // Without a tokens file, nothing.
    let none = ca.certify(
        None,
        &ask("tok-web", "shop", "web", &csr),
        now(),
        &mut ca::os_rng(),
    );
    assert!(
        matches!(none, Err(Refusal::Token(TokenError::NoTokens))),
        "{none:?}"
    );
    // A namespace that cannot be part of a SPIFFE ID is refused before the token is looked at.
    let bad = certify(&ca, &ask("tok-shop", "shop", "../admin", &csr));
    assert!(matches!(&bad, Err(Refusal::Identity(_))), "{bad:?}");
}

#[test]
fn a_csr_must_be_signed_by_its_key() {
    let (cert, key) = new_root();
    let ca = Ca::from_pem(&cert, &key, None, &policy(), now()).unwrap();
    let good = greedy_csr(&KeyPair::generate().unwrap());
    let mut der = CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // The signature is last: change its last byte.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let forged = ca::pem_encode("CERTIFICATE REQUEST", &der);
    let reason = |csr: &str| match certify(&ca, &ask("tok-web", "shop", "web", csr)) {
        Err(e @ Refusal::Csr { .. }) => e.reason(),
        other => panic!("{other:?}"),
    };
    assert_eq!(reason(&forged), "bad_csr_signature");
    assert_eq!(reason("not a csr"), "bad_csr");
    assert_eq!(reason(&cert), "bad_csr", "a certificate is not a CSR");
}

#[test]
fn an_intermediate_signs_and_follows_the_leaf() {
    let (root_pem, root_key) = new_root();
    let (int_pem, int_key) =
        ca::generate_intermediate(&root_pem, &root_key, "cluster.local", 30 * DAY, now()).unwrap();
    let ca = Ca::from_pem(&int_pem, &int_key, Some(&root_pem), &policy(), now()).unwrap();
    let issued = certify(
        &ca,
        &ask(
            "tok-web",
            "shop",
            "web",
            &greedy_csr(&KeyPair::generate().unwrap()),
        ),
    )
    .unwrap();
    let chain = ders(&issued.response.certificate_chain);
    let root_der = ders(&root_pem).remove(0);
    assert_eq!(chain.len(), 2, "the leaf, then the intermediate");
    assert_eq!(chain[1], ders(&int_pem)[0]);
    assert_eq!(ders(&issued.response.trust_bundle), vec![root_der.clone()]);
    let (leaf, int, root) = (x509(&chain[0]), x509(&chain[1]), x509(&root_der));
    leaf.verify_signature(Some(int.public_key())).unwrap();
    int.verify_signature(Some(root.public_key())).unwrap();
    assert_eq!(aki(&leaf), ski(&int));
    assert_eq!(aki(&int), ski(&root));
    let bc = int.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca && bc.path_len_constraint == Some(0));
    rustls_accepts(&chain, &[root_der], now()).unwrap();

    // An intermediate needs its roots, and the right ones.
    let e = Ca::from_pem(&int_pem, &int_key, None, &policy(), now()).unwrap_err();
    assert!(e.to_string().contains("--trust-bundle"), "{e}");
    let (other_root, _) = new_root();
    let e = Ca::from_pem(&int_pem, &int_key, Some(&other_root), &policy(), now()).unwrap_err();
    assert!(e.to_string().contains("does not chain to a root"), "{e}");
}

#[test]
fn a_bundle_may_hold_two_roots_for_a_rollover() {
    let (old_pem, old_key) = new_root();
    let (new_pem, new_key) = new_root();
    let both = format!("{old_pem}{new_pem}");
    let csr = greedy_csr(&KeyPair::generate().unwrap());
    let roots = ders(&both);
    // Step 1: the old root signs, both are trusted. Step 2: the new one signs, both trusted.
    for (signer, key) in [(&old_pem, &old_key), (&new_pem, &new_key)] {
        let ca = Ca::from_pem(signer, key, Some(&both), &policy(), now()).unwrap();
        assert_eq!(ca.roots().len(), 2);
        let issued = certify(&ca, &ask("tok-web", "shop", "web", &csr)).unwrap();
        assert_eq!(ders(&issued.response.trust_bundle), roots);
        let chain = ders(&issued.response.certificate_chain);
        assert_eq!(chain.len(), 1);
        rustls_accepts(&chain, &roots, now()).unwrap();
    }
    // Step 3: the old root is gone from the bundle; it can no longer sign.
    let e = Ca::from_pem(&old_pem, &old_key, Some(&new_pem), &policy(), now()).unwrap_err();
    assert!(e.to_string().contains("does not chain to a root"), "{e}");
}

#[test]
fn the_ca_files_are_checked_at_start() {
    let (cert, key) = new_root();
    let (_, other_key) = new_root();
    let refused = |cert: &str, key: &str, bundle: Option<&str>, at: SystemTime| {
        Ca::from_pem(cert, key, bundle, &policy(), at)
            .unwrap_err()
            .to_string()
    };
    let e = refused(&cert, &other_key, None, now());
    assert!(e.contains("--ca-key is not the key of --ca-cert"), "{e}");
    let e = refused(&cert, "nope", None, now());
    assert!(e.contains("PKCS#8"), "{e}");
    let e = refused("", &key, None, now());
    assert!(e.contains("no CERTIFICATE"), "{e}");
    let expired = now() + 400 * DAY;
    let e = refused(&cert, &key, None, expired);
    assert!(e.contains("is not valid now"), "{e}");
    // A workload certificate is not a CA.
    let leaf_key = KeyPair::generate().unwrap();
    let ca = Ca::from_pem(&cert, &key, None, &policy(), now()).unwrap();
    let leaf = certify(&ca, &ask("tok-web", "shop", "web", &greedy_csr(&leaf_key))).unwrap();
    let e = refused(
        &leaf.response.certificate_chain,
        &leaf_key.serialize_pem(),
        Some(&cert),
        now(),
    );
    assert!(e.contains("is not a CA certificate"), "{e}");
    // A root that is not in the bundle it is given.
    let (other_root, _) = new_root();
    let e = refused(&cert, &key, Some(&other_root), now());
    assert!(e.contains("does not chain to a root"), "{e}");
    // The CA's Debug never shows its key.
    assert!(!format!("{ca:?}").contains(key.lines().nth(1).unwrap()));
}

#[test]
fn no_leaf_outlives_its_ca() {
    let (cert, key) = ca::generate_root("cluster.local", 2 * DAY, now()).unwrap();
    let ca = Ca::from_pem(&cert, &key, None, &policy(), now()).unwrap();
    let later = now() + Duration::from_secs(36 * 3600);
    let issued = ca
        .certify(
            Some(&tokens()),
            &ask(
                "tok-web",
                "shop",
                "web",
                &greedy_csr(&KeyPair::generate().unwrap()),
            ),
            later,
            &mut ca::os_rng(),
        )
        .unwrap();
    let root_expiry = x509(&ders(&cert)[0]).validity().not_after.timestamp() as u64;
    assert_eq!(issued.response.not_after_unix, root_expiry);
}

#[test]
fn lifetimes_and_trust_domains_are_checked() {
    let short = Policy::try_new("cluster.local", Duration::from_secs(60)).unwrap();
    let (cert, key) = new_root();
    let ca = Ca::from_pem(&cert, &key, None, &short, now()).unwrap();
    let issued = certify(
        &ca,
        &ask(
            "tok-web",
            "shop",
            "web",
            &greedy_csr(&KeyPair::generate().unwrap()),
        ),
    )
    .unwrap();
    assert_eq!(issued.response.not_after_unix - NOW_SECS, 60);
    for bad in [
        Duration::from_secs(5),
        Duration::from_millis(60_500),
        91 * DAY,
    ] {
        assert!(Policy::try_new("cluster.local", bad).is_err(), "{bad:?}");
    }
    for bad in ["", "Cluster.local", "a/b", "td:8443"] {
        assert!(Policy::try_new(bad, DAY).is_err(), "{bad}");
    }
    let other = Policy::try_new("example.org", DAY).unwrap();
    let ca = Ca::from_pem(&cert, &key, None, &other, now()).unwrap();
    let issued = certify(
        &ca,
        &ask(
            "tok-web",
            "shop",
            "web",
            &greedy_csr(&KeyPair::generate().unwrap()),
        ),
    )
    .unwrap();
    assert_eq!(issued.id.to_string(), "spiffe://example.org/ns/shop/sa/web");
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("remora-ca-{}-{name}-{nanos}", std::process::id()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_dev_ca_dir_keeps_the_dev_ca_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("dev");
    let (first, reused) = Ca::dev_in_dir(&dir.0, &policy(), now()).unwrap();
    assert!(!reused);
    let mode = |name: &str| {
        std::fs::metadata(dir.0.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(ca::CA_KEY_FILE), 0o600);
    assert_eq!(mode(""), 0o700);
    let (second, reused) = Ca::dev_in_dir(&dir.0, &policy(), now()).unwrap();
    assert!(reused);
    assert_eq!(first.trust_bundle(), second.trust_bundle());
    // Without a directory, every start is a new root.
    let (a, b) = (
        Ca::dev(&policy(), now()).unwrap(),
        Ca::dev(&policy(), now()).unwrap(),
    );
    assert_ne!(a.trust_bundle(), b.trust_bundle());
}

#[test]
fn ca_init_and_intermediate_write_files_that_the_control_plane_takes() {
    let dir = TempDir::new("init");
    let (root_dir, int_dir) = (dir.0.join("root"), dir.0.join("int"));
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let (code, out, err) = remora(&[
        "ca",
        "init",
        "--trust-domain",
        "example.org",
        "--out",
        &s(&root_dir),
        "--days",
        "30",
    ]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("ca.key"), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root_dir.join("ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Never over an existing CA.
    let (code, _, err) = remora(&["ca", "init", "--out", &s(&root_dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("File exists"), "{err}");
    let (root_cert, root_key) = (root_dir.join("ca.crt"), root_dir.join("ca.key"));
    let (code, _, err) = remora(&[
        "ca",
        "intermediate",
        "--root-cert",
        &s(&root_cert),
        "--root-key",
        &s(&root_key),
        "--trust-domain",
        "example.org",
        "--out",
        &s(&int_dir),
    ]);
    assert_eq!((code, err.as_str()), (0, ""));
    let p = Policy::try_new("example.org", DAY).unwrap();
    let now = SystemTime::now();
    let ca = Ca::from_files(
        &int_dir.join("ca.crt"),
        &int_dir.join("ca.key"),
        Some(&root_cert),
        &p,
        now,
    )
    .unwrap();
    // The intermediate was capped at the root's 30 days.
    let int = std::fs::read_to_string(int_dir.join("ca.crt")).unwrap();
    let int_der = ders(&int).remove(0);
    let root_der = ders(&std::fs::read_to_string(&root_cert).unwrap()).remove(0);
    assert!(x509(&int_der).validity().not_after <= x509(&root_der).validity().not_after);
    assert_eq!(ca.roots().len(), 1);
}

fn remora(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let argv = std::iter::once("remora").chain(args.iter().copied());
    let code = remora_control_plane::cli::run(argv, &mut std::io::empty(), &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

// --- Over HTTP ---------------------------------------------------------------------------

/// Starts a control plane in-process on port 0 over the example mesh; returns (api, admin).
fn start_server(
    name: &str,
    ca: Option<Ca>,
    tokens: Option<Tokens>,
) -> (SocketAddr, SocketAddr, TempDir) {
    start_server_with(name, ca, tokens, None)
}

fn start_server_with(
    name: &str,
    ca: Option<Ca>,
    tokens: Option<Tokens>,
    token_review: Option<TokenReviewer>,
) -> (SocketAddr, SocketAddr, TempDir) {
    let dir = TempDir::new(name);
    std::fs::create_dir_all(&dir.0).unwrap();
    let addrs = dir.0.join("addrs.json");
    let options = remora_control_plane::server::Options {
        config_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/mesh"),
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_tls: None,
        admin: "127.0.0.1:0".parse().unwrap(),
        write_addrs: Some(addrs.clone()),
        ca,
        tokens,
        webhook: None,
        token_review,
    };
    // Runs until the test process exits.
    std::thread::spawn(move || remora_control_plane::server::run(options));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&addrs) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
            return (addr("listen"), addr("admin"), dir);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the control plane did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request; the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: cp\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn metric(admin: SocketAddr, line_start: &str) -> Option<f64> {
    let (_, text) = http(admin, "GET", "/metrics", "");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn post_v1_certificate_signs_refuses_and_counts() {
    let (root_pem, root_key) =
        ca::generate_root("cluster.local", 365 * DAY, SystemTime::now()).unwrap();
    let ca = Ca::from_pem(&root_pem, &root_key, None, &policy(), SystemTime::now()).unwrap();
    let (api, admin, _dir) = start_server("http", Some(ca), Some(tokens()));
    let key = KeyPair::generate().unwrap();
    let body =
        |token: &str| serde_json::to_string(&ask(token, "shop", "web", &greedy_csr(&key))).unwrap();

    let (status, text) = http(api, "POST", "/v1/certificate", &body("tok-web"));
    assert_eq!(status, 200, "{text}");
    let resp: CertificateResponse = serde_json::from_str(&text).unwrap();
    let chain = ders(&resp.certificate_chain);
    let leaf = x509(&chain[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://cluster.local/ns/shop/sa/web")]
    );
    assert_eq!(
        resp.trust_bundle,
        ders(&root_pem)
            .iter()
            .map(|d| ca::pem_encode("CERTIFICATE", d))
            .collect::<String>()
    );
    assert_eq!(resp.not_after_unix - resp.not_before_unix, 24 * 3600 + 60);

    let (status, text) = http(api, "POST", "/v1/certificate", &body("tok-nope"));
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    let (status, _) = http(api, "POST", "/v1/certificate", "{\"token\": 1}");
    assert_eq!(status, 400);
    let bad_csr = serde_json::to_string(&ask("tok-web", "shop", "web", "junk")).unwrap();
    assert_eq!(http(api, "POST", "/v1/certificate", &bad_csr).0, 400);

    // The watch carries the bundle.
    let watch = r#"{"node": "web-1", "service": "web", "namespace": "shop", "hold_ms": 0}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (status, text) = loop {
        let (status, text) = http(api, "POST", "/v1/watch", watch);
        if status == 200 || std::time::Instant::now() > deadline {
            break (status, text);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 200, "{text}");
    let w: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(w["trust_bundle"], resp.trust_bundle.as_str());

    assert_eq!(
        metric(admin, "remora_cp_certificates_issued_total "),
        Some(1.0)
    );
    let refused = |reason: &str| {
        metric(
            admin,
            &format!("remora_cp_certificate_requests_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("unknown_token"), Some(1.0));
    assert_eq!(refused("bad_request"), Some(1.0));
    assert_eq!(refused("bad_csr"), Some(1.0));
}

#[test]
fn without_a_ca_certificates_are_unavailable() {
    let (api, admin, _dir) = start_server("no-ca", None, None);
    let key = KeyPair::generate().unwrap();
    let body = serde_json::to_string(&ask("tok-web", "shop", "web", &greedy_csr(&key))).unwrap();
    let (status, text) = http(api, "POST", "/v1/certificate", &body);
    assert_eq!(status, 503, "{text}");
    assert_eq!(
        metric(
            admin,
            "remora_cp_certificate_requests_refused_total{reason=\"no_ca\"}"
        ),
        Some(1.0)
    );
}

// --- Kubernetes service-account tokens ---------------------------------------------------

/// A stand-in for the API server's TokenReview endpoint, over TLS: `sa-token-web` is shop/web
/// for audience remora, `sa-token-apiserver` is shop/web for the API server's own audience,
/// anything else is not authenticated. It insists on the control plane's bearer token.
fn fake_api_server(dir: &Path) -> (SocketAddr, PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "fake kube-apiserver");
    let cert = params.self_signed(&key).unwrap();
    let ca_file = dir.join("apiserver-ca.crt");
    std::fs::write(&ca_file, cert.pem()).unwrap();
    let bearer = dir.join("cp-token");
    std::fs::write(&bearer, "control-plane-token\n").unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then as much body as content-length says.
            let body = loop {
                let Ok(n) = tls.read(&mut buf) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break Some((head.to_owned(), body.to_owned()));
                    }
                }
            };
            let Some((head, body)) = body else { continue };
            let authorized = head.contains("authorization: Bearer control-plane-token")
                || head.contains("Authorization: Bearer control-plane-token");
            let review: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let token = review["spec"]["token"].as_str().unwrap_or_default();
            let asked: Vec<String> = review["spec"]["audiences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            let status = match (authorized, token) {
                (false, _) => serde_json::json!({ "authenticated": false, "error": "bad bearer" }),
                (true, "sa-token-web") if asked.iter().any(|a| a == "remora") => {
                    serde_json::json!({
                        "authenticated": true,
                        "user": { "username": "system:serviceaccount:shop:web" },
                        "audiences": ["remora"],
                    })
                }
                // Valid for the API server, not for us: the API server says no audience match.
                (true, "sa-token-apiserver") => serde_json::json!({
                    "authenticated": false,
                    "error": "token audiences [https://kubernetes.default.svc] is invalid for the target audiences [remora]",
                }),
                _ => serde_json::json!({ "authenticated": false }),
            };
            let answer = serde_json::json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "status": status,
            })
            .to_string();
            let _ = write!(
                tls,
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, ca_file, bearer)
}

#[test]
fn a_service_account_token_proves_its_own_identity_through_a_token_review() {
    let dir = TempDir::new("token-review");
    std::fs::create_dir_all(&dir.0).unwrap();
    let (apiserver, ca_file, bearer) = fake_api_server(&dir.0);
    let reviewer = TokenReviewer::new(
        &format!("https://localhost:{}", apiserver.port()),
        &ca_file,
        bearer,
        "remora",
    )
    .unwrap();
    let (root_pem, root_key) =
        ca::generate_root("cluster.local", 365 * DAY, SystemTime::now()).unwrap();
    let ca = Ca::from_pem(&root_pem, &root_key, None, &policy(), SystemTime::now()).unwrap();
    // No bootstrap tokens at all: only the API server can vouch for a sidecar.
    let (api, admin, _d) = start_server_with("token-review-cp", Some(ca), None, Some(reviewer));
    let key = KeyPair::generate().unwrap();
    let body = |token: &str, sa: &str| {
        serde_json::to_string(&ask(token, "shop", sa, &greedy_csr(&key))).unwrap()
    };

    let (status, text) = http(api, "POST", "/v1/certificate", &body("sa-token-web", "web"));
    assert_eq!(status, 200, "{text}");
    let resp: CertificateResponse = serde_json::from_str(&text).unwrap();
    let leaf = ders(&resp.certificate_chain).remove(0);
    let san = x509(&leaf)
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(
        san,
        vec![GeneralName::URI("spiffe://cluster.local/ns/shop/sa/web")]
    );

    // web's token does not make anyone else.
    let (status, text) = http(api, "POST", "/v1/certificate", &body("sa-token-web", "api"));
    assert_eq!(status, 403, "{text}");
    // A token minted for the API server is not one for us; nor is a made-up one.
    assert_eq!(
        http(
            api,
            "POST",
            "/v1/certificate",
            &body("sa-token-apiserver", "web")
        )
        .0,
        403
    );
    assert_eq!(
        http(api, "POST", "/v1/certificate", &body("forged", "web")).0,
        403
    );
    assert_eq!(
        metric(admin, "remora_cp_certificates_issued_total "),
        Some(1.0)
    );
}
