//! Reading and checking the certificates of `--ca-cert` and `--trust-bundle`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use super::{CaError, fail};

pub(super) fn pem_certs(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError(format!("{what}: not PEM: {e}")))?;
    if certs.is_empty() {
        return fail(format!("{what}: no CERTIFICATE in it"));
    }
    Ok(certs)
}

pub(super) fn parse_cert<'a>(
    der: &'a CertificateDer<'_>,
    what: &str,
) -> Result<X509Certificate<'a>, CaError> {
    match X509Certificate::from_der(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => fail(format!("{what}: trailing bytes after a certificate")),
        Err(e) => fail(format!("{what}: not an X.509 certificate: {e}")),
    }
}

/// A CA certificate that may sign certificates now.
pub(super) fn check_ca(
    cert: &X509Certificate<'_>,
    now: SystemTime,
    what: &str,
) -> Result<(), CaError> {
    let name = cert.subject();
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return fail(format!(
            "{what} ({name}) is not a CA certificate (basicConstraints CA:true)"
        ));
    }
    match cert.key_usage() {
        Ok(Some(ku)) if ku.value.key_cert_sign() => {}
        _ => {
            return fail(format!(
                "{what} ({name}) may not sign certificates (no keyCertSign key usage)"
            ));
        }
    }
    let at = ASN1Time::from_timestamp(unix_secs(now) as i64).map_err(|e| CaError(e.to_string()))?;
    if !cert.validity().is_valid_at(at) {
        let v = cert.validity();
        return fail(format!(
            "{what} ({name}) is not valid now: valid from {} to {}",
            v.not_before, v.not_after
        ));
    }
    Ok(())
}

/// Checks `--ca-cert`: every certificate a CA valid now, each signed by the next.
pub(super) fn check_chain(chain: &[X509Certificate<'_>], now: SystemTime) -> Result<(), CaError> {
    for (i, cert) in chain.iter().enumerate() {
        check_ca(cert, now, &format!("--ca-cert (certificate {})", i + 1))?;
        if let Some(above) = chain.get(i + 1)
            && !signed_by(cert, above)
        {
            return fail(format!(
                "--ca-cert: certificate {} ({}) is not signed by the next one ({})",
                i + 1,
                cert.subject(),
                above.subject()
            ));
        }
    }
    Ok(())
}

/// Which of `roots` the chain whose last certificate is `top` ends at: `top` itself when it is
/// a root, else the root that signed it.
pub(super) fn find_anchor(
    top: &X509Certificate<'_>,
    top_der: &[u8],
    top_is_root: bool,
    roots_der: &[CertificateDer<'_>],
    roots: &[X509Certificate<'_>],
) -> Result<usize, CaError> {
    let anchor = match top_is_root {
        true => roots_der.iter().position(|r| r.as_ref() == top_der),
        false => roots.iter().position(|r| signed_by(top, r)),
    };
    anchor.ok_or_else(|| {
        let names: Vec<String> = roots.iter().map(|r| r.subject().to_string()).collect();
        CaError(format!(
            "--ca-cert does not chain to a root of the trust bundle ({}): sidecars would not \
             trust what it signs",
            names.join("; ")
        ))
    })
}

pub(super) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    signed_by(cert, cert)
}

/// Whether `issuer` is `cert`'s issuer by name, and its key verifies `cert`'s signature.
pub(super) fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

pub(super) fn describe(cert: &X509Certificate<'_>) -> String {
    format!(
        "{} (serial {}, expires {})",
        cert.subject(),
        cert.raw_serial_as_string(),
        cert.validity().not_after
    )
}

pub(super) fn unix(t: ASN1Time) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
}

pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
