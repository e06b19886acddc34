//! Choosing where a request goes: which backend of a route's traffic split, then which endpoint
//! of that backend's cluster.
//!
//! Each algorithm is in its own file. Picking is separated from randomness: every function that
//! needs a random number takes it (or an `Rng`) as an argument, so tests can seed it. Picking is
//! also separated from endpoint state: a [`Balancer`] is built once per endpoint set from the
//! config (weights and identities) and asks an [`EndpointView`] about health and load when it
//! picks, so the same balancer serves while health and load change underneath it.

pub mod hash_key;
pub mod least_request;
pub mod maglev;
pub mod peak_ewma;
pub mod ring_hash;
pub mod round_robin;
pub mod split;
pub mod stable_hash;

pub use hash_key::{RequestHash, request_hash};
pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use peak_ewma::PeakEwma;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use split::WeightedSplit;

use rand::Rng;
use remora_config::model::LbPolicy;

/// What a balancer knows about a cluster's endpoints when it picks.
pub trait EndpointView {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn weight(&self, i: usize) -> u32;
    /// May take traffic now (healthy and not ejected; in panic mode the caller says every
    /// endpoint is).
    fn eligible(&self, i: usize) -> bool;
    /// Requests in flight to endpoint i.
    fn in_flight(&self, i: usize) -> u32;
    /// Peak-EWMA latency estimate of i in seconds (asked only when peak-EWMA is on).
    fn latency(&self, i: usize) -> f64;
}

/// One cluster's endpoint picker, built from its policy and endpoints.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    RingHash(RingHash),
    Maglev(Maglev),
}

impl Balancer {
    /// `weights[i]` and `keys[i]` are endpoint i's weight and stable identity (its address as
    /// text). Consistent hashing places endpoints by identity, never by index, so adding or
    /// removing one moves only the keys it must. Endpoints of weight 0 are never picked.
    ///
    /// Build a new balancer whenever the endpoint list or its weights change; health, ejection
    /// and load are read from the view at each pick instead.
    pub fn new(policy: &LbPolicy, weights: &[u32], keys: &[String]) -> Self {
        assert_eq!(weights.len(), keys.len(), "one identity per endpoint");
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin(RoundRobin::new(weights)),
            LbPolicy::LeastRequest {
                choice_count,
                peak_ewma,
            } => Balancer::LeastRequest(LeastRequest::new(*choice_count, peak_ewma.is_some())),
            LbPolicy::RingHash {
                minimum_ring_size, ..
            } => Balancer::RingHash(RingHash::new(weights, keys, *minimum_ring_size)),
            LbPolicy::Maglev { table_size, .. } => {
                Balancer::Maglev(Maglev::new(weights, keys, *table_size))
            }
        }
    }

    /// The endpoint for a request. `hash`: the request's hash key for ring_hash/maglev (None:
    /// a random eligible endpoint, weighted). `None` when no endpoint is eligible. The view
    /// must describe the same endpoints, in the same order, as the balancer was built from.
    pub fn pick(
        &self,
        view: &impl EndpointView,
        hash: Option<u64>,
        rng: &mut impl Rng,
    ) -> Option<usize> {
        let n = view.len();
        let eligible = |i: usize| i < n && view.eligible(i);
        match self {
            Balancer::RoundRobin(rr) => rr.pick_eligible(eligible),
            Balancer::LeastRequest(lr) => lr.pick(view, rng),
            // A random hash lands on a random point, so endpoints are chosen by weight.
            Balancer::RingHash(ring) => ring.pick(hash.unwrap_or_else(|| rng.next_u64()), eligible),
            Balancer::Maglev(m) => m.pick(hash.unwrap_or_else(|| rng.next_u64()), eligible),
        }
    }

    /// Whether [`Balancer::pick`] uses the request's hash: compute it only then.
    pub fn uses_hash(&self) -> bool {
        matches!(self, Balancer::RingHash(_) | Balancer::Maglev(_))
    }
}

/// Envoy's panic mode: true when fewer than `threshold` (0.0..=1.0) of `total` endpoints are
/// eligible. The caller then treats every endpoint as eligible, spreading load over the sick
/// ones too rather than crushing the few healthy ones. A threshold of 0 never panics; an empty
/// cluster never panics (there is nothing to spread over).
pub fn in_panic(eligible: usize, total: usize, threshold: f64) -> bool {
    total > 0 && (eligible as f64) < threshold * total as f64
}

#[cfg(test)]
pub(crate) mod testing {
    //! An in-memory [`EndpointView`] and fixtures shared by the algorithms' tests.

    use super::EndpointView;
    use super::stable_hash::splitmix64;

    #[derive(Debug, Clone)]
    pub struct Endpoints {
        pub weights: Vec<u32>,
        pub eligible: Vec<bool>,
        pub in_flight: Vec<u32>,
        pub latencies: Vec<f64>,
    }

    impl Endpoints {
        /// `n` eligible endpoints of weight 1, idle, 10 ms latency.
        pub fn uniform(n: usize) -> Self {
            Endpoints {
                weights: vec![1; n],
                eligible: vec![true; n],
                in_flight: vec![0; n],
                latencies: vec![0.010; n],
            }
        }

        pub fn set_in_flight(&mut self, loads: &[u32]) {
            self.in_flight = loads.to_vec();
        }
    }

    impl EndpointView for Endpoints {
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

    /// `10.0.<i / 250>.<i % 250 + 1>:8080` for i in 0..n.
    pub fn addresses(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
            .collect()
    }

    /// `n` well-spread request hashes, the same every run.
    pub fn key_hashes(n: usize) -> impl Iterator<Item = u64> {
        (0..n as u64).map(|i| splitmix64(i ^ 0x00c0_ffee))
    }

    /// The endpoint identity owning each of `n` keys, by `pick` (a consistent hash).
    pub fn owners(n: usize, keys: &[String], pick: impl Fn(u64) -> usize) -> Vec<&str> {
        key_hashes(n).map(|h| keys[pick(h)].as_str()).collect()
    }

    /// Weights 1..=4 for `n` endpoints, with endpoint `keep` at the top weight, so that a
    /// change elsewhere never changes the heaviest weight the key counts are relative to.
    pub fn weights(n: usize) -> impl proptest::strategy::Strategy<Value = (Vec<u32>, usize)> {
        use proptest::strategy::Strategy;
        (proptest::collection::vec(1u32..=4, n), 0..n).prop_map(|(mut w, keep)| {
            w[keep] = 4;
            (w, keep)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Endpoints, addresses};
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use remora_config::model::{HashKey, PeakEwma as PeakEwmaConfig};
    use std::time::Duration;

    fn policies() -> Vec<LbPolicy> {
        vec![
            LbPolicy::RoundRobin,
            LbPolicy::LeastRequest {
                choice_count: 2,
                peak_ewma: None,
            },
            LbPolicy::LeastRequest {
                choice_count: 100,
                peak_ewma: Some(PeakEwmaConfig {
                    decay: Duration::from_secs(10),
                    default_rtt: Duration::from_millis(30),
                }),
            },
            LbPolicy::RingHash {
                minimum_ring_size: 256,
                hash_on: vec![HashKey::Path],
            },
            LbPolicy::Maglev {
                table_size: 1_009,
                hash_on: vec![HashKey::Path],
            },
        ]
    }

    #[test]
    fn panic_threshold() {
        assert!(
            !in_panic(5, 10, 0.5),
            "exactly at the threshold is not below it"
        );
        assert!(in_panic(4, 10, 0.5));
        assert!(in_panic(0, 10, 0.01));
        assert!(!in_panic(0, 10, 0.0), "0% never panics");
        assert!(in_panic(9, 10, 1.0), "100%: any ineligible endpoint panics");
        assert!(!in_panic(10, 10, 1.0));
        assert!(
            !in_panic(0, 0, 0.5),
            "an empty cluster has nothing to spread over"
        );
        assert!(!in_panic(1, 3, 0.33));
        assert!(in_panic(1, 3, 0.34));
    }

    #[test]
    fn every_algorithm_returns_none_with_nothing_eligible() {
        let mut view = Endpoints::uniform(10);
        view.eligible = vec![false; 10];
        let keys = addresses(10);
        let mut rng = SmallRng::seed_from_u64(1);
        for policy in policies() {
            let b = Balancer::new(&policy, &view.weights, &keys);
            for hash in [None, Some(0), Some(u64::MAX)] {
                assert_eq!(b.pick(&view, hash, &mut rng), None, "{}", policy.as_str());
            }
        }
        let empty = Endpoints::uniform(0);
        for policy in policies() {
            let b = Balancer::new(&policy, &[], &[]);
            assert_eq!(
                b.pick(&empty, Some(7), &mut rng),
                None,
                "{}",
                policy.as_str()
            );
        }
    }

    #[test]
    fn no_algorithm_ever_returns_an_ineligible_endpoint() {
        let n = 30;
        let keys = addresses(n);
        let mut rng = SmallRng::seed_from_u64(2);
        for policy in policies() {
            let mut view = Endpoints::uniform(n);
            view.weights = (0..n as u32).map(|i| i % 4).collect(); // some weight 0
            let b = Balancer::new(&policy, &view.weights, &keys);
            for round in 0..200u64 {
                // A different pattern every round, down to a single eligible endpoint.
                let keep = 1 + round as usize % n;
                for i in 0..n {
                    view.eligible[i] = (i * 7 + round as usize) % n < keep;
                    view.in_flight[i] = ((i as u64 * 31 + round) % 5) as u32;
                }
                for k in 0..20u64 {
                    let hash = (k % 3 != 0).then(|| stable_hash::splitmix64(round << 8 | k));
                    match b.pick(&view, hash, &mut rng) {
                        Some(i) => {
                            assert!(view.eligible[i], "{}: {i} ineligible", policy.as_str());
                            assert!(view.weights[i] > 0, "{}: {i} weight 0", policy.as_str());
                        }
                        None => assert!(
                            (0..n).all(|i| !view.eligible[i] || view.weights[i] == 0),
                            "{}: None with an eligible endpoint",
                            policy.as_str()
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn hashing_policies_pin_a_key_and_spread_random_requests() {
        let n = 5;
        let view = Endpoints::uniform(n);
        let keys = addresses(n);
        let mut rng = SmallRng::seed_from_u64(3);
        for policy in &policies()[3..] {
            let b = Balancer::new(policy, &view.weights, &keys);
            assert!(b.uses_hash());
            let first = b.pick(&view, Some(42), &mut rng);
            for _ in 0..10 {
                assert_eq!(b.pick(&view, Some(42), &mut rng), first);
            }
            let mut seen = [0; 5];
            for _ in 0..5_000 {
                seen[b.pick(&view, None, &mut rng).unwrap()] += 1;
            }
            // 1,000 expected each; the ring's shares are ±6% at 256 points.
            assert!(
                seen.iter().all(|&c| c > 700),
                "{}: {seen:?}",
                policy.as_str()
            );
        }
        assert!(!Balancer::new(&LbPolicy::RoundRobin, &[1], &addresses(1)).uses_hash());
    }

    #[test]
    fn round_robin_through_the_balancer_follows_weights() {
        let view = {
            let mut v = Endpoints::uniform(3);
            v.weights = vec![3, 1, 0];
            v
        };
        let b = Balancer::new(&LbPolicy::RoundRobin, &view.weights, &addresses(3));
        let mut rng = SmallRng::seed_from_u64(4);
        let picks: Vec<_> = (0..8)
            .map(|_| b.pick(&view, None, &mut rng).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 6);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
    }
}
