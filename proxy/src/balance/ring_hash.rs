//! Consistent hashing on a Ketama-style ring.
//!
//! Each endpoint puts points on a 64-bit circle at `hash(identity, replica)` for replicas
//! `0..count`; a request goes to the owner of the first point at or after its hash, wrapping
//! around. Points depend only on the endpoint's own identity and count, never on its index or
//! on the other endpoints, so removing an endpoint moves exactly the keys that were on it, and
//! adding one moves to it only the keys that now fall on its points.
//!
//! How many points: the heaviest endpoint gets `minimum_ring_size` and the others the same in
//! proportion to weight (at least 1). The ring thus has at least `minimum_ring_size` points (up
//! to the cap below), and an endpoint's count depends only on its weight relative to the
//! heaviest: adding or removing an endpoint that is not the sole heaviest changes no other
//! endpoint's points.
//! (Envoy instead scales so the whole ring is about `minimum_ring_size`, which is smaller but
//! changes every endpoint's count with every membership change, moving about as many keys again
//! between endpoints that stayed.) The cost is memory: about `minimum_ring_size` points per
//! endpoint of top weight, 12 bytes each, capped at [`MAX_RING_SIZE`] points, beyond which
//! counts are scaled down (and membership changes move some extra keys, as in Envoy).

use super::stable_hash::StableHasher;

/// Most points on one ring: 12 MiB. A cluster of 1,000 equal endpoints at the usual minimum of
/// 1,024 fits; bigger rings cost more to rebuild on every endpoint change than they gain.
pub const MAX_RING_SIZE: u64 = 1 << 20;

/// Distinct owners tried before [`RingHash::pick`] checks whether any endpoint is eligible.
const PROBES_BEFORE_CHECK: usize = 64;

#[derive(Debug, Clone)]
pub struct RingHash {
    /// Point positions, ascending.
    hashes: Box<[u64]>,
    /// `owners[j]` is the endpoint index owning `hashes[j]`.
    owners: Box<[u32]>,
    /// Endpoints with at least one point, for the "is anything eligible" check.
    members: Box<[u32]>,
}

impl RingHash {
    /// `weights[i]` and `keys[i]` are endpoint i's weight and stable identity. Endpoints of
    /// weight 0 get no points.
    pub fn new(weights: &[u32], keys: &[String], minimum_ring_size: u64) -> Self {
        assert_eq!(weights.len(), keys.len(), "one identity per endpoint");
        let counts = point_counts(weights, minimum_ring_size);
        let total: u64 = counts.iter().sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(total as usize);
        for (i, (&count, key)) in counts.iter().zip(keys).enumerate() {
            let mut identity = StableHasher::new();
            identity.write_field(key.as_bytes());
            points.extend((0..count).map(|replica| (point(identity, replica), i as u32)));
        }
        // Two points at one position (a 1 in 2^64 chance) are ordered by identity, not by
        // index, so every sidecar builds the same ring.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| keys[a.1 as usize].cmp(&keys[b.1 as usize]))
        });
        RingHash {
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
            members: (0..counts.len() as u32)
                .filter(|&i| counts[i as usize] > 0)
                .collect(),
        }
    }

    /// Points on the ring.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The owner of the first point at or after `hash` (wrapping) for which `eligible` holds.
    /// An ineligible owner's keys thus spread over the endpoints that follow its points, as if
    /// it had been removed. `None` when no endpoint on the ring is eligible.
    pub fn pick(&self, hash: u64, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let start = self.hashes.partition_point(|&h| h < hash);
        let mut refused = u32::MAX;
        let mut tried = 0;
        for step in 0..len {
            let owner = self.owners[(start + step) % len];
            if owner == refused {
                continue;
            }
            if eligible(owner as usize) {
                return Some(owner as usize);
            }
            refused = owner;
            tried += 1;
            if tried == PROBES_BEFORE_CHECK && !self.members.iter().any(|&i| eligible(i as usize)) {
                return None;
            }
        }
        None
    }
}

/// The position of an endpoint's `replica`-th point.
fn point(mut identity: StableHasher, replica: u64) -> u64 {
    identity.write_u64(replica);
    identity.finish()
}

/// Points per endpoint: `minimum_ring_size` for the heaviest, the others in proportion
/// (rounded, at least 1), scaled down if the ring would pass [`MAX_RING_SIZE`].
pub fn point_counts(weights: &[u32], minimum_ring_size: u64) -> Vec<u64> {
    let heaviest = u128::from(weights.iter().copied().max().unwrap_or(0));
    if heaviest == 0 {
        return vec![0; weights.len()];
    }
    let total_weight: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let mut top = u128::from(minimum_ring_size.max(1));
    // Ring size is about top * total_weight / heaviest.
    let max = u128::from(MAX_RING_SIZE);
    if top * total_weight > max * heaviest {
        top = (max * heaviest / total_weight).max(1);
    }
    weights
        .iter()
        .map(|&w| match u128::from(w) {
            0 => 0,
            w => ((top * w + heaviest / 2) / heaviest).max(1) as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{addresses, key_hashes};
    use std::collections::HashMap;

    #[test]
    fn counts_follow_weight_relative_to_the_heaviest() {
        assert_eq!(point_counts(&[1, 1, 1], 1024), vec![1024, 1024, 1024]);
        assert_eq!(point_counts(&[4, 2, 1, 0], 1000), vec![1000, 500, 250, 0]);
        assert_eq!(point_counts(&[1_000_000, 1], 100), vec![100, 1]);
        assert_eq!(point_counts(&[0, 0], 100), vec![0, 0]);
        assert_eq!(point_counts(&[], 100), Vec::<u64>::new());
        // Past the cap: 2,000 equal endpoints at 1,024 would be 2M points.
        let capped = point_counts(&[1; 2_000], 1024);
        assert_eq!(capped[0], 524);
        assert!(capped.iter().sum::<u64>() <= MAX_RING_SIZE);
    }

    #[test]
    fn the_ring_has_at_least_the_minimum() {
        let keys = addresses(3);
        let ring = RingHash::new(&[1, 1, 1], &keys, 100);
        assert_eq!(ring.len(), 300);
        let ring = RingHash::new(&[5, 1, 0], &keys, 100);
        assert_eq!(ring.len(), 120);
    }

    #[test]
    fn shares_follow_weights() {
        // 1,024 points for the heaviest: a share's relative sd is about 1/sqrt(points), 3%
        // at 1,024 and 6% at 256; 20% is well over 3 sd either way.
        let keys = addresses(3);
        let weights = [4, 2, 1];
        let ring = RingHash::new(&weights, &keys, 1024);
        let mut counts = [0usize; 3];
        for h in key_hashes(70_000) {
            counts[ring.pick(h, |_| true).unwrap()] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let want = 70_000.0 * f64::from(w) / 7.0;
            let got = counts[i] as f64;
            assert!((got - want).abs() < 0.2 * want, "{counts:?}");
        }
    }

    #[test]
    fn placement_is_by_identity_not_index() {
        let keys = addresses(5);
        let ring = RingHash::new(&[1; 5], &keys, 256);
        let mut reversed = keys.clone();
        reversed.reverse();
        let flipped = RingHash::new(&[1; 5], &reversed, 256);
        for h in key_hashes(2_000) {
            let a = ring.pick(h, |_| true).unwrap();
            let b = flipped.pick(h, |_| true).unwrap();
            assert_eq!(keys[a], reversed[b]);
        }
    }

    #[test]
    fn pinned_placement_never_changes() {
        // Every sidecar, of every version, must send a key to the same endpoint.
        let keys = addresses(4);
        let ring = RingHash::new(&[1; 4], &keys, 16);
        let picks: Vec<usize> = [0u64, 1 << 62, 1 << 63, u64::MAX]
            .iter()
            .map(|&h| ring.pick(h, |_| true).unwrap())
            .collect();
        assert_eq!(picks, PINNED_PICKS);
    }

    const PINNED_PICKS: [usize; 4] = [0, 2, 3, 0];

    #[test]
    fn an_ineligible_owner_hands_its_keys_to_the_next_points() {
        let keys = addresses(4);
        let ring = RingHash::new(&[1; 4], &keys, 256);
        let mut moved_to: HashMap<usize, usize> = HashMap::new();
        for h in key_hashes(5_000) {
            let before = ring.pick(h, |_| true).unwrap();
            let after = ring.pick(h, |i| i != 2).unwrap();
            assert_ne!(after, 2);
            if before == 2 {
                *moved_to.entry(after).or_default() += 1;
            } else {
                assert_eq!(after, before, "only endpoint 2's keys move");
            }
        }
        // They spread over the others rather than all going to one neighbour.
        assert_eq!(moved_to.len(), 3, "{moved_to:?}");
    }

    #[test]
    fn nothing_eligible_is_none() {
        let keys = addresses(100);
        let ring = RingHash::new(&[1; 100], &keys, 1024);
        let mut calls = 0;
        let picked = ring.pick(12345, |_| {
            calls += 1;
            false
        });
        assert_eq!(picked, None);
        assert!(calls <= PROBES_BEFORE_CHECK + 100, "{calls}");
        assert_eq!(RingHash::new(&[], &[], 1024).pick(1, |_| true), None);
        assert_eq!(
            RingHash::new(&[0], &keys[..1], 1024).pick(1, |_| true),
            None
        );
        // The only eligible endpoint has no points: None, after a full walk.
        assert_eq!(
            RingHash::new(&[1, 0], &keys[..2], 64).pick(1, |i| i == 1),
            None
        );
    }

    mod props {
        use super::*;
        use crate::balance::testing::weights;
        use proptest::prelude::*;

        fn owners<'a>(ring: &RingHash, keys: &'a [String]) -> Vec<&'a str> {
            crate::balance::testing::owners(KEYS, keys, |h| ring.pick(h, |_| true).unwrap())
        }

        const KEYS: usize = 10_000;
        const RING: u64 = 1024;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 48,
                failure_persistence: None,
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x51_6e),
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Removing one of N endpoints moves exactly the keys that were on it.
            #[test]
            fn removal_moves_only_the_removed_endpoints_keys(
                (weights, removed) in (2usize..=30)
                    .prop_flat_map(|n| (weights(n), 0..n))
                    .prop_filter("keep the heaviest", |((_, keep), r)| keep != r)
                    .prop_map(|((w, _), r)| (w, r))
            ) {
                let keys = addresses(weights.len());
                let before = owners(&RingHash::new(&weights, &keys, RING), &keys);
                let (mut w2, mut k2) = (weights.clone(), keys.clone());
                w2.remove(removed);
                k2.remove(removed);
                let after = owners(&RingHash::new(&w2, &k2, RING), &k2);
                for (b, a) in before.iter().zip(&after) {
                    if *b == keys[removed] {
                        prop_assert_ne!(*a, keys[removed].as_str());
                    } else {
                        prop_assert_eq!(a, b);
                    }
                }
            }

            /// Adding an endpoint moves keys only to it, and about its weighted share of them.
            ///
            /// Tolerance: 4.5 standard deviations of two independent errors. The new
            /// endpoint's share of the circle is a sum of its arcs, with a relative sd of
            /// about 1/sqrt(its points) (6% at 256 points, weight 1); and counting 10,000
            /// keys adds binomial noise, relative sd sqrt((1 - p) / (10,000 p)) (11% at the
            /// smallest share here, p = 1/121, 83 keys expected). Moving keys between old
            /// endpoints as well would overshoot by far more: it is checked exactly above.
            #[test]
            fn addition_moves_its_share_and_only_to_it(
                ((weights, _), new_weight) in (1usize..=30).prop_flat_map(weights).prop_flat_map(|w| (Just(w), 1u32..=4))
            ) {
                let keys = addresses(weights.len() + 1);
                let old_keys = &keys[..weights.len()];
                let before = owners(&RingHash::new(&weights, old_keys, RING), old_keys);
                let mut w2 = weights.clone();
                w2.push(new_weight);
                let after = owners(&RingHash::new(&w2, &keys, RING), &keys);
                let newcomer = keys[weights.len()].as_str();
                let mut moved = 0usize;
                for (b, a) in before.iter().zip(&after) {
                    if a != b {
                        prop_assert_eq!(*a, newcomer);
                        moved += 1;
                    }
                }
                let total: u32 = w2.iter().sum();
                let p = f64::from(new_weight) / f64::from(total);
                let want = KEYS as f64 * p;
                let points = point_counts(&w2, RING)[weights.len()] as f64;
                let sd = want * (1.0 / points + (1.0 - p) / want).sqrt();
                prop_assert!(
                    (moved as f64 - want).abs() <= 4.5 * sd,
                    "moved {} of {}, want {:.0} ± {:.0}", moved, KEYS, want, 4.5 * sd
                );
            }
        }
    }
}
