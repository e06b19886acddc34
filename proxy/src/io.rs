//! A transport wrapper that counts bytes into metrics and notes activity for idle timeouts.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::framing::HeadScan;
use crate::metrics::ByteCounters;

/// What the timers of one downstream connection watch: idleness, and (HTTP/1.x only) how long
/// the current request head has been arriving.
///
/// hyper's own header-read timeout also runs while a keep-alive connection waits for its next
/// request, so it would close idle connections after 10 s instead of the idle timeout (and arm a
/// timer per request). Instead the transport notes when the first byte of a head arrives, the
/// service notes when the head is complete, and one coarse periodic check per connection
/// ([`crate::http::watch`]) compares the two.
#[derive(Debug)]
pub struct Activity {
    /// Bumped on every read or write that moved bytes.
    io_ops: AtomicU64,
    /// Requests whose response has not finished yet; a connection with one is never idle, even
    /// when a slow upstream keeps it silent.
    in_flight: AtomicUsize,
    /// When the first byte of the request head being read arrived, in ms since `epoch`, plus
    /// one; 0 when no head is being read.
    head_started: AtomicU64,
    /// Whether head timing applies: HTTP/1.x connections. Cleared when the client opens with the
    /// HTTP/2 preface (HTTP/2 frames between requests are not request heads).
    times_heads: AtomicBool,
    /// The raw-head verdict for the request being read ([`crate::framing`] flags).
    head_flags: AtomicU8,
    epoch: Instant,
}

impl Activity {
    /// `http`: time request heads (HTTP listeners); false for opaque TCP.
    pub fn new(http: bool) -> Self {
        Activity {
            io_ops: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            times_heads: AtomicBool::new(http),
            head_flags: AtomicU8::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn io_ops(&self) -> u64 {
        self.io_ops.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The connection turned out not to be HTTP (protocol detection): stop timing heads.
    pub fn not_http(&self) {
        self.times_heads.store(false, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A complete request head arrived. Returns what the raw scan of that head found
    /// ([`crate::framing`] flags; 0 for clean, and for heads the scan did not see).
    pub fn request_started(&self) -> u8 {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.head_flags.swap(0, Ordering::Relaxed)
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long the head being read has been arriving, if one is.
    pub fn head_age(&self) -> Option<Duration> {
        match self.head_started.load(Ordering::Relaxed) {
            0 => None,
            t => Some(self.elapsed().saturating_sub(Duration::from_millis(t - 1))),
        }
    }

    fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    /// Notes a read; true if these bytes start a new request head.
    fn on_read(&self, data: &[u8]) -> bool {
        let first = self.io_ops.fetch_add(1, Ordering::Relaxed) == 0;
        if !self.times_heads.load(Ordering::Relaxed) {
            return false;
        }
        if first && data.starts_with(b"PRI ") {
            self.times_heads.store(false, Ordering::Relaxed);
            return false;
        }
        // With nothing in flight, bytes from the client are the start of the next head.
        if self.in_flight() == 0 && self.head_started.load(Ordering::Relaxed) == 0 {
            let now = self.elapsed().as_millis() as u64 + 1;
            self.head_started.store(now, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn on_write(&self) {
        self.io_ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// The upstream side of the raw head scan: an HTTP/1.1 client connection arms it when it sends
/// a request, and reads the verdict on the response head.
#[derive(Debug, Default)]
pub struct ResponseHeads {
    armed: AtomicBool,
    flags: AtomicU8,
}

impl ResponseHeads {
    /// The next bytes read start a response head.
    pub fn arm(&self) {
        self.flags.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    /// [`crate::framing`] flags of the last response head scanned.
    pub fn flags(&self) -> u8 {
        self.flags.load(Ordering::Relaxed)
    }
}

pub struct CountingIo<T> {
    inner: T,
    bytes: ByteCounters,
    activity: Option<Arc<Activity>>,
    /// Upstream HTTP/1.1 connections: where response-head verdicts go.
    responses: Option<Arc<ResponseHeads>>,
    /// The raw scan of the head being read, if one is.
    scan: Option<HeadScan>,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, bytes: ByteCounters, activity: Option<Arc<Activity>>) -> Self {
        CountingIo {
            inner,
            bytes,
            activity,
            responses: None,
            scan: None,
        }
    }

    /// An upstream HTTP/1.1 transport whose response heads are scanned.
    pub fn upstream(inner: T, bytes: ByteCounters, responses: Arc<ResponseHeads>) -> Self {
        CountingIo {
            inner,
            bytes,
            activity: None,
            responses: Some(responses),
            scan: None,
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
            let this = &mut *self;
            this.bytes.rx.inc_by(n as u64);
            let data = &buf.filled()[before..];
            if let Some(a) = &this.activity {
                if a.on_read(data) {
                    this.scan = Some(HeadScan::default());
                }
                if let Some(scan) = &mut this.scan
                    && let Some((flags, _)) = scan.feed(data)
                {
                    a.head_flags.store(flags, Ordering::Relaxed);
                    this.scan = None;
                }
            } else if let Some(r) = &this.responses {
                if r.armed.swap(false, Ordering::Relaxed) {
                    this.scan = Some(HeadScan::default());
                }
                if let Some(scan) = &mut this.scan
                    && let Some((flags, _)) = scan.feed(data)
                {
                    r.flags.store(flags, Ordering::Relaxed);
                    this.scan = None;
                }
            }
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
            if let Some(a) = &self.activity {
                a.on_write();
            }
        }
    }
}
