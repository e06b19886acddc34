//! A transport wrapper that counts bytes into metrics and notes activity for idle timeouts.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::framing::{HeadScan, Next};
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
    /// Requests started on this connection so far: the sequence number of the next one.
    started: AtomicU64,
    /// Raw-scan verdicts that were not clean, by request sequence number, oldest first; and
    /// how many there are (so the common request checks an atomic, not a lock).
    bad_heads: Mutex<VecDeque<(u64, u8)>>,
    bad_pending: AtomicUsize,
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
            started: AtomicU64::new(0),
            bad_heads: Mutex::new(VecDeque::new()),
            bad_pending: AtomicUsize::new(0),
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
        let seq = self.started.fetch_add(1, Ordering::Relaxed);
        if self.bad_pending.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut bad = self.bad_heads.lock().unwrap_or_else(|e| e.into_inner());
        while bad.front().is_some_and(|&(s, _)| s < seq) {
            bad.pop_front();
        }
        let flags = match bad.front() {
            Some(&(s, flags)) if s == seq => {
                bad.pop_front();
                flags
            }
            _ => 0,
        };
        self.bad_pending.store(bad.len(), Ordering::Release);
        flags
    }

    /// Records the raw scan's verdict on the head of request number `seq`.
    fn verdict(&self, seq: u64, flags: u8) {
        if flags == 0 {
            return;
        }
        let mut bad = self.bad_heads.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: bytes after an upgrade are not heads, and nothing consumes their verdicts.
        if bad.len() < 16 {
            bad.push_back((seq, flags));
        }
        self.bad_pending.store(bad.len(), Ordering::Release);
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

/// Where the raw scan of a downstream HTTP/1 connection's request heads is in its byte stream.
enum Scan {
    /// Lost or not started: the next head is taken to start at a read made while no request is
    /// in flight.
    Idle,
    /// The next bytes are the head of request number `.0` (they follow a complete request).
    Expect(u64),
    /// In the head of request number `.1`.
    Head(HeadScan, u64),
    /// In a Content-Length body: `.0` bytes left, then the head of request number `.1`.
    Body(u64, u64),
}

impl Scan {
    /// Moves through `data`, recording a verdict for each head that ends in it.
    fn feed(&mut self, activity: &Activity, mut data: &[u8]) {
        loop {
            match self {
                Scan::Idle => return,
                Scan::Expect(seq) => {
                    if data.is_empty() {
                        return;
                    }
                    *self = Scan::Head(HeadScan::default(), *seq);
                }
                Scan::Head(scan, seq) => {
                    let Some((flags, used)) = scan.feed(data) else {
                        return;
                    };
                    activity.verdict(*seq, flags);
                    let next = *seq + 1;
                    data = &data[used..];
                    *self = match scan.next() {
                        Next::Head => Scan::Expect(next),
                        Next::Body(0) => Scan::Expect(next),
                        Next::Body(n) => Scan::Body(n, next),
                        Next::Unknown => Scan::Idle,
                    };
                }
                Scan::Body(left, seq) => {
                    let take = (*left).min(data.len() as u64);
                    data = &data[take as usize..];
                    *left -= take;
                    if *left > 0 {
                        return;
                    }
                    *self = Scan::Expect(*seq);
                }
            }
        }
    }
}

pub struct CountingIo<T> {
    inner: T,
    bytes: ByteCounters,
    activity: Option<Arc<Activity>>,
    /// Where the raw scan of request heads is in the byte stream.
    scan: Scan,
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, bytes: ByteCounters, activity: Option<Arc<Activity>>) -> Self {
        CountingIo {
            inner,
            bytes,
            activity,
            scan: Scan::Idle,
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
                if a.on_read(data) && matches!(this.scan, Scan::Idle) {
                    let seq = a.started.load(Ordering::Relaxed);
                    this.scan = Scan::Head(HeadScan::default(), seq);
                }
                this.scan.feed(a, data);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{CL_AND_TE, REPEATED_CL};
    use crate::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads `data` through a downstream transport in pieces of `piece` bytes.
    async fn read_through(activity: &Arc<Activity>, data: &[u8], piece: usize) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let bytes = Metrics::new().listener("t", "inbound").bytes;
        let mut io = CountingIo::new(server, bytes, Some(activity.clone()));
        client.write_all(data).await.unwrap();
        drop(client);
        let mut buf = vec![0; piece];
        while io.read(&mut buf).await.unwrap() > 0 {}
    }

    #[tokio::test]
    async fn pipelined_heads_get_their_own_verdicts_in_order() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
            GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        for piece in [stream.len(), 7, 1] {
            let activity = Arc::new(Activity::new(true));
            read_through(&activity, stream, piece).await;
            let verdicts: Vec<u8> = (0..4).map(|_| activity.request_started()).collect();
            // /c is refused; after its chunked body the scan has lost the thread, so /d is
            // not judged (hyper's normalisation covers it).
            assert_eq!(verdicts, [0, 0, CL_AND_TE, 0], "pieces of {piece}");
        }
    }

    #[tokio::test]
    async fn a_content_length_body_that_looks_like_a_head_is_skipped() {
        let body = b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n";
        let mut stream = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        stream
            .extend_from_slice(b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n");
        let activity = Arc::new(Activity::new(true));
        read_through(&activity, &stream, 5).await;
        assert_eq!(activity.request_started(), 0);
        assert_eq!(activity.request_started(), REPEATED_CL);
    }
}
