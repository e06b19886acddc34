//! The retry budget (Linkerd's): retries may add at most `ratio` of a cluster's requests, plus
//! `min_per_second` so that a quiet cluster can still retry, counted over a sliding window.
//!
//! Per-request retry limits alone multiply load during an outage (three attempts each is three
//! times the traffic onto an upstream that is already failing); a budget caps the extra load at
//! a share of the real traffic, however many requests fail.
//!
//! The window is a ring of [`BUCKETS`] buckets of `window / BUCKETS` each, keyed by time since the
//! budget was made. A count falls out of the window whole buckets at a time, so the span counted
//! is between `window × (BUCKETS − 1) / BUCKETS` and `window` long.

use std::sync::Mutex;
use std::time::Duration;

use remora_config::model;
use tokio::time::Instant;

/// Buckets in the window: ten, so counts expire a tenth of the window at a time.
pub const BUCKETS: usize = 10;

/// One cluster's retry budget, shared by every worker. A small mutex guards the ring: each
/// request takes it once to deposit, and each retry once more to withdraw, for a few adds.
#[derive(Debug)]
pub struct Budget {
    ratio: f64,
    /// Retries allowed in any window regardless of traffic: `min_per_second` × the window in
    /// seconds.
    reserve: f64,
    bucket: Duration,
    /// Time zero of the bucket ticks.
    origin: Instant,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// The newest tick seen; callers' clocks may arrive slightly out of order, and a count is
    /// never placed in a bucket older than this.
    latest: u64,
    slots: [Slot; BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    tick: u64,
    requests: u64,
    retries: u64,
}

/// What a budget counts in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetCounts {
    pub requests: u64,
    pub retries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum InvalidBudget {
    #[error("retry budget ratio must be a finite number >= 0, not {0}")]
    Ratio(f64),
    #[error("retry budget window must be at least {BUCKETS} ns, not {0:?}")]
    Window(Duration),
}

impl Budget {
    /// A budget whose window starts at `now`.
    pub fn try_new(config: model::RetryBudget, now: Instant) -> Result<Self, InvalidBudget> {
        if !config.ratio.is_finite() || config.ratio < 0.0 {
            return Err(InvalidBudget::Ratio(config.ratio));
        }
        let bucket = config.window / BUCKETS as u32;
        if bucket.is_zero() {
            return Err(InvalidBudget::Window(config.window));
        }
        Ok(Budget {
            ratio: config.ratio,
            reserve: f64::from(config.min_per_second) * config.window.as_secs_f64(),
            bucket,
            origin: now,
            ring: Mutex::new(Ring {
                latest: 0,
                slots: [Slot::default(); BUCKETS],
            }),
        })
    }

    /// Counts an original request (never a retry) toward the budget.
    pub fn deposit(&self, now: Instant) {
        let tick = self.tick(now);
        self.ring().current(tick).requests += 1;
    }

    /// Takes one retry from the budget: `true` if the retries in the window, this one included,
    /// stay within `ratio` × requests + the reserve. A `false` leaves the budget unchanged; the
    /// caller counts it as exhausted and returns the failed attempt's result.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let tick = self.tick(now);
        let mut ring = self.ring();
        let counts = ring.counts(tick);
        // The slack keeps 0.2 × 5 from landing just under 1.
        let allowed = self.ratio * counts.requests as f64 + self.reserve + 1e-9;
        if (counts.retries + 1) as f64 > allowed {
            return false;
        }
        ring.current(tick).retries += 1;
        true
    }

    /// Requests and retries in the window at `now`, for the admin page and tests.
    pub fn counts(&self, now: Instant) -> BudgetCounts {
        let tick = self.tick(now);
        self.ring().counts(tick)
    }

    fn tick(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin);
        u64::try_from(since.as_nanos() / self.bucket.as_nanos()).unwrap_or(u64::MAX)
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring is a few counters, consistent after every statement: a panic elsewhere while
        // it was held leaves nothing to repair.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ring {
    /// The bucket for `tick` (or the newest one, if `tick` is behind it), emptied if it last
    /// held an older tick.
    fn current(&mut self, tick: u64) -> &mut Slot {
        let tick = tick.max(self.latest);
        self.latest = tick;
        let slot = &mut self.slots[(tick % BUCKETS as u64) as usize];
        if slot.tick != tick {
            *slot = Slot {
                tick,
                ..Slot::default()
            };
        }
        slot
    }

    fn counts(&self, tick: u64) -> BudgetCounts {
        let tick = tick.max(self.latest);
        let live = self.slots.iter().filter(|s| tick - s.tick < BUCKETS as u64);
        live.fold(
            BudgetCounts {
                requests: 0,
                retries: 0,
            },
            |acc, s| BudgetCounts {
                requests: acc.requests + s.requests,
                retries: acc.retries + s.retries,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn config(ratio: f64, min_per_second: u32, window_secs: u64) -> model::RetryBudget {
        model::RetryBudget {
            ratio,
            min_per_second,
            window: Duration::from_secs(window_secs),
        }
    }

    /// Withdraws until refused; returns how many were allowed.
    fn drain(budget: &Budget) -> u32 {
        let mut n = 0;
        while budget.try_withdraw(Instant::now()) {
            n += 1;
            assert!(n < 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn rejects_bad_configs() {
        let now = Instant::now();
        for ratio in [-0.1, f64::NAN, f64::INFINITY] {
            let err = Budget::try_new(config(ratio, 1, 10), now).unwrap_err();
            assert!(matches!(err, InvalidBudget::Ratio(_)));
        }
        let mut zero = config(0.2, 1, 10);
        zero.window = Duration::from_nanos(9);
        assert_eq!(
            Budget::try_new(zero, now).unwrap_err(),
            InvalidBudget::Window(zero.window)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_second_is_a_floor_without_traffic() {
        // 5/s over 10 s: 50 retries with no requests at all.
        let budget = Budget::try_new(config(0.2, 5, 10), Instant::now()).unwrap();
        assert_eq!(drain(&budget), 50);
        let zero = Budget::try_new(config(0.2, 0, 10), Instant::now()).unwrap();
        assert_eq!(drain(&zero), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_requests_in_the_window() {
        let budget = Budget::try_new(config(0.2, 0, 10), Instant::now()).unwrap();
        for _ in 0..4 {
            budget.deposit(Instant::now());
        }
        // 0.2 × 4 = 0.8: not one whole retry yet.
        assert_eq!(drain(&budget), 0);
        budget.deposit(Instant::now());
        assert_eq!(drain(&budget), 1);
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        // 0.2 × 105 = 21, one already taken.
        assert_eq!(drain(&budget), 20);
        let counts = budget.counts(Instant::now());
        assert_eq!(
            counts,
            BudgetCounts {
                requests: 105,
                retries: 21
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_deposits_and_withdrawals_leave_the_window() {
        let budget = Budget::try_new(config(0.5, 1, 10), Instant::now()).unwrap();
        for _ in 0..20 {
            budget.deposit(Instant::now());
        }
        // 0.5 × 20 + 1 × 10.
        assert_eq!(drain(&budget), 20);

        // 9.9 s later all of it is still in the window (the first bucket is still counted).
        advance(Duration::from_millis(9_900)).await;
        assert_eq!(budget.counts(Instant::now()).requests, 20);
        assert_eq!(drain(&budget), 0);

        // At 10 s the first bucket (deposits and withdrawals) has expired: only the reserve.
        advance(Duration::from_millis(100)).await;
        let counts = budget.counts(Instant::now());
        assert_eq!(
            counts,
            BudgetCounts {
                requests: 0,
                retries: 0
            }
        );
        assert_eq!(drain(&budget), 10);

        // Spent reserve comes back as those retries age out, a bucket at a time.
        advance(Duration::from_secs(5)).await;
        assert_eq!(drain(&budget), 0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(drain(&budget), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_reading_behind_the_newest_counts_in_the_newest_bucket() {
        let start = Instant::now();
        let budget = Budget::try_new(config(1.0, 0, 10), start).unwrap();
        budget.deposit(start + Duration::from_secs(5));
        budget.deposit(start);
        let counts = budget.counts(start + Duration::from_secs(14));
        assert_eq!(counts.requests, 2);
        assert_eq!(budget.counts(start + Duration::from_secs(15)).requests, 0);
    }

    /// Every request fails and would be tried three times; the budget keeps the attempts within
    /// 1.2 × the requests plus the reserve in each window.
    #[tokio::test(start_paused = true)]
    async fn a_retry_storm_is_held_to_the_budget() {
        const RATE: u64 = 50; // requests per second
        const WINDOW_SECS: u64 = 10;
        const MIN_PER_SECOND: u32 = 2;
        let budget = Budget::try_new(config(0.2, MIN_PER_SECOND, WINDOW_SECS), Instant::now());
        let budget = budget.unwrap();
        let per_window = (RATE * WINDOW_SECS) as usize;
        let mut windows = [(0u64, 0u64); 6]; // (requests, attempts)
        for i in 0..per_window * windows.len() {
            let w = &mut windows[i / per_window];
            budget.deposit(Instant::now());
            w.0 += 1;
            w.1 += 1;
            for _retry in 1..3 {
                if !budget.try_withdraw(Instant::now()) {
                    break;
                }
                w.1 += 1;
            }
            advance(Duration::from_millis(1000 / RATE)).await;
        }
        let reserve = f64::from(MIN_PER_SECOND) * WINDOW_SECS as f64;
        for (i, &(requests, attempts)) in windows.iter().enumerate() {
            let bound = 1.2 * requests as f64 + reserve;
            assert!(
                attempts as f64 <= bound + 1e-9,
                "window {i}: {attempts} > {bound}"
            );
            // And the budget is used, not just never granted.
            assert!(
                attempts as f64 >= 1.15 * requests as f64,
                "window {i}: {attempts}"
            );
        }
    }
}
