//! The per-thread random source of the request path.
//!
//! Request ids, trace ids and traffic-split draws need fast, unpredictable-enough numbers, not
//! cryptographic ones. Each thread owns a small generator seeded from the OS once, so drawing is
//! a few instructions and never contends. Logic that must be testable takes an `Rng` argument
//! instead of calling this directly.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, TryRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(rand::make_rng());
}

/// A handle on this thread's generator, usable wherever an `Rng` is expected.
pub struct ThreadRng;

impl TryRng for ThreadRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(RNG.with(|r| r.borrow_mut().next_u32()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(RNG.with(|r| r.borrow_mut().next_u64()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        RNG.with(|r| r.borrow_mut().fill_bytes(dst));
        Ok(())
    }
}
