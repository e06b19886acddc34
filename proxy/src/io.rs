//! A transport wrapper that counts bytes into metrics and notes activity for idle timeouts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::ByteCounters;

/// What the idle timer of one downstream connection watches.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bumped on every read or write that moved bytes.
    io_ops: AtomicU64,
    /// Requests whose response has not finished yet; a connection with one is never idle, even
    /// when a slow upstream keeps it silent.
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn io_ops(&self) -> u64 {
        self.io_ops.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct CountingIo<T> {
    inner: T,
    bytes: ByteCounters,
    activity: Option<Arc<Activity>>,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, bytes: ByteCounters, activity: Option<Arc<Activity>>) -> Self {
        CountingIo {
            inner,
            bytes,
            activity,
        }
    }

    fn moved(&self) {
        if let Some(a) = &self.activity {
            a.io_ops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.rx.inc_by(n as u64);
            self.moved();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.wrote(n);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.wrote(n);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T> CountingIo<T> {
    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.bytes.tx.inc_by(n as u64);
            self.moved();
        }
    }
}
