//! Smooth weighted round-robin (nginx's algorithm), precomputed into a schedule.
//!
//! Smooth means that weights 5:1:1 give `a a b a c a a`, never `a a a a a b c`: no endpoint gets
//! a burst. The sequence for a set of weights is computed once, when the config is applied; a pick
//! is then one atomic increment and an index, with no lock, and every worker thread walks the same
//! stable order.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest schedule kept. Weights whose sum is larger are scaled down proportionally first; the
/// shares change by less than 1/MAX_SCHEDULE, far below any weight a human configures.
const MAX_SCHEDULE: u64 = 1 << 16;

/// Schedule slots walked before [`RoundRobin::pick_eligible`] asks whether any endpoint is
/// eligible at all: a long schedule with nothing eligible then costs one pass over the
/// endpoints, not a pass over the whole period.
const PROBES_BEFORE_CHECK: usize = 64;

#[derive(Debug)]
pub struct RoundRobin {
    /// Endpoint indices in the order they are picked.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
    /// The endpoints that appear in the schedule (positive weight), for the "is anything
    /// eligible" check.
    members: Box<[u32]>,
}

impl RoundRobin {
    /// `weights[i]` is endpoint i's weight. Endpoints with weight 0 are never picked.
    pub fn new(weights: &[u32]) -> Self {
        RoundRobin {
            schedule: smooth_schedule(weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
            members: (0..weights.len() as u32)
                .filter(|&i| weights[i as usize] > 0)
                .collect(),
        }
    }

    /// The next endpoint index, or `None` when no endpoint has a positive weight.
    pub fn pick(&self) -> Option<usize> {
        match self.schedule.len() {
            0 => None,
            1 => Some(self.schedule[0] as usize),
            len => {
                let n = self.cursor.fetch_add(1, Ordering::Relaxed);
                Some(self.schedule[n % len] as usize)
            }
        }
    }

    /// The next endpoint for which `eligible` holds, or `None` when there is none.
    ///
    /// Walks the schedule from the cursor, at most one period. The cursor then moves past the
    /// slots skipped, so the eligible endpoints share an ineligible one's slots in schedule
    /// order instead of the next one in line taking them all. Concurrent picks may interleave
    /// their moves; the shares stay right on average and no pick is ever wrong.
    pub fn pick_eligible(&self, mut eligible: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = if len == 1 {
            0
        } else {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        };
        for skipped in 0..len {
            if skipped == PROBES_BEFORE_CHECK && !self.members.iter().any(|&i| eligible(i as usize))
            {
                return None;
            }
            let i = self.schedule[start.wrapping_add(skipped) % len] as usize;
            if eligible(i) {
                if skipped > 0 {
                    self.cursor.fetch_add(skipped, Ordering::Relaxed);
                }
                return Some(i);
            }
        }
        None
    }
}

/// One full period of smooth weighted round-robin over `weights`.
///
/// Slot t goes to the endpoint furthest behind its ideal share measured at the middle of the
/// slot, `(t + 1/2) * weight / total - picks` (ties: higher weight, then lower index). Over a
/// period each endpoint is picked exactly `weight` times, spread as evenly as possible. Measuring
/// at the middle rather than the end of the slot (nginx's variant) also keeps the seam between
/// two periods smooth: 5:1:1 gives `a b a a c a a`, at most 3 `a`s in a row even across periods,
/// where nginx's `a a b a c a a` repeats into 4.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let weights = reduce(weights);
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut picks = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for t in 0..total {
        // Doubled to stay in integers: (2t + 1) * w - 2 * total * picks.
        let behind = |i: usize| (2 * t + 1) * i64::from(weights[i]) - 2 * total * picks[i];
        let mut best = 0;
        for i in 1..weights.len() {
            let (b, cur) = (behind(i), behind(best));
            if b > cur || (b == cur && weights[i] > weights[best]) {
                best = i;
            }
        }
        picks[best] += 1;
        out.push(best as u32);
    }
    out
}

/// Divides weights by their greatest common divisor, then scales them down if the period would
/// still be longer than [`MAX_SCHEDULE`]. A positive weight never becomes 0.
fn reduce(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().fold(0u32, |g, &w| gcd(g, w));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut reduced: Vec<u32> = weights.iter().map(|&w| w / g).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total > MAX_SCHEDULE {
        for w in &mut reduced {
            if *w > 0 {
                let scaled = u64::from(*w) * MAX_SCHEDULE / total;
                *w = scaled.max(1) as u32;
            }
        }
    }
    reduced
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_5_1_1_are_smooth() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s, vec![0, 1, 0, 0, 2, 0, 0]);
    }

    #[test]
    fn each_endpoint_gets_exactly_its_weight_per_period() {
        let weights = [3, 0, 7, 2];
        let s = smooth_schedule(&weights);
        for (i, &w) in weights.iter().enumerate() {
            assert_eq!(s.iter().filter(|&&x| x == i as u32).count(), w as usize);
        }
    }

    #[test]
    fn no_run_longer_than_the_weight_ratio_allows() {
        // With 5:1:1 the best possible is 3 in a row (5 picks around 2 others), across periods too.
        let s = smooth_schedule(&[5, 1, 1]);
        let doubled: Vec<_> = s.iter().chain(s.iter()).collect();
        let longest = doubled
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert!(longest <= 3, "{s:?}");
    }

    #[test]
    fn gcd_reduces_the_period() {
        assert_eq!(smooth_schedule(&[100, 100]).len(), 2);
        assert_eq!(smooth_schedule(&[30, 10]), vec![0, 1, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 2]), vec![1, 0, 1]);
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_every_endpoint() {
        let s = smooth_schedule(&[u32::MAX, 1]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 1);
        assert!(s.contains(&1));
    }

    #[test]
    fn all_zero_or_empty_picks_nothing() {
        assert_eq!(RoundRobin::new(&[]).pick(), None);
        assert_eq!(RoundRobin::new(&[0, 0]).pick(), None);
    }

    #[test]
    fn picks_cycle_through_the_schedule() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..6).map(|_| rr.pick().unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn ineligible_endpoints_are_skipped_and_their_slots_shared() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick_eligible(|i| i != 1).unwrap())
            .collect();
        // Not 0, 2, 2, 0, 2, 2: the skipped slot is not all given to the endpoint after it.
        assert_eq!(picks, vec![0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn weighted_shares_hold_among_the_eligible() {
        // 5:1:1:3 with the heaviest out: the others keep their 1:1:3 ratio.
        let rr = RoundRobin::new(&[5, 1, 1, 3]);
        let mut counts = [0usize; 4];
        for _ in 0..1000 {
            counts[rr.pick_eligible(|i| i != 0).unwrap()] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1], 200);
        assert_eq!(counts[2], 200);
        assert_eq!(counts[3], 600);
    }

    #[test]
    fn nothing_eligible_is_none_and_cheap() {
        // A 65,536-slot schedule: the walk gives up after PROBES_BEFORE_CHECK slots and one
        // pass over the endpoints, not after the whole period.
        let weights: Vec<u32> = (1..=362).collect();
        let rr = RoundRobin::new(&weights);
        let mut calls = 0;
        let picked = rr.pick_eligible(|_| {
            calls += 1;
            false
        });
        assert_eq!(picked, None);
        assert!(calls <= PROBES_BEFORE_CHECK + weights.len(), "{calls}");
        assert_eq!(RoundRobin::new(&[]).pick_eligible(|_| true), None);
        assert_eq!(RoundRobin::new(&[0, 0]).pick_eligible(|_| true), None);
        // Weight 0 never comes back through eligibility either.
        assert_eq!(RoundRobin::new(&[0, 3]).pick_eligible(|i| i == 0), None);
    }

    #[test]
    fn a_rare_eligible_endpoint_is_still_found() {
        let mut weights = vec![100; 50];
        weights.push(1);
        let rr = RoundRobin::new(&weights);
        for _ in 0..3 {
            assert_eq!(rr.pick_eligible(|i| i == 50), Some(50));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Per period each endpoint is picked exactly its (gcd-reduced) weight times.
            ///
            /// Smoothness: in every window of consecutive picks, across the seam between
            /// periods too, each endpoint's count is within 2 of its share of the window (the
            /// most seen is 1.71). Runs follow: a run of L is L picks where L * w / total were
            /// due, so `L * (total - w) / total < 2`. Within one period a run is at most one
            /// longer than the ideal `ceil(w / (total - w))` (w picks spread around the
            /// total - w of the others); across the seam it can be longer (`[1, 16, 1]` runs
            /// 11 where 8 would do), which the window bound still caps.
            #[test]
            fn smooth_wrr_exact_shares_and_short_runs(
                weights in proptest::collection::vec(0u32..=20, 1..=8)
                    .prop_filter("a positive weight", |w| w.iter().any(|&x| x > 0))
            ) {
                let s = smooth_schedule(&weights);
                let g = weights.iter().fold(0, |g, &w| gcd(g, w));
                let total = weights.iter().map(|w| w / g).sum::<u32>() as usize;
                prop_assert_eq!(s.len(), total);
                let twice: Vec<u32> = s.iter().chain(s.iter()).copied().collect();
                for (i, &w) in weights.iter().enumerate() {
                    let (i, w) = (i as u32, (w / g) as usize);
                    prop_assert_eq!(s.iter().filter(|&&x| x == i).count(), w, "endpoint {}", i);
                    if w == 0 || w == total {
                        continue;
                    }
                    let share = w as f64 / total as f64;
                    for start in 0..total {
                        let mut count = 0;
                        for len in 1..=total {
                            count += usize::from(twice[start + len - 1] == i);
                            let off = (count as f64 - len as f64 * share).abs();
                            prop_assert!(off < 2.0, "endpoint {} off by {} at {}+{}: {:?}", i, off, start, len, s);
                        }
                    }
                    let runs = |seq: &[u32]| seq
                        .chunk_by(|a, b| a == b)
                        .filter(|run| run[0] == i)
                        .map(<[u32]>::len)
                        .max()
                        .unwrap_or(0);
                    let ideal = w.div_ceil(total - w);
                    prop_assert!(runs(&s) <= ideal + 1, "endpoint {} runs {} in a period: {:?}", i, runs(&s), s);
                    prop_assert!(runs(&twice) * (total - w) < 2 * total, "endpoint {}: {:?}", i, s);
                }
            }
        }
    }
}
