//! Weighted least-request: send the request where the fewest are waiting, relative to weight.
//!
//! An endpoint's load is `(in_flight + 1) / weight`, times its peak-EWMA latency when that is on
//! (Linkerd's cost: work queued times how long each piece takes). The `+ 1` counts the request
//! being placed, so an idle heavy endpoint still beats an idle light one.
//!
//! With `choice_count` below the number of eligible endpoints, that many distinct eligible
//! endpoints are drawn at random and the least loaded wins: at 2, Mitzenmacher's power of two
//! choices, which avoids nearly every overloaded endpoint in O(1) and, unlike a full scan, does
//! not send every proxy's next request to the same momentarily idle endpoint. Otherwise all
//! eligible endpoints are compared. Ties are broken at random in both cases.

use rand::{Rng, RngExt};

use super::EndpointView;

/// Draws kept on the stack while sampling; more choices than this use a heap buffer.
const INLINE_CHOICES: usize = 8;

#[derive(Debug, Clone)]
pub struct LeastRequest {
    /// Endpoints compared per pick; at least 1.
    choice_count: usize,
    /// Multiply load by [`EndpointView::latency`].
    peak_ewma: bool,
}

impl LeastRequest {
    pub fn new(choice_count: u32, peak_ewma: bool) -> Self {
        LeastRequest {
            choice_count: (choice_count as usize).max(1),
            peak_ewma,
        }
    }

    /// The least-loaded eligible endpoint among `choice_count` drawn at random (or among all of
    /// them). Endpoints of weight 0 are never picked. `None` when nothing is eligible.
    pub fn pick(&self, view: &impl EndpointView, rng: &mut impl Rng) -> Option<usize> {
        let n = view.len();
        let k = self.choice_count;
        if k >= n {
            return self.scan(view, rng);
        }
        let mut inline = [0usize; INLINE_CHOICES];
        let mut heap = Vec::new();
        let drawn: &mut [usize] = if k <= INLINE_CHOICES {
            &mut inline[..k]
        } else {
            heap.resize(k, 0);
            &mut heap
        };
        if let Some(best) = self.sample_by_rejection(view, rng, drawn) {
            return Some(best);
        }
        // Few endpoints are eligible: rejection sampling would take long, so count them.
        let eligible = (0..n).filter(|&i| candidate(view, i)).count();
        if eligible <= k {
            self.scan(view, rng)
        } else {
            self.sample_by_rank(view, rng, eligible, drawn)
        }
    }

    fn load(&self, view: &impl EndpointView, i: usize) -> f64 {
        let queued = (f64::from(view.in_flight(i)) + 1.0) / f64::from(view.weight(i));
        if self.peak_ewma {
            let latency = view.latency(i);
            // A NaN estimate (a bug upstream of us) must not win every comparison or none.
            queued
                * if latency.is_nan() {
                    f64::INFINITY
                } else {
                    latency.max(0.0)
                }
        } else {
            queued
        }
    }

    /// Draws uniform indices, keeping distinct eligible ones, until `drawn` is full; the least
    /// loaded of them, or `None` if too many draws missed (most endpoints are ineligible).
    ///
    /// The kept draws are a uniform random sample in random order, so the first of several
    /// equally loaded ones is a uniform choice among them: ties need no extra randomness.
    fn sample_by_rejection(
        &self,
        view: &impl EndpointView,
        rng: &mut impl Rng,
        drawn: &mut [usize],
    ) -> Option<usize> {
        let n = view.len();
        // With half the endpoints eligible, 2k draws are expected; this budget fails about
        // once in 10^6 picks at k = 2 and then costs one extra scan.
        let budget = 4 * drawn.len() + 16;
        let mut kept = 0;
        let mut best = (usize::MAX, f64::INFINITY);
        for _ in 0..budget {
            let i = rng.random_range(0..n);
            if drawn[..kept].contains(&i) || !candidate(view, i) {
                continue;
            }
            drawn[kept] = i;
            kept += 1;
            let load = self.load(view, i);
            if best.0 == usize::MAX || load < best.1 {
                best = (i, load);
            }
            if kept == drawn.len() {
                return Some(best.0);
            }
        }
        None
    }

    /// Exact sampling when eligible endpoints are sparse: `drawn.len()` distinct ranks among
    /// the `eligible` candidates, then one pass mapping ranks to endpoints.
    fn sample_by_rank(
        &self,
        view: &impl EndpointView,
        rng: &mut impl Rng,
        eligible: usize,
        drawn: &mut [usize],
    ) -> Option<usize> {
        let k = drawn.len();
        let mut kept = 0;
        while kept < k {
            let rank = rng.random_range(0..eligible);
            if !drawn[..kept].contains(&rank) {
                drawn[kept] = rank;
                kept += 1;
            }
        }
        drawn.sort_unstable();
        let mut ranks = drawn.iter().peekable();
        let mut best = Best::default();
        let mut rank = 0;
        for i in 0..view.len() {
            if !candidate(view, i) {
                continue;
            }
            if ranks.peek() == Some(&&rank) {
                ranks.next();
                best.offer(i, self.load(view, i), rng);
            }
            rank += 1;
        }
        best.index
    }

    /// Every eligible endpoint compared.
    fn scan(&self, view: &impl EndpointView, rng: &mut impl Rng) -> Option<usize> {
        let mut best = Best::default();
        for i in 0..view.len() {
            if candidate(view, i) {
                best.offer(i, self.load(view, i), rng);
            }
        }
        best.index
    }
}

/// May take this request: eligible, and a weight to divide by.
fn candidate(view: &impl EndpointView, i: usize) -> bool {
    view.eligible(i) && view.weight(i) > 0
}

/// The least load seen so far, ties broken uniformly by reservoir sampling: the t-th endpoint
/// with the same least load replaces the current one with probability 1/t.
#[derive(Default)]
struct Best {
    index: Option<usize>,
    load: f64,
    ties: u32,
}

impl Best {
    fn offer(&mut self, i: usize, load: f64, rng: &mut impl Rng) {
        if self.index.is_none() || load < self.load {
            *self = Best {
                index: Some(i),
                load,
                ties: 1,
            };
        } else if load == self.load {
            self.ties += 1;
            if rng.random_range(0..self.ties) == 0 {
                self.index = Some(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::Endpoints;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(42)
    }

    fn counts(lr: &LeastRequest, view: &Endpoints, picks: usize) -> Vec<usize> {
        let mut rng = rng();
        let mut counts = vec![0; view.len()];
        for _ in 0..picks {
            counts[lr.pick(view, &mut rng).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn full_scan_takes_the_least_loaded() {
        let mut view = Endpoints::uniform(4);
        view.set_in_flight(&[5, 2, 7, 3]);
        let lr = LeastRequest::new(10, false);
        assert_eq!(counts(&lr, &view, 100), vec![0, 100, 0, 0]);
    }

    #[test]
    fn load_is_relative_to_weight() {
        // 3 in flight at weight 4 is (3+1)/4 = 1.0; 1 in flight at weight 1 is 2.0.
        let mut view = Endpoints::uniform(2);
        view.weights = vec![4, 1];
        view.set_in_flight(&[3, 1]);
        let lr = LeastRequest::new(2, false);
        assert_eq!(counts(&lr, &view, 50), vec![50, 0]);
        // Idle: (0+1)/4 beats (0+1)/1, so the heavier endpoint wins.
        view.set_in_flight(&[0, 0]);
        assert_eq!(counts(&lr, &view, 50), vec![50, 0]);
    }

    #[test]
    fn ties_are_broken_at_random() {
        let view = Endpoints::uniform(4);
        for choices in [2, 4] {
            let lr = LeastRequest::new(choices, false);
            let c = counts(&lr, &view, 40_000);
            // Each share is 10,000 ± 87 (1 sd); 500 is over 5 sd.
            for &n in &c {
                assert!((9_500..=10_500).contains(&n), "{choices}: {c:?}");
            }
        }
    }

    #[test]
    fn peak_ewma_weighs_latency() {
        // Fewer in flight but ten times slower: (1+1) * 0.1 = 0.2 loses to (3+1) * 0.01.
        let mut view = Endpoints::uniform(2);
        view.set_in_flight(&[1, 3]);
        view.latencies = vec![0.1, 0.01];
        assert_eq!(counts(&LeastRequest::new(2, true), &view, 20), vec![0, 20]);
        assert_eq!(counts(&LeastRequest::new(2, false), &view, 20), vec![20, 0]);
        // A NaN estimate loses rather than poisoning the comparison.
        view.latencies = vec![f64::NAN, 0.5];
        assert_eq!(counts(&LeastRequest::new(2, true), &view, 20), vec![0, 20]);
    }

    #[test]
    fn p2c_starves_a_slow_endpoint() {
        // 10 endpoints; endpoint 0 takes 50 ticks per request, the others 5. One request
        // arrives per tick. P2C compares in-flight counts, so endpoint 0's queue grows until it
        // loses most comparisons. Its share, 1/10 under round-robin or a random pick, is 2.94%
        // over 100,000 requests with this seed (the other nine get 10.7 to 10.8% each).
        // Asserted: below half of 1/N, and above zero (it is slow, not dead).
        let n = 10;
        let mut view = Endpoints::uniform(n);
        let lr = LeastRequest::new(2, false);
        let mut rng = rng();
        let mut done_at: Vec<Vec<u64>> = vec![Vec::new(); n];
        let mut picks = vec![0u64; n];
        let total = 100_000u64;
        for tick in 0..total {
            for (i, queue) in done_at.iter_mut().enumerate() {
                queue.retain(|&t| t > tick);
                view.in_flight[i] = queue.len() as u32;
            }
            let i = lr.pick(&view, &mut rng).unwrap();
            picks[i] += 1;
            done_at[i].push(tick + if i == 0 { 50 } else { 5 });
        }
        let share = picks[0] as f64 / total as f64;
        assert!(share < 0.05, "slow endpoint share {share:.4}: {picks:?}");
        assert!(
            share > 0.0,
            "P2C still sends the slow endpoint some traffic"
        );
    }

    #[test]
    fn never_ineligible_never_weight_zero() {
        let mut view = Endpoints::uniform(20);
        for i in (0..20).step_by(3) {
            view.eligible[i] = false;
        }
        view.weights[1] = 0;
        view.set_in_flight(&[0; 20]);
        for choices in [1, 2, 3, 19, 20, 100] {
            let c = counts(&LeastRequest::new(choices, false), &view, 2_000);
            for (i, &n) in c.iter().enumerate() {
                if !view.eligible[i] || view.weights[i] == 0 {
                    assert_eq!(n, 0, "{choices}: endpoint {i} picked");
                }
            }
        }
    }

    #[test]
    fn sparse_eligibility_still_samples() {
        // 2 of 1,000 eligible: rejection sampling gives up, counting finds 2 <= k, scan.
        // 3 of 1,000 with k = 2: exact sampling by rank, every eligible endpoint gets picks.
        let mut view = Endpoints::uniform(1_000);
        view.eligible.iter_mut().for_each(|e| *e = false);
        for i in [10, 500, 990] {
            view.eligible[i] = true;
        }
        view.set_in_flight(&[0; 1_000]);
        let c = counts(&LeastRequest::new(2, false), &view, 3_000);
        for i in [10, 500, 990] {
            assert!((800..=1_200).contains(&c[i]), "{i}: {}", c[i]);
        }
        view.eligible[990] = false;
        let c = counts(&LeastRequest::new(2, false), &view, 2_000);
        assert_eq!(c[10] + c[500], 2_000);
        assert!(c[10] > 800 && c[500] > 800);
    }

    #[test]
    fn nothing_eligible_is_none() {
        let mut view = Endpoints::uniform(50);
        view.eligible.iter_mut().for_each(|e| *e = false);
        let mut rng = rng();
        for choices in [1, 2, 50] {
            assert_eq!(LeastRequest::new(choices, true).pick(&view, &mut rng), None);
        }
        let empty = Endpoints::uniform(0);
        assert_eq!(LeastRequest::new(2, false).pick(&empty, &mut rng), None);
        let mut zero = Endpoints::uniform(3);
        zero.weights = vec![0; 3];
        assert_eq!(LeastRequest::new(2, false).pick(&zero, &mut rng), None);
    }

    #[test]
    fn many_choices_use_the_heap_buffer() {
        let mut view = Endpoints::uniform(100);
        let loads: Vec<u32> = (0..100).map(|i| 100 - i).collect();
        view.set_in_flight(&loads);
        let lr = LeastRequest::new(20, false);
        let c = counts(&lr, &view, 1_000);
        // The best of 20 random draws out of 100 is always in the better half.
        assert!(c[..50].iter().all(|&n| n == 0), "{c:?}");
    }
}
