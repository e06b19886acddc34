//! Peak-EWMA latency estimate of one endpoint (Finagle's, as Linkerd and tower use it).
//!
//! A moving average that jumps up at once and comes down slowly: a sample above the estimate
//! replaces it (the peak), a sample below pulls it down by `1 - w` of the difference, where
//! `w = exp(-elapsed / decay)` and `elapsed` is the time since the last sample. Slowness is
//! believed immediately, recovery only after evidence; and a burst of samples close together
//! moves the estimate no further than one sample after the same quiet time would.
//!
//! Pure: the caller passes the time (a `tokio::time::Instant`, so tests drive it with a paused
//! clock). The integration keeps one per endpoint behind a lock and feeds it every response.

use std::time::Duration;

use remora_config::model;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct PeakEwma {
    /// Seconds.
    estimate: f64,
    /// When `estimate` last changed: the age of the evidence it holds.
    updated: Instant,
    /// The time constant of the decay. Zero means no memory: each sample replaces the estimate.
    decay: Duration,
}

impl PeakEwma {
    /// Starts at `default_rtt`, as of `now`: an endpoint with no answers yet is assumed to
    /// be this slow, and the first samples pull the estimate from there.
    pub fn new(default_rtt: Duration, decay: Duration, now: Instant) -> Self {
        PeakEwma {
            estimate: default_rtt.as_secs_f64(),
            updated: now,
            decay,
        }
    }

    pub fn from_config(config: &model::PeakEwma, now: Instant) -> Self {
        PeakEwma::new(config.default_rtt, config.decay, now)
    }

    /// Takes in one response time, measured up to `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let sample = rtt.as_secs_f64();
        if sample > self.estimate {
            self.estimate = sample;
        } else {
            let w = decay_weight(now.saturating_duration_since(self.updated), self.decay);
            self.estimate = self.estimate * w + sample * (1.0 - w);
        }
        // A sample stamped earlier than the last one (measured on another thread) must not
        // move the clock back.
        self.updated = self.updated.max(now);
    }

    /// The estimate in seconds, as of the last sample.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// The estimate decayed towards zero for the time since the last sample, as tower's
    /// `PeakEwma` does when it reads the load. Without this, an endpoint that once spiked
    /// keeps its high estimate while the balancer avoids it, gets no new samples, and is
    /// avoided forever; with it, the endpoint is tried again after a few `decay` periods of
    /// quiet, and the next sample sets the estimate right. Does not change the state.
    pub fn estimate_at(&self, now: Instant) -> f64 {
        self.estimate * decay_weight(now.saturating_duration_since(self.updated), self.decay)
    }
}

/// The share of the old estimate kept after `elapsed`: `exp(-elapsed / decay)`, 0 when `decay`
/// is zero (no memory).
pub fn decay_weight(elapsed: Duration, decay: Duration) -> f64 {
    if decay.is_zero() {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);
    const DECAY: Duration = Duration::from_secs(10);

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn decay_weight_is_exponential() {
        assert_eq!(decay_weight(Duration::ZERO, DECAY), 1.0);
        assert!(close(decay_weight(DECAY, DECAY), (-1.0f64).exp()));
        assert!(close(decay_weight(DECAY * 3, DECAY), (-3.0f64).exp()));
        assert_eq!(decay_weight(DECAY, Duration::ZERO), 0.0);
        assert_eq!(decay_weight(Duration::ZERO, Duration::ZERO), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn starts_at_the_default() {
        let e = PeakEwma::new(30 * MS, DECAY, Instant::now());
        assert!(close(e.estimate(), 0.030));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peak_replaces_the_estimate_at_once() {
        let mut e = PeakEwma::new(30 * MS, DECAY, Instant::now());
        advance(MS).await;
        e.observe(500 * MS, Instant::now());
        assert!(close(e.estimate(), 0.5));
    }

    #[tokio::test(start_paused = true)]
    async fn lower_samples_pull_down_by_the_elapsed_time() {
        let mut e = PeakEwma::new(100 * MS, DECAY, Instant::now());
        advance(DECAY).await;
        e.observe(20 * MS, Instant::now());
        // w = e^-1: 0.1 w + 0.02 (1 - w).
        let w = (-1.0f64).exp();
        let want = 0.1 * w + 0.02 * (1.0 - w);
        assert!(close(e.estimate(), want), "{} != {want}", e.estimate());

        // A second sample straight after barely moves it: w = 1 at zero elapsed.
        e.observe(20 * MS, Instant::now());
        assert!(close(e.estimate(), want));

        // After 5 s more: w = e^-0.5.
        advance(DECAY / 2).await;
        e.observe(20 * MS, Instant::now());
        let w = (-0.5f64).exp();
        let want = want * w + 0.02 * (1.0 - w);
        assert!(close(e.estimate(), want));
    }

    #[tokio::test(start_paused = true)]
    async fn converges_to_a_steady_latency() {
        let mut e = PeakEwma::new(Duration::from_secs(1), DECAY, Instant::now());
        for _ in 0..1_000 {
            advance(Duration::from_millis(100)).await;
            e.observe(10 * MS, Instant::now());
        }
        // 100 s of samples is 10 time constants: within e^-10 of the way there.
        assert!((e.estimate() - 0.010).abs() < 1e-4, "{}", e.estimate());
    }

    #[tokio::test(start_paused = true)]
    async fn reading_decays_towards_zero_without_changing_state() {
        let start = Instant::now();
        let mut e = PeakEwma::new(30 * MS, DECAY, start);
        e.observe(200 * MS, start);
        advance(DECAY * 2).await;
        let now = Instant::now();
        assert!(close(e.estimate_at(now), 0.2 * (-2.0f64).exp()));
        assert!(close(e.estimate_at(start), 0.2));
        assert!(close(e.estimate(), 0.2));
    }

    #[tokio::test(start_paused = true)]
    async fn an_out_of_order_sample_does_not_rewind_the_clock() {
        let start = Instant::now();
        let mut e = PeakEwma::new(100 * MS, DECAY, start);
        advance(DECAY).await;
        let later = Instant::now();
        e.observe(100 * MS, later);
        e.observe(10 * MS, start); // stamped before the last sample: zero elapsed, w = 1.
        assert!(close(e.estimate(), 0.1));
        assert!(close(e.estimate_at(later), 0.1));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_decay_has_no_memory() {
        let mut e = PeakEwma::new(100 * MS, Duration::ZERO, Instant::now());
        e.observe(10 * MS, Instant::now());
        assert!(close(e.estimate(), 0.01));
    }

    #[tokio::test(start_paused = true)]
    async fn from_config_uses_both_settings() {
        let cfg = model::PeakEwma {
            decay: DECAY,
            default_rtt: 40 * MS,
        };
        let mut e = PeakEwma::from_config(&cfg, Instant::now());
        assert!(close(e.estimate(), 0.04));
        advance(DECAY).await;
        e.observe(Duration::ZERO, Instant::now());
        assert!(close(e.estimate(), 0.04 * (-1.0f64).exp()));
    }
}
