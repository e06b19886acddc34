//! The workload's key and certificate requests, and when to renew.
//!
//! A new key pair is made for every request, in memory (ECDSA P-256); the private key never
//! leaves the process. The CSR names the identity the sidecar expects, but the control plane
//! signs only what the sidecar's credential proves.

use std::time::{Duration, SystemTime};

use rand::{Rng, RngExt};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Renew at 70% of the lifetime (Linkerd's and Istio's point), give or take 5% of it, so
/// sidecars that started together do not all renew together.
pub const RENEW_AT: f64 = 0.70;
pub const RENEW_JITTER: f64 = 0.05;

/// A fresh key pair and a CSR for it, PEM. The subject names the workload for people
/// reading logs; the identity in the certificate is the control plane's to set.
pub fn new_request(
    namespace: &str,
    service_account: &str,
) -> Result<(String, PrivateKeyDer<'static>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key generation: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{service_account}.{namespace}"),
    );
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?
        .pem()
        .map_err(|e| format!("CSR: {e}"))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((csr, der))
}

/// How long from `now` until a certificate valid from `not_before` to `not_after` should be
/// renewed: at [`RENEW_AT`] of its lifetime, ± [`RENEW_JITTER`], drawn from `rng`. Zero when
/// that point has passed (renew now).
pub fn refresh_in<R: Rng + ?Sized>(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    rng: &mut R,
) -> Duration {
    let Ok(lifetime) = not_after.duration_since(not_before) else {
        return Duration::ZERO;
    };
    let fraction = RENEW_AT + rng.random_range(-RENEW_JITTER..=RENEW_JITTER);
    let at = not_before + lifetime.mul_f64(fraction);
    at.duration_since(now).unwrap_or_default()
}

/// How long to wait before asking again after a failed request: doubling from 1 s, at most a
/// tenth of the time left (so a certificate near expiry is retried often), at most 30 s.
pub fn retry_in(failures: u32, left: Duration) -> Duration {
    let doubling = Duration::from_secs(1).saturating_mul(1 << failures.min(5));
    doubling
        .min(left / 10)
        .min(Duration::from_secs(30))
        .max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn renewal_lands_around_seventy_percent_of_the_lifetime() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let draws: Vec<f64> = (0..4000)
            .map(|_| {
                refresh_in(start, start + DAY, start, &mut rng).as_secs_f64() / DAY.as_secs_f64()
            })
            .collect();
        assert!(
            draws.iter().all(|f| (0.65..=0.75).contains(f)),
            "within ±5%"
        );
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        // Uniform on [0.65, 0.75]: sd of the mean = 0.1/sqrt(12*4000) ≈ 0.00046.
        assert!((mean - 0.70).abs() < 5.0 * 0.00046, "mean {mean}");
        let below = draws.iter().filter(|f| **f < 0.70).count() as f64 / draws.len() as f64;
        assert!((below - 0.5).abs() < 0.05, "symmetric: {below}");
    }

    #[test]
    fn renewal_counts_from_now_and_is_immediate_when_late() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let minute = Duration::from_secs(60);
        // Asked 20 s into a 60 s certificate: 42 s ± 3 s from the start, so 19-25 s from now.
        let left = refresh_in(
            start,
            start + minute,
            start + Duration::from_secs(20),
            &mut rng,
        );
        assert!((19.0..=25.0).contains(&left.as_secs_f64()), "{left:?}");
        // Past the point (a sidecar that was offline): now.
        let late = refresh_in(
            start,
            start + minute,
            start + Duration::from_secs(50),
            &mut rng,
        );
        assert_eq!(late, Duration::ZERO);
        // An inverted window is treated as expired.
        assert_eq!(
            refresh_in(start + minute, start, start, &mut rng),
            Duration::ZERO
        );
    }

    /// The CA backdates `not_before` a minute; counted from when the certificate arrived (as
    /// the sidecar does), a 20 s certificate is renewed after ~14 s, not at once.
    #[test]
    fn a_backdated_short_certificate_is_renewed_at_seventy_percent_of_what_is_left() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (not_before, not_after) =
            (now - Duration::from_secs(60), now + Duration::from_secs(20));
        let wait = refresh_in(not_before.max(now), not_after, now, &mut rng);
        assert!((13.0..=15.0).contains(&wait.as_secs_f64()), "{wait:?}");
        // Counted from not_before it would be now: the loop the e2e test caught.
        assert_eq!(
            refresh_in(not_before, not_after, now, &mut rng),
            Duration::ZERO
        );
    }

    #[test]
    fn failed_requests_back_off_but_not_past_expiry() {
        let hour = Duration::from_secs(3600);
        assert_eq!(retry_in(0, hour), Duration::from_secs(1));
        assert_eq!(retry_in(3, hour), Duration::from_secs(8));
        assert_eq!(retry_in(10, hour), Duration::from_secs(30));
        // 20 s left: never wait more than 2 s.
        assert_eq!(
            retry_in(10, Duration::from_secs(20)),
            Duration::from_secs(2)
        );
        assert_eq!(retry_in(10, Duration::ZERO), Duration::from_millis(100));
    }

    #[test]
    fn every_request_has_a_fresh_key() {
        let (csr, key) = new_request("shop", "web").unwrap();
        let (csr2, key2) = new_request("shop", "web").unwrap();
        assert!(
            csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{csr}"
        );
        assert_ne!(key.secret_der(), key2.secret_der(), "a new key every time");
        assert_ne!(csr, csr2);
        let params = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        assert!(params.params.subject_alt_names.is_empty());
    }
}
