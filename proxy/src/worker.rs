//! Which worker thread is running. Each worker is a single-threaded tokio runtime; state that is
//! kept per worker (connection pools) is indexed by this number.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// This thread's worker index; 0 on threads that are not workers.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

pub(crate) fn set(index: usize) {
    WORKER.with(|w| w.set(index));
}
