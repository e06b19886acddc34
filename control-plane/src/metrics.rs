//! The control plane's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Push latency buckets, in seconds: from a millisecond (a change pushed over loopback) to a
/// minute (a sidecar that took that long is in trouble).
const PUSH_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    connected: Gauge,
    pushes: Counter,
    acks: Counter,
    nacks: Counter,
    push_latency: Histogram,
    reloads: Family<Result, Counter>,
    validation_failures: Counter,
    generation: Gauge<u64, AtomicU64>,
    last_reload_success: Gauge,
    certificates_issued: Counter,
    certificates_refused: Family<Reason, Counter>,
    admission_reviews: Family<Result, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("remora_cp");
        let m = Metrics {
            registry: Registry::default(),
            connected: Gauge::default(),
            pushes: Counter::default(),
            acks: Counter::default(),
            nacks: Counter::default(),
            push_latency: Histogram::new(PUSH_BUCKETS),
            reloads: Family::default(),
            validation_failures: Counter::default(),
            generation: Gauge::default(),
            last_reload_success: Gauge::default(),
            certificates_issued: Counter::default(),
            certificates_refused: Family::default(),
            admission_reviews: Family::default(),
        };
        registry.register(
            "connected_sidecars",
            "Sidecars with a watch open now",
            m.connected.clone(),
        );
        registry.register(
            "pushes",
            "Config versions sent to sidecars",
            m.pushes.clone(),
        );
        registry.register("acks", "Config versions sidecars applied", m.acks.clone());
        registry.register(
            "nacks",
            "Config versions sidecars refused (the reason is in remora status)",
            m.nacks.clone(),
        );
        registry.register(
            "push_latency_seconds",
            "From a config change being accepted to the last connected sidecar's ACK or NACK",
            m.push_latency.clone(),
        );
        registry.register(
            "config_reloads",
            "Loads of the mesh directory, by result (accepted or rejected)",
            m.reloads.clone(),
        );
        registry.register(
            "config_validation_failures",
            "Mesh directory loads refused for invalid config",
            m.validation_failures.clone(),
        );
        registry.register(
            "config_generation",
            "The generation of the config served",
            m.generation.clone(),
        );
        registry.register(
            "config_last_reload_success",
            "1 if the last load of the mesh directory was accepted, 0 if it was refused",
            m.last_reload_success.clone(),
        );
        registry.register(
            "certificates_issued",
            "Workload certificates signed",
            m.certificates_issued.clone(),
        );
        registry.register(
            "certificate_requests_refused",
            "Certificate requests refused, by reason (bad_request, bad_csr, bad_csr_signature, \
             weak_key, bad_identity, no_tokens, unknown_token, identity_not_granted, no_ca, \
             sign_failed)",
            m.certificates_refused.clone(),
        );
        registry.register(
            "admission_reviews",
            "AdmissionReviews the injection webhook answered, by result (injected: with a patch; \
             unchanged: allowed as it was, not a pod or opted out or injected already; invalid: \
             not an AdmissionReview, refused with 400)",
            m.admission_reviews.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn config_load(&self, accepted: bool, generation: u64) {
        let result = if accepted { "accepted" } else { "rejected" };
        self.reloads.get_or_create(&Result { result }).inc();
        self.last_reload_success.set(i64::from(accepted));
        if !accepted {
            self.validation_failures.inc();
        }
        self.generation.set(generation);
    }

    pub fn set_connected(&self, n: usize) {
        self.connected.set(n as i64);
    }

    pub fn pushed(&self) {
        self.pushes.inc();
    }

    pub fn reported(&self, ack: bool) {
        if ack {
            self.acks.inc();
        } else {
            self.nacks.inc();
        }
    }

    pub fn push_complete(&self, seconds: f64) {
        self.push_latency.observe(seconds);
    }

    pub fn certificate_issued(&self) {
        self.certificates_issued.inc();
    }

    pub fn certificate_refused(&self, reason: &'static str) {
        self.certificates_refused
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// `result`: `injected`, `unchanged` or `invalid`.
    pub fn admission_review(&self, result: &'static str) {
        self.admission_reviews
            .get_or_create(&Result { result })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
