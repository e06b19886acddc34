//! Choosing where a request goes: which backend of a route's traffic split, then which endpoint
//! of that backend's cluster.
//!
//! Each algorithm is in its own file. Picking is separated from randomness: every function that
//! needs a random number takes it (or an `Rng`) as an argument, so tests can seed it.

pub mod round_robin;
pub mod split;

pub use round_robin::RoundRobin;
pub use split::WeightedSplit;
