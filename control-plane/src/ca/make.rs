//! Making CAs: a new root (`remora ca init`, the dev CA), an intermediate under a root
//! (`remora ca intermediate`), and writing them to files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

use super::x509::{check_ca, parse_cert, pem_certs, unix, unix_secs};
use super::{BACKDATE, CaError, fail, os_rng, random_serial, set_validity, subject};

/// Where `remora ca init` and `--dev-ca-dir` keep a CA.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// When a CA was made, to the second (UTC), for its name.
fn made_on(now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    remora_config::timestamp::format_timestamp(secs)
}

/// A new self-signed root for `trust_domain`, valid for `valid_for` from `now` (backdated):
/// certificate and PKCS#8 key, PEM.
pub fn generate_root(
    trust_domain: &str,
    valid_for: Duration,
    now: SystemTime,
) -> Result<(String, String), CaError> {
    let key = KeyPair::generate().map_err(|e| CaError(format!("cannot make a key: {e}")))?;
    // Dated, so that two roots of one trust domain (a rollover) have different subjects:
    // peers then tell them apart by name, and a certificate of the old one is `unknown-issuer`.
    let params = ca_params(
        &format!("Remora root CA {trust_domain} {}", made_on(now)),
        valid_for,
        now,
        None,
    );
    let cert = params
        .self_signed(&key)
        .map_err(|e| CaError(format!("cannot sign the root: {e}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A new intermediate CA under the root `root_cert_pem` (signed with `root_key_pem`): its
/// certificate and PKCS#8 key, PEM. Its path length is 0: it signs workloads only.
pub fn generate_intermediate(
    root_cert_pem: &str,
    root_key_pem: &str,
    trust_domain: &str,
    valid_for: Duration,
    now: SystemTime,
) -> Result<(String, String), CaError> {
    let root_key = KeyPair::from_pem(root_key_pem)
        .map_err(|e| CaError(format!("--root-key: cannot read the key: {e}")))?;
    let root_der = pem_certs(root_cert_pem, "--root-cert")?.remove(0);
    let root = parse_cert(&root_der, "--root-cert")?;
    check_ca(&root, now, "--root-cert")?;
    if root.public_key().subject_public_key.data.as_ref()
        != rcgen::PublicKeyData::der_bytes(&root_key)
    {
        return fail("--root-key is not the key of --root-cert");
    }
    let root_not_after = unix(root.validity().not_after);
    let issuer = Issuer::from_ca_cert_der(&root_der, root_key)
        .map_err(|e| CaError(format!("--root-cert: {e}")))?;
    let key = KeyPair::generate().map_err(|e| CaError(format!("cannot make a key: {e}")))?;
    let valid_for = valid_for.min(root_not_after.duration_since(now).unwrap_or_default());
    let mut params = ca_params(
        &format!("Remora intermediate CA {trust_domain} {}", made_on(now)),
        valid_for,
        now,
        Some(0),
    );
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| CaError(format!("cannot sign the intermediate: {e}")))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn ca_params(
    name: &str,
    valid_for: Duration,
    now: SystemTime,
    path_len: Option<u8>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(&[
        (DnType::OrganizationName, "Remora"),
        (DnType::CommonName, name),
    ]);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(SerialNumber::from_slice(&random_serial(&mut os_rng())));
    let now = unix_secs(now);
    set_validity(
        &mut p,
        now.saturating_sub(BACKDATE.as_secs()),
        now + valid_for.as_secs(),
    );
    p
}

/// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`, made if missing. Existing files are
/// never overwritten: losing a CA key by a typo would orphan every certificate it signed.
pub fn write_ca_files(
    dir: &Path,
    cert_pem: &str,
    key_pem: &str,
    private_dir: bool,
) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    if private_dir {
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| CaError(format!("cannot make {}: {e}", dir.display())))?;
    for (name, text, mode) in [
        (CA_KEY_FILE, key_pem, 0o600),
        (CA_CERT_FILE, cert_pem, 0o644),
    ] {
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| CaError(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
