//! When to resolve a name again: at its TTL, within the cluster's floor and ceiling, or after a
//! failure, sooner and backing off.
//!
//! Pure functions of their inputs (the TTL, the bounds, the failures so far, an injected RNG),
//! so the timing rules are tested without a clock or a DNS server.

use std::time::Duration;

use rand::{Rng, RngExt};

use crate::retry::backoff::backoff_cap;

/// The wait before resolving again after an answer with `ttl`: the TTL, but at least `min_ttl`
/// (a TTL of 0 must not become a query per millisecond) and at most `max_ttl` (a day-long TTL
/// must not keep gone endpoints for a day). Validation keeps `min_ttl <= max_ttl`; were it not
/// so, the floor wins, to protect the DNS server.
pub fn refresh_in(ttl: Duration, min_ttl: Duration, max_ttl: Duration) -> Duration {
    ttl.min(max_ttl).max(min_ttl)
}

/// The wait before trying again after `failures` failed resolutions in a row (1 after the
/// first): `min_ttl` doubled for each failure before this one, at most `max_ttl`, then drawn
/// from the upper half of that ("equal jitter"). Never under half of `min_ttl`, so a DNS outage
/// does not turn into a query storm; jittered, so proxies that failed together do not retry
/// together.
pub fn retry_in<R: Rng + ?Sized>(
    failures: u32,
    min_ttl: Duration,
    max_ttl: Duration,
    rng: &mut R,
) -> Duration {
    let cap = backoff_cap(min_ttl, max_ttl.max(min_ttl), failures.saturating_sub(1));
    let half = cap / 2;
    let spread = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    use super::*;

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn refresh_follows_the_ttl_within_the_bounds() {
        assert_eq!(refresh_in(s(30), s(5), s(60)), s(30));
        assert_eq!(refresh_in(s(0), s(5), s(60)), s(5), "floor");
        assert_eq!(refresh_in(s(3600), s(5), s(60)), s(60), "ceiling");
        assert_eq!(refresh_in(s(5), s(5), s(5)), s(5));
        // Bounds the wrong way round (validation refuses them): the floor wins.
        assert_eq!(refresh_in(s(30), s(10), s(1)), s(10));
    }

    #[test]
    fn retries_back_off_with_jitter_up_to_the_ceiling() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (min, max) = (s(1), s(60));
        for (failures, cap) in [(1, s(1)), (2, s(2)), (3, s(4)), (6, s(32)), (7, s(60))] {
            for _ in 0..200 {
                let d = retry_in(failures, min, max, &mut rng);
                assert!(
                    d >= cap / 2 && d <= cap,
                    "{failures}: {d:?} outside {cap:?}"
                );
            }
        }
        // A long outage stays at the ceiling, without overflowing.
        for _ in 0..200 {
            let d = retry_in(u32::MAX, min, max, &mut rng);
            assert!(d >= s(30) && d <= s(60), "{d:?}");
        }
        // 0 failures is read as the first.
        assert!(retry_in(0, min, max, &mut rng) <= s(1));
    }

    #[test]
    fn retries_spread_over_the_upper_half() {
        let mut rng = SmallRng::seed_from_u64(1);
        let draws: Vec<Duration> = (0..1000)
            .map(|_| retry_in(4, s(1), s(60), &mut rng))
            .collect();
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*lo < Duration::from_millis(4200), "{lo:?}");
        assert!(*hi > Duration::from_millis(7800), "{hi:?}");
        // Seeded: the same draws every run.
        let mut again = SmallRng::seed_from_u64(1);
        assert_eq!(retry_in(4, s(1), s(60), &mut again), draws[0]);
    }
}
