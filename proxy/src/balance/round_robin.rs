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

#[derive(Debug)]
pub struct RoundRobin {
    /// Endpoint indices in the order they are picked.
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl RoundRobin {
    /// `weights[i]` is endpoint i's weight. Endpoints with weight 0 are never picked.
    pub fn new(weights: &[u32]) -> Self {
        RoundRobin {
            schedule: smooth_schedule(weights).into_boxed_slice(),
            cursor: AtomicUsize::new(0),
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
}
