//! Cost of one endpoint pick per balancing algorithm, at 10, 100 and 1,000 endpoints.
//!
//! `cargo bench -p remora-proxy --bench pick -- --warm-up-time 1 --measurement-time 2`
//!
//! The view is a plain in-memory one, every endpoint eligible, with in-flight counts and
//! latencies that vary so least-request has real comparisons to make. Hashing policies get a
//! different hash every pick, so lookups land all over the ring or table as real traffic does.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use remora_config::model::{HashKey, LbPolicy, PeakEwma};
use remora_proxy::balance::{Balancer, EndpointView, request_hash};

struct View {
    weights: Vec<u32>,
    eligible: Vec<bool>,
    in_flight: Vec<u32>,
    latencies: Vec<f64>,
}

impl View {
    fn new(n: usize) -> Self {
        View {
            weights: (0..n).map(|i| 1 + (i % 3) as u32).collect(),
            eligible: vec![true; n],
            in_flight: (0..n).map(|i| (i * 7 % 11) as u32).collect(),
            latencies: (0..n).map(|i| 0.005 + (i % 13) as f64 * 0.001).collect(),
        }
    }
}

impl EndpointView for View {
    fn len(&self) -> usize {
        self.weights.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.weights[i]
    }
    fn eligible(&self, i: usize) -> bool {
        self.eligible[i]
    }
    fn in_flight(&self, i: usize) -> u32 {
        self.in_flight[i]
    }
    fn latency(&self, i: usize) -> f64 {
        self.latencies[i]
    }
}

fn policies() -> Vec<(&'static str, LbPolicy)> {
    let hash_on = vec![HashKey::Path];
    vec![
        ("round_robin", LbPolicy::RoundRobin),
        (
            "least_request_p2c",
            LbPolicy::LeastRequest {
                choice_count: 2,
                peak_ewma: None,
            },
        ),
        (
            "least_request_p2c_peak_ewma",
            LbPolicy::LeastRequest {
                choice_count: 2,
                peak_ewma: Some(PeakEwma {
                    decay: Duration::from_secs(10),
                    default_rtt: Duration::from_millis(30),
                }),
            },
        ),
        (
            "ring_hash_1024",
            LbPolicy::RingHash {
                minimum_ring_size: 1024,
                hash_on: hash_on.clone(),
            },
        ),
        (
            "maglev_65537",
            LbPolicy::Maglev {
                table_size: 65_537,
                hash_on,
            },
        ),
    ]
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100, 1_000] {
        let view = View::new(n);
        let keys: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect();
        for (name, policy) in policies() {
            let balancer = Balancer::new(&policy, &view.weights, &keys);
            let mut rng = SmallRng::seed_from_u64(1);
            let mut hash = 0u64;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    balancer.pick(&view, Some(black_box(hash)), &mut rng)
                })
            });
        }
    }
    group.finish();
}

/// The same with every other endpoint ineligible (ejected or unhealthy, no panic mode): the
/// round-robin and hash walks skip, least-request rejects draws.
fn pick_half_ineligible(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_half_ineligible");
    let n = 100;
    let mut view = View::new(n);
    for i in (0..n).step_by(2) {
        view.eligible[i] = false;
    }
    let keys: Vec<String> = (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect();
    for (name, policy) in policies() {
        let balancer = Balancer::new(&policy, &view.weights, &keys);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut hash = 0u64;
        group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
            b.iter(|| {
                hash = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
                balancer.pick(&view, Some(black_box(hash)), &mut rng)
            })
        });
    }
    group.finish();
}

/// Computing the request hash itself, for a header and a cookie among several.
fn hash_key(c: &mut Criterion) {
    let keys = [
        HashKey::Header(HeaderName::from_static("x-user")),
        HashKey::Cookie {
            name: "session".into(),
            ttl: None,
            path: None,
        },
    ];
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("alice@example.com"));
    headers.append(
        "cookie",
        HeaderValue::from_static("theme=dark; lang=en; session=4f2a9c0d1e7b8a6c"),
    );
    let uri: Uri = "/api/cart?item=42".parse().unwrap();
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    c.bench_function("request_hash/header_and_cookie", |b| {
        b.iter(|| request_hash(&keys, black_box(&headers), &uri, ip, &mut rng))
    });
}

criterion_group!(benches, pick, pick_half_ineligible, hash_key);
criterion_main!(benches);
