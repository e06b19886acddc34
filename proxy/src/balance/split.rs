//! Weighted traffic split between a route's backends.
//!
//! A split is random per request, as in Envoy's weighted clusters: each request independently
//! goes to backend i with probability `weight_i / total`. Random (rather than round-robin) keeps
//! the split right even when many proxies each see only a few requests.

use rand::Rng;

#[derive(Debug, Clone)]
pub struct WeightedSplit {
    /// `cumulative[i]` is the sum of weights 0..=i.
    cumulative: Box<[u64]>,
}

impl WeightedSplit {
    /// At least one weight must be positive (validation guarantees it).
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w);
                sum
            })
            .collect();
        WeightedSplit { cumulative }
    }

    /// The backend for a request, drawing from `rng` only when there is a real choice.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        if self.cumulative.len() <= 1 {
            return 0;
        }
        self.pick_with(rng.next_u64())
    }

    /// The backend for the random number `r`: a pure function, so tests can drive it.
    pub fn pick_with(&self, r: u64) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0);
        if total == 0 {
            return 0;
        }
        let point = r % total;
        // The first backend whose cumulative weight exceeds the point; weight-0 backends have
        // the same cumulative value as their predecessor and so are never chosen.
        self.cumulative.partition_point(|&c| c <= point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn pure_pick_maps_points_to_backends() {
        let s = WeightedSplit::new(&[90, 0, 10]);
        assert_eq!(s.pick_with(0), 0);
        assert_eq!(s.pick_with(89), 0);
        assert_eq!(s.pick_with(90), 2);
        assert_eq!(s.pick_with(99), 2);
        assert_eq!(s.pick_with(100), 0);
    }

    #[test]
    fn split_follows_weights_within_tolerance() {
        // 100k draws at 70/20/10: the standard deviation of a share is below 0.15 percentage
        // points, so 1 point of tolerance fails any wrong distribution and never a right one.
        let s = WeightedSplit::new(&[70, 20, 10]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        let n = 100_000;
        for _ in 0..n {
            counts[s.pick(&mut rng)] += 1;
        }
        for (count, want) in counts.iter().zip([0.70, 0.20, 0.10]) {
            let got = f64::from(*count) / f64::from(n);
            assert!((got - want).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn single_backend_never_draws() {
        struct Panics;
        impl rand::TryRng for Panics {
            type Error = std::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                unreachable!()
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                unreachable!()
            }
            fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), Self::Error> {
                unreachable!()
            }
        }
        assert_eq!(WeightedSplit::new(&[5]).pick(&mut Panics), 0);
    }
}
