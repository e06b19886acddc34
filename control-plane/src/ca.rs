//! The mesh's certificate authority: it signs each sidecar's workload certificate, whose only
//! name is the SPIFFE ID its bootstrap token proves (see docs/identity.md).
//!
//! The CA is a root, or an intermediate under the user's root, read from PEM files and checked
//! at start ([`Ca::from_pem`]); or, for local use, a throwaway root made in memory
//! ([`generate_root`]). The sidecar keeps its private key: it sends a CSR, of which only the
//! public key is used. The CA key is never logged or served: [`Ca`]'s `Debug` leaves it out.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::CryptoRng;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use remora_config::identity::SpiffeId;
use remora_config::protocol::{CertificateRequest, CertificateResponse};
use remora_config::units::format_duration;
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::tokens::{self, TokenError, Tokens};

mod make;
mod x509;

pub use make::{CA_CERT_FILE, CA_KEY_FILE, generate_intermediate, generate_root, write_ca_files};
use x509::{
    check_ca, check_chain, describe, find_anchor, is_self_signed, parse_cert, pem_certs, unix,
    unix_secs,
};

/// A leaf's lifetime unless `--cert-lifetime` says otherwise: a day, as in Linkerd and Istio.
/// Short enough that a stolen key is soon useless, long enough to ride out a control-plane
/// outage of hours (sidecars renew well before expiry).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Shorter lifetimes are for tests of renewal; nothing shorter is useful, even there.
pub const MIN_LIFETIME: Duration = Duration::from_secs(10);
/// A workload certificate that lives longer than this is a CA certificate in all but name.
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Every certificate starts this long before it is signed: a peer whose clock is a little
/// behind the control plane's would otherwise refuse a certificate "not yet valid" for its
/// first seconds (Linkerd backdates by a minute too).
pub const BACKDATE: Duration = Duration::from_secs(60);
/// The trust domain unless `--trust-domain` says otherwise, as in Istio and Linkerd.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The throwaway CA of `remora control-plane` without `--ca-cert`.
pub const DEV_CA_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Below this an RSA key can be factored by a determined attacker (NIST SP 800-131A).
const RSA_MIN_BITS: usize = 2048;
/// RFC 5280's upper bound on a subject attribute (ub-common-name and friends).
const MAX_DN_VALUE: usize = 64;

/// A CA that cannot be used, and why, in words for the person starting the control plane.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaError(String);

impl From<String> for CaError {
    fn from(msg: String) -> Self {
        CaError(msg)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, CaError> {
    Err(CaError(msg.into()))
}

/// Why a certificate request was refused. [`Refusal::reason`] labels the metric; the server
/// maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The namespace or service account cannot be part of a SPIFFE ID.
    #[error("{0}")]
    Identity(String),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{message}")]
    Csr {
        reason: &'static str,
        message: String,
    },
    /// rcgen could not sign: a bug or an unusable CA key, not the sidecar's fault.
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

impl Refusal {
    /// The `reason` label of `remora_cp_certificate_requests_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Identity(_) => "bad_identity",
            Refusal::Token(e) => e.reason(),
            Refusal::Csr { reason, .. } => reason,
            Refusal::Sign(_) => "sign_failed",
        }
    }
}

fn bad_csr(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Csr {
        reason,
        message: message.into(),
    }
}

/// The signing CA and what goes with each certificate it signs.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and any intermediates above it, PEM, or empty when the signing
    /// certificate is itself a root: they follow the leaf in every chain, so a peer that trusts
    /// only the roots can build the path.
    intermediates: String,
    /// Every root the mesh trusts, PEM: the trust bundle.
    bundle: String,
    /// One line per root, for the log at start.
    roots: Vec<String>,
    trust_domain: String,
    lifetime: Duration,
    /// The earliest expiry on the path to the root: no leaf may outlive it.
    not_after: SystemTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("lifetime", &self.lifetime)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub id: SpiffeId,
    pub response: CertificateResponse,
    /// The leaf alone, DER.
    pub leaf: Vec<u8>,
}

/// Settings that every certificate shares.
#[derive(Debug, Clone)]
pub struct Policy {
    pub trust_domain: String,
    pub lifetime: Duration,
}

impl Policy {
    /// Checks the trust domain and the lifetime.
    pub fn try_new(trust_domain: &str, lifetime: Duration) -> Result<Policy, CaError> {
        if let Err(e) = SpiffeId::parse(&format!("spiffe://{trust_domain}/ns/n/sa/s")) {
            return fail(format!("--trust-domain: {e}"));
        }
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) || lifetime.subsec_nanos() != 0 {
            return fail(format!(
                "--cert-lifetime: {} is out of range; expected whole seconds from {} to {}",
                format_duration(lifetime),
                format_duration(MIN_LIFETIME),
                format_duration(MAX_LIFETIME)
            ));
        }
        Ok(Policy {
            trust_domain: trust_domain.to_owned(),
            lifetime,
        })
    }
}

impl Ca {
    /// Reads `--ca-cert`, `--ca-key` and `--trust-bundle` and checks them (see [`Ca::from_pem`]).
    pub fn from_files(
        cert: &Path,
        key: &Path,
        bundle: Option<&Path>,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        let read = |p: &Path, flag: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| CaError(format!("{flag}: cannot read {}: {e}", p.display())))
        };
        let bundle_text = bundle.map(|b| read(b, "--trust-bundle")).transpose()?;
        let (cert, key) = (read(cert, "--ca-cert")?, read(key, "--ca-key")?);
        Ca::from_pem(&cert, &key, bundle_text.as_deref(), policy, now)
    }

    /// A CA from PEM: `cert_pem` is the signing certificate, optionally followed by the
    /// intermediates above it; `bundle_pem` the roots (default: `cert_pem`'s certificate, when
    /// it is a root). Refused unless the key is the certificate's, the certificate is a CA
    /// allowed to sign certificates and valid now, and it chains to a root of the bundle.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        bundle_pem: Option<&str>,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Ca, CaError> {
        let chain = pem_certs(cert_pem, "--ca-cert")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            CaError(format!(
                "--ca-key: cannot read the key ({e}); it must be an unencrypted PKCS#8 key \
                 ('BEGIN PRIVATE KEY'): convert one with \
                 `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`"
            ))
        })?;
        let parsed = chain
            .iter()
            .map(|c| parse_cert(c, "--ca-cert"))
            .collect::<Result<Vec<_>, _>>()?;
        let signer = &parsed[0];
        if signer.public_key().subject_public_key.data.as_ref()
            != rcgen::PublicKeyData::der_bytes(&key)
        {
            return fail("--ca-key is not the key of --ca-cert");
        }
        check_chain(&parsed, now)?;
        let top = &parsed[parsed.len() - 1];
        let top_is_root = is_self_signed(top);
        let roots_der = match bundle_pem {
            Some(text) => pem_certs(text, "--trust-bundle")?,
            None if top_is_root => vec![chain[chain.len() - 1].clone()],
            None => {
                return fail(format!(
                    "--ca-cert is an intermediate (issued by {}): give the root(s) it chains to \
                     with --trust-bundle",
                    top.issuer()
                ));
            }
        };
        let roots = roots_der
            .iter()
            .map(|c| parse_cert(c, "--trust-bundle"))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, root) in roots.iter().enumerate() {
            check_ca(
                root,
                now,
                &format!("--trust-bundle (certificate {})", i + 1),
            )?;
        }
        let top_der = chain[chain.len() - 1].as_ref();
        let anchor = find_anchor(top, top_der, top_is_root, &roots_der, &roots)?;
        let not_after = parsed
            .iter()
            .chain([&roots[anchor]])
            .map(|c| unix(c.validity().not_after))
            .min()
            .unwrap_or(UNIX_EPOCH);
        // The root itself is not sent in chains: peers have it in their bundle.
        let sent = if top_is_root {
            &chain[..chain.len() - 1]
        } else {
            &chain[..]
        };
        let intermediates = sent.iter().map(|c| pem_encode("CERTIFICATE", c)).collect();
        let issuer = Issuer::from_ca_cert_der(&chain[0], key)
            .map_err(|e| CaError(format!("--ca-cert: {e}")))?;
        Ok(Ca {
            issuer,
            intermediates,
            bundle: roots_der
                .iter()
                .map(|c| pem_encode("CERTIFICATE", c))
                .collect(),
            roots: roots.iter().map(describe).collect(),
            trust_domain: policy.trust_domain.clone(),
            lifetime: policy.lifetime,
            not_after,
        })
    }

    /// A throwaway root made in memory: for local use, where nothing outlives the process.
    pub fn dev(policy: &Policy, now: SystemTime) -> Result<Ca, CaError> {
        let (cert, key) = generate_root(&policy.trust_domain, DEV_CA_LIFETIME, now)?;
        Ca::from_pem(&cert, &key, None, policy, now)
    }

    /// The dev CA kept in `dir` (`ca.crt`, `ca.key`) so that it survives restarts: read if
    /// there, made and written (the key 0600) if not. Says which it did.
    pub fn dev_in_dir(dir: &Path, policy: &Policy, now: SystemTime) -> Result<(Ca, bool), CaError> {
        let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
        if cert.exists() && key.exists() {
            return Ok((Ca::from_files(&cert, &key, None, policy, now)?, true));
        }
        let (cert_pem, key_pem) = generate_root(&policy.trust_domain, DEV_CA_LIFETIME, now)?;
        write_ca_files(dir, &cert_pem, &key_pem, true)?;
        Ok((Ca::from_pem(&cert_pem, &key_pem, None, policy, now)?, false))
    }

    /// Every root the mesh trusts, PEM.
    pub fn trust_bundle(&self) -> &str {
        &self.bundle
    }

    /// One line per root of the bundle (subject, serial, expiry), for the log.
    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Signs a certificate for the identity `ask.token` proves: the namespace and service
    /// account asked for, if the token grants them. The CSR gives its public key and nothing
    /// else: its subject, SANs and extensions are ignored.
    pub fn certify(
        &self,
        tokens: Option<&Tokens>,
        ask: &CertificateRequest,
        now: SystemTime,
        rng: &mut impl CryptoRng,
    ) -> Result<Issued, Refusal> {
        self.identity(ask)?;
        tokens::check(tokens, &ask.token, &ask.namespace, &ask.service_account)?;
        self.certify_proven(ask, now, rng)
    }

    /// The SPIFFE ID a request asks for, if its namespace and service account make one.
    fn identity(&self, ask: &CertificateRequest) -> Result<SpiffeId, Refusal> {
        let uri = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, ask.namespace, ask.service_account
        );
        SpiffeId::parse(&uri).map_err(|e| {
            Refusal::Identity(format!(
                "namespace and service_account make no identity: {e}"
            ))
        })
    }

    /// As [`Ca::certify`], for a request whose identity was proved another way (a Kubernetes
    /// TokenReview named exactly this namespace and service account).
    pub fn certify_proven(
        &self,
        ask: &CertificateRequest,
        now: SystemTime,
        rng: &mut impl CryptoRng,
    ) -> Result<Issued, Refusal> {
        let id = self.identity(ask)?;
        let key = csr_public_key(&ask.csr)?;
        self.sign(id, &key, now, rng)
    }

    /// Signs `id` for `key`. `certify` is the way in for requests; this is for tests and tools
    /// that have already decided who `key` belongs to.
    pub fn sign(
        &self,
        id: SpiffeId,
        key: &SubjectPublicKeyInfo,
        now: SystemTime,
        rng: &mut impl CryptoRng,
    ) -> Result<Issued, Refusal> {
        let now = unix_secs(now);
        let not_before = now.saturating_sub(BACKDATE.as_secs());
        let not_after = (now + self.lifetime.as_secs()).min(unix_secs(self.not_after));
        let serial = random_serial(rng);
        let params = leaf_params(&id, not_before, not_after, &serial)?;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(|e| Refusal::Sign(e.to_string()))?;
        let response = CertificateResponse {
            certificate_chain: format!("{}{}", cert.pem(), self.intermediates),
            trust_bundle: self.bundle.clone(),
            not_before_unix: not_before,
            not_after_unix: not_after,
            serial: hex(&serial),
        };
        Ok(Issued {
            id,
            response,
            leaf: cert.der().to_vec(),
        })
    }
}

impl Ca {
    /// A TLS server certificate for the control plane's own admission webhook, for
    /// `dns_names` (the Service's names), with a key made here: chain PEM and key PEM. It lives
    /// a year (never past the CA): the process makes a new one at each start.
    pub fn serving_certificate(
        &self,
        dns_names: &[String],
        now: SystemTime,
        rng: &mut impl CryptoRng,
    ) -> Result<(String, String), Refusal> {
        let key = KeyPair::generate().map_err(|e| Refusal::Sign(e.to_string()))?;
        let now = unix_secs(now);
        let not_before = now.saturating_sub(BACKDATE.as_secs());
        let year = 365 * 24 * 3600;
        let not_after = (now + year).min(unix_secs(self.not_after));
        let serial = random_serial(rng);
        let mut p = CertificateParams::default();
        p.distinguished_name = subject(&[
            (DnType::OrganizationName, &self.trust_domain),
            (
                DnType::CommonName,
                dns_names.first().map_or("remora", String::as_str),
            ),
        ]);
        p.subject_alt_names = dns_names
            .iter()
            .map(|n| {
                n.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| Refusal::Identity(format!("'{n}': {e}")))
            })
            .collect::<Result<_, _>>()?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        set_validity(&mut p, not_before, not_after);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(|e| Refusal::Sign(e.to_string()))?;
        Ok((
            format!("{}{}", cert.pem(), self.intermediates),
            key.serialize_pem(),
        ))
    }
}

/// The public key of a PKCS#10 request in PEM, once its signature (by the key it holds) is
/// verified: proof that the sender has the private key.
pub fn csr_public_key(csr_pem: &str) -> Result<SubjectPublicKeyInfo, Refusal> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        bad_csr(
            "bad_csr",
            format!("'csr' is not a PEM certificate request: {e}"),
        )
    })?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).map_err(|e| {
        bad_csr(
            "bad_csr",
            format!("'csr' is not a PKCS#10 certificate request: {e}"),
        )
    })?;
    if !rest.is_empty() {
        return Err(bad_csr("bad_csr", "'csr' has trailing bytes"));
    }
    csr.verify_signature().map_err(|e| {
        bad_csr(
            "bad_csr_signature",
            format!("the certificate request's signature does not verify: {e}"),
        )
    })?;
    let spki = &csr.certification_request_info.subject_pki;
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed()
        && rsa.key_size() < RSA_MIN_BITS
    {
        let msg = format!(
            "an RSA key of {} bits is too weak; use at least {RSA_MIN_BITS}, or ECDSA P-256",
            rsa.key_size()
        );
        return Err(bad_csr("weak_key", msg));
    }
    SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| bad_csr("bad_csr", format!("unsupported public key: {e}")))
}

fn leaf_params(
    id: &SpiffeId,
    not_before: u64,
    not_after: u64,
    serial: &[u8],
) -> Result<CertificateParams, Refusal> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(&[
        (DnType::OrganizationName, &id.trust_domain),
        (
            DnType::CommonName,
            &format!("{}.{}", id.service_account, id.namespace),
        ),
    ]);
    let uri = id
        .uri()
        .try_into()
        .map_err(|e| Refusal::Identity(format!("{e}")))?;
    // The SPIFFE ID is the one name: no DNS names, whatever the CSR asked for.
    p.subject_alt_names = vec![SanType::URI(uri)];
    // ExplicitNoCa writes basicConstraints CA:false, and rcgen writes the SKI along with it.
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(SerialNumber::from_slice(serial));
    set_validity(&mut p, not_before, not_after);
    Ok(p)
}

/// A subject of the attributes that fit (RFC 5280 caps each at 64 characters). An empty
/// subject is allowed: rcgen then marks the SAN critical, as RFC 5280 asks.
fn subject(attrs: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in attrs {
        if !value.is_empty() && value.len() <= MAX_DN_VALUE {
            dn.push(ty.clone(), *value);
        }
    }
    dn
}

fn set_validity(p: &mut CertificateParams, not_before: u64, not_after: u64) {
    // rcgen takes `time`'s dates; built from the epoch so this crate need not depend on `time`.
    p.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_before);
    p.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(not_after);
}

/// 128 random bits, positive and 16 bytes long: unpredictable, as the CA/Browser Forum asks
/// (at least 64 bits), so no two certificates share a serial and none can be guessed ahead.
fn random_serial(rng: &mut impl CryptoRng) -> [u8; 16] {
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    // Top bit clear: positive. Next bit set: no leading zero byte to strip, so 16 bytes always.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

/// The operating system's generator, for serials.
pub fn os_rng() -> impl CryptoRng {
    rand::rand_core::UnwrapErr(rand::rngs::SysRng)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// PEM of a DER object, 64 characters a line (RFC 7468).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
