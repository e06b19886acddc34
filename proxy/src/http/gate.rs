//! A future polled only when one of its own wakers fired.
//!
//! A connection's task is woken for every read and write, and `select!` polls every branch on
//! every wake. The branches that wait for rare events (drain, a reload closing the listener,
//! the idle and header-read timers) would each be polled, and re-register their wakers, on
//! every request. Wrapped in a [`Gated`], they cost one flag check per wake instead, and are
//! polled only when something they wait on happened.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

pin_project_lite::pin_project! {
    pub struct Gated<F> {
        #[pin]
        inner: F,
        gate: Arc<Gate>,
        // The inner future gets its first poll unconditionally, to register its wakers.
        polled: bool,
    }
}

struct Gate {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Self {
        Gated {
            inner,
            gate: Arc::new(Gate {
                woken: AtomicBool::new(false),
                task: AtomicWaker::new(),
            }),
            polled: false,
        }
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.gate.task.register(cx.waker());
        if *this.polled && !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        *this.polled = true;
        let waker = Waker::from(this.gate.clone());
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking through the waker it was given.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn polls_the_inner_future_only_after_its_own_wake() {
        let (polls, ready) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let waker = Arc::new(std::sync::Mutex::new(None));
        let mut gated = Box::pin(Gated::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        }));
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        for _ in 0..100 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled without a wake");
        ready.store(true, Ordering::Relaxed);
        waker.lock().unwrap().take().unwrap().wake();
        assert!(gated.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
