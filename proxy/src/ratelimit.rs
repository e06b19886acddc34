//! Local rate limiting: a token bucket of `rate` tokens per second holding at most `burst`,
//! shared by every worker of a listener or route. A request that finds it empty is answered 429
//! with a `Retry-After` ([`retry_after_secs`]) instead of being queued.
//!
//! The bucket is kept as GCRA (the generic cell rate algorithm): one number, the theoretical
//! arrival time (TAT) of the next token, in a single `AtomicU64`, so taking a token is a
//! compare-and-swap and never blocks. It admits exactly what a token bucket admits: `burst` at
//! once from full, then one every `1 / rate` seconds, and in any interval of length t at most
//! `burst + rate × t`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use remora_config::model::RateLimit;
use tokio::time::Instant;

const NANOS_PER_SEC: f64 = 1e9;

/// A token bucket; see the module doc.
#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds per token, rounded up so the configured rate is never exceeded.
    interval: u64,
    /// `burst` × `interval`: how far ahead of now the TAT may run; a full bucket.
    tolerance: u64,
    /// Time zero for the TAT.
    origin: Instant,
    /// When the bucket will next be full (nanoseconds since `origin`) if nothing else is taken;
    /// at or before now, it is full.
    tat: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidRateLimit {
    #[error("rate limit rate must be a finite number of tokens per second > 0, not {0}")]
    Rate(f64),
    #[error("rate limit burst must be at least 1")]
    Burst,
}

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn try_new(config: RateLimit, now: Instant) -> Result<Self, InvalidRateLimit> {
        if !config.rate.is_finite() || config.rate <= 0.0 {
            return Err(InvalidRateLimit::Rate(config.rate));
        }
        if config.burst == 0 {
            return Err(InvalidRateLimit::Burst);
        }
        // `as` saturates: a rate of one token per 600 years is one per u64::MAX ns.
        let interval = ((NANOS_PER_SEC / config.rate).ceil() as u64).max(1);
        Ok(RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(config.burst)),
            origin: now,
            tat: AtomicU64::new(0),
        })
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let now = self.nanos(now);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            let ahead = next - now;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The `Retry-After` seconds for a 429 that must wait `wait`: rounded up (a client that comes
/// back on time finds a token), and at least 1 (0 would invite an immediate retry).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// [`retry_after_secs`] as a header value.
pub fn retry_after_header(wait: Duration) -> HeaderValue {
    HeaderValue::from(retry_after_secs(wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU32;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    fn limiter(rate: f64, burst: u32, now: Instant) -> RateLimiter {
        RateLimiter::try_new(RateLimit { rate, burst }, now).unwrap()
    }

    #[test]
    fn rejects_bad_configs() {
        let now = Instant::now();
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = RateLimiter::try_new(RateLimit { rate, burst: 1 }, now).unwrap_err();
            assert!(matches!(err, InvalidRateLimit::Rate(_)));
        }
        let err = RateLimiter::try_new(
            RateLimit {
                rate: 1.0,
                burst: 0,
            },
            now,
        )
        .unwrap_err();
        assert_eq!(err, InvalidRateLimit::Burst);
        // Extreme but valid rates do not overflow.
        assert!(limiter(1e-12, u32::MAX, now).try_take(now).is_ok());
        assert!(limiter(1e15, 1, now).try_take(now).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let bucket = limiter(10.0, 5, Instant::now());
        for _ in 0..5 {
            assert_eq!(bucket.try_take(Instant::now()), Ok(()));
        }
        assert_eq!(bucket.try_take(Instant::now()), Err(100 * MS));
        advance(40 * MS).await;
        assert_eq!(bucket.try_take(Instant::now()), Err(60 * MS));
        advance(60 * MS).await;
        assert_eq!(bucket.try_take(Instant::now()), Ok(()));
        assert_eq!(bucket.try_take(Instant::now()), Err(100 * MS));
        // A steady 10/s is all admitted.
        for _ in 0..50 {
            advance(100 * MS).await;
            assert_eq!(bucket.try_take(Instant::now()), Ok(()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refills_over_time_up_to_the_burst() {
        let bucket = limiter(2.0, 4, Instant::now());
        while bucket.try_take(Instant::now()).is_ok() {}
        // 1 s at 2/s: two tokens.
        advance(Duration::from_secs(1)).await;
        assert!(bucket.try_take(Instant::now()).is_ok());
        assert!(bucket.try_take(Instant::now()).is_ok());
        assert!(bucket.try_take(Instant::now()).is_err());
        // An hour idle fills it to the burst and no further.
        advance(Duration::from_secs(3600)).await;
        let taken = std::iter::from_fn(|| bucket.try_take(Instant::now()).ok()).count();
        assert_eq!(taken, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_exactly_until_the_next_token() {
        let bucket = limiter(3.0, 1, Instant::now());
        assert!(bucket.try_take(Instant::now()).is_ok());
        let wait = bucket.try_take(Instant::now()).unwrap_err();
        // 1/3 s, rounded up to the nanosecond.
        assert_eq!(wait, Duration::from_nanos(333_333_334));
        advance(wait - Duration::from_nanos(1)).await;
        assert!(bucket.try_take(Instant::now()).is_err());
        advance(Duration::from_nanos(1)).await;
        assert!(bucket.try_take(Instant::now()).is_ok());
        assert_eq!(retry_after_secs(wait), 1);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(1001 * MS), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        assert_eq!(retry_after_header(Duration::from_millis(2500)), "3");
    }

    /// Threads share a clock that moves forward one microsecond per reading; a thread may be
    /// preempted between reading it and taking, so takes arrive with stale times, as on real
    /// workers. However they interleave, no more than burst + rate × t are admitted.
    #[test]
    fn concurrent_takers_never_exceed_burst_plus_rate_times_t() {
        const THREADS: usize = 4;
        const TAKES: usize = 50_000;
        let (rate, burst) = (1000.0, 20);
        let start = Instant::now();
        let bucket = limiter(rate, burst, start);
        let clock = AtomicU64::new(0);
        let admitted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..TAKES {
                        let micros = clock.fetch_add(1, Ordering::Relaxed);
                        let now = start + Duration::from_micros(micros);
                        if bucket.try_take(now).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let elapsed = Duration::from_micros(clock.load(Ordering::Relaxed));
        let bound = f64::from(burst) + rate * elapsed.as_secs_f64();
        let admitted = admitted.load(Ordering::Relaxed);
        assert!(f64::from(admitted) <= bound, "{admitted} > {bound}");
        // And contention does not waste the allowance.
        assert!(f64::from(admitted) >= 0.9 * bound, "{admitted} << {bound}");
    }

    proptest! {
        /// Whatever the rate, burst and arrival pattern, every interval [a, b] between two
        /// arrivals admits at most burst + rate × (b − a).
        #[test]
        fn no_interval_admits_more_than_burst_plus_rate_times_t(
            rate in 0.5f64..2000.0,
            burst in 1u32..20,
            gaps in proptest::collection::vec((0u64..50_000, 1usize..4), 1..120),
        ) {
            let start = Instant::now();
            let bucket = limiter(rate, burst, start);
            let mut at = start;
            let mut admitted = Vec::new();
            for (gap_micros, takes) in gaps {
                at += Duration::from_micros(gap_micros);
                for _ in 0..takes {
                    if bucket.try_take(at).is_ok() {
                        admitted.push(at);
                    }
                }
            }
            for (i, a) in admitted.iter().enumerate() {
                for (j, b) in admitted.iter().enumerate().skip(i) {
                    let count = (j - i + 1) as f64;
                    let bound = f64::from(burst) + rate * (*b - *a).as_secs_f64();
                    prop_assert!(count <= bound + 1e-9, "{} in {:?}", count, *b - *a);
                }
            }
        }
    }
}
