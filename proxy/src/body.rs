//! Body wrappers on the request path. Bodies stream frame by frame in both directions and are
//! never buffered whole; these wrappers only count, enforce the size limit, and notice the end.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::ProxyError;
use crate::grpc::{self, DeadlineBody};
use crate::observe::Completion;
use crate::upstream::pool::PooledBody;

/// What the response side needs to know about the request body once it has streamed.
#[derive(Debug, Default)]
pub struct RequestBodyStats {
    pub bytes: AtomicU64,
    /// Set when the body went past the limit; the exchange is then answered with 413.
    pub over_limit: AtomicBool,
    /// Set when the client stopped sending mid-body for the body timeout: 408.
    pub timed_out: AtomicBool,
    /// Set when reading the body failed (malformed chunked framing, or the client went away).
    pub failed: AtomicBool,
}

impl RequestBodyStats {
    /// The error to answer with when the exchange failed because of the request body.
    pub fn error(&self, limit: Option<u64>, timeout: Duration) -> Option<ProxyError> {
        if let (true, Some(limit)) = (self.over_limit.load(Ordering::Relaxed), limit) {
            Some(ProxyError::BodyTooLarge { limit })
        } else if self.timed_out.load(Ordering::Relaxed) {
            Some(ProxyError::RequestBodyTimeout(timeout))
        } else if self.failed.load(Ordering::Relaxed) {
            Some(ProxyError::BadRequest(
                "malformed or incomplete request body",
            ))
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the request body failed: {0}")]
    Downstream(#[from] hyper::Error),
    #[error("request body is over the limit of {0} bytes")]
    TooLarge(u64),
    #[error("no request body bytes for {0:?}")]
    TimedOut(Duration),
}

/// The downstream request body as sent upstream: live from the client, or a replay of what a
/// failed attempt captured.
pub struct RequestBody {
    /// `None` for a replay.
    inner: Option<Incoming>,
    /// A replay's frames, in order.
    replay: VecDeque<Frame<Bytes>>,
    /// Where a live body keeps what it streams, for a retry to replay.
    capture: Option<Arc<CaptureCell>>,
    seen: u64,
    limit: Option<u64>,
    // None for bodies that are empty from the start, which need no accounting.
    stats: Option<Arc<RequestBodyStats>>,
    // The longest silence allowed mid-body, and its timer (armed lazily, only once the body
    // has to wait; most bodies arrive with their head and never arm it).
    read_timeout: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
    /// A frame read ahead by [`RequestBody::peek`], returned first.
    peeked: Option<Frame<Bytes>>,
}

impl RequestBody {
    /// `read_timeout`: the body timeout, for HTTP/1 bodies. HTTP/2 streams have flow control,
    /// and long-lived gRPC client streams may rightly go quiet for minutes.
    pub fn new(
        inner: Incoming,
        limit: Option<u64>,
        read_timeout: Option<Duration>,
    ) -> (Self, Option<Arc<RequestBodyStats>>) {
        let stats = (!inner.is_end_stream()).then(Arc::default);
        let body = RequestBody {
            inner: Some(inner),
            replay: VecDeque::new(),
            capture: None,
            seen: 0,
            limit,
            stats: stats.clone(),
            read_timeout,
            timer: None,
            progressed: false,
            peeked: None,
        };
        (body, stats)
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("live", &self.inner.is_some())
            .field("replay_frames", &self.replay.len())
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// Reads whatever of the body has already arrived, without waiting and without arming the
    /// body timer. A body that is broken from its first bytes (a bad chunk size, an HTTP/2
    /// length mismatch, over the size limit) fails here, before any upstream connection is
    /// made; a frame that arrived is kept for the first `poll_frame`.
    pub fn peek(&mut self, cx: &mut Context<'_>) -> Result<(), RequestBodyError> {
        let Some(inner) = &mut self.inner else {
            return Ok(());
        };
        if self.peeked.is_some() || inner.is_end_stream() {
            return Ok(());
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = self.account(frame)?;
                self.peeked = Some(frame);
                Ok(())
            }
            Poll::Ready(Some(Err(e))) => Err(self.failed(e)),
            Poll::Ready(None) | Poll::Pending => Ok(()),
        }
    }

    /// Keeps what this body streams, up to `limit` bytes, so a retry can send it again.
    /// Returns the capture to replay from (see [`Capture::replay`]).
    pub fn capture(&mut self, limit: u64) -> Arc<CaptureCell> {
        let capture = Arc::new(CaptureCell {
            state: Mutex::new(Capture {
                limit,
                complete: self.is_end_stream(),
                ..Capture::default()
            }),
            changed: tokio::sync::Notify::new(),
        });
        self.capture = Some(capture.clone());
        capture
    }

    /// A body with nothing in it, for a retry of a request that had none.
    pub fn empty() -> Self {
        RequestBody::replay(VecDeque::new())
    }

    /// A body that sends `frames` again.
    fn replay(frames: VecDeque<Frame<Bytes>>) -> Self {
        RequestBody {
            inner: None,
            replay: frames,
            capture: None,
            seen: 0,
            limit: None,
            stats: None,
            read_timeout: None,
            timer: None,
            progressed: false,
            peeked: None,
        }
    }

    /// Notes a frame the body yields in its capture, and the end of the body.
    fn captured(&mut self, frame: &Frame<Bytes>) {
        let Some(capture) = &self.capture else {
            return;
        };
        let mut c = capture.lock();
        let was_overflowed = c.overflowed;
        if !c.overflowed {
            if let Some(data) = frame.data_ref() {
                c.bytes += data.len() as u64;
                if c.bytes > c.limit {
                    // Too long to keep: this request will not be retried after it was sent.
                    c.overflowed = true;
                    c.frames.clear();
                } else {
                    c.frames.push(Captured::Data(data.clone()));
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                c.frames.push(Captured::Trailers(trailers.clone()));
            }
        }
        if self.inner.as_ref().is_some_and(|i| i.is_end_stream()) {
            c.complete = true;
        }
        let settled = c.complete || c.overflowed != was_overflowed;
        drop(c);
        if settled {
            capture.changed.notify_waiters();
        }
    }

    fn captured_end(&self) {
        if let Some(capture) = &self.capture {
            capture.lock().complete = true;
            capture.changed.notify_waiters();
        }
    }

    /// Counts a frame's bytes against the limit.
    fn account(&mut self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, RequestBodyError> {
        self.progressed = true;
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if let Some(stats) = &self.stats {
                stats.bytes.store(self.seen, Ordering::Relaxed);
            }
            if let Some(limit) = self.limit
                && self.seen > limit
            {
                if let Some(stats) = &self.stats {
                    stats.over_limit.store(true, Ordering::Relaxed);
                }
                return Err(RequestBodyError::TooLarge(limit));
            }
        }
        Ok(frame)
    }

    fn failed(&self, e: hyper::Error) -> RequestBodyError {
        if let Some(stats) = &self.stats {
            stats.failed.store(true, Ordering::Relaxed);
        }
        e.into()
    }

    /// The body is waiting for the client: past the body timeout of silence, that is an error.
    fn wait(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let Some(timeout) = self.read_timeout else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        match &mut self.timer {
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(t) if self.progressed => t.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        let timer = self.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if let Some(stats) = &self.stats {
            stats.timed_out.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Err(RequestBodyError::TimedOut(timeout))))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = &mut this.inner else {
            return Poll::Ready(this.replay.pop_front().map(Ok));
        };
        if let Some(frame) = this.peeked.take() {
            this.captured(&frame);
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = this.account(frame);
                if let Ok(f) = &frame {
                    this.captured(f);
                }
                Poll::Ready(Some(frame))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(this.failed(e)))),
            Poll::Ready(None) => {
                this.captured_end();
                Poll::Ready(None)
            }
            Poll::Pending => this.wait(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Some(inner) => self.peeked.is_none() && inner.is_end_stream(),
            None => self.replay.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Some(inner) = &self.inner else {
            let len: u64 = self
                .replay
                .iter()
                .filter_map(Frame::data_ref)
                .map(|d| d.len() as u64)
                .sum();
            return SizeHint::with_exact(len);
        };
        let peeked = self
            .peeked
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let inner = inner.size_hint();
        // Upper first: set_lower asserts it stays at or below the upper bound.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + peeked);
        }
        hint.set_lower(inner.lower() + peeked);
        hint
    }
}

/// A live body dropped before its end (the upstream answered, or the connection failed, while
/// the client was still sending) leaves the rest of itself in its capture, so that a retry can
/// finish reading it (see [`CaptureCell::replay`]).
impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        if self.inner.is_none() {
            return;
        }
        let mut c = capture.lock();
        if c.complete || c.overflowed {
            return;
        }
        // The rest keeps no capture of its own: a capture holding a body holding the capture
        // would never be freed. Whoever takes it re-attaches one.
        c.rest = Some(RequestBody {
            inner: self.inner.take(),
            replay: VecDeque::new(),
            capture: None,
            seen: self.seen,
            limit: self.limit,
            stats: self.stats.clone(),
            read_timeout: self.read_timeout,
            timer: None,
            progressed: false,
            peeked: self.peeked.take(),
        });
        drop(c);
        capture.changed.notify_waiters();
    }
}

/// A capture, shared by the body that streams and the exchange that may replay it.
#[derive(Debug)]
pub struct CaptureCell {
    state: Mutex<Capture>,
    /// Woken when the capture completes, overflows, or has its rest handed back.
    changed: tokio::sync::Notify,
}

impl CaptureCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Capture> {
        // A few assignments per frame: a panic elsewhere cannot leave it half-made.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body again, if all of it went by and was kept; `None` if it cannot be (yet).
    pub fn replay_now(&self) -> Option<RequestBody> {
        self.lock().replay()
    }

    /// Whether a replay may still be had: the body has not gone past the buffer limit.
    pub fn replayable(&self) -> bool {
        !self.lock().overflowed
    }

    /// The body again, once the whole of it is known. An upstream may answer (or fail) before
    /// the client has finished sending, or before the proxy has read what the client sent;
    /// then this waits for the attempt to finish streaming it, or reads the rest itself once
    /// the attempt drops it (with the body's own limit and timeout). `None` when the body goes
    /// past the buffer limit or fails. The caller bounds the wait with its deadline.
    pub async fn replay(self: &Arc<Self>) -> Option<RequestBody> {
        let mut rest = loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut c = self.lock();
                if c.overflowed {
                    return None;
                }
                if c.complete {
                    return c.replay();
                }
                if let Some(rest) = c.rest.take() {
                    break rest;
                }
            }
            notified.await;
        };
        rest.capture = Some(self.clone());
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut rest).poll_frame(cx)).await
        {
            if frame.is_err() || !self.replayable() {
                return None;
            }
        }
        drop(rest);
        self.replay_now()
    }
}

/// What a live request body streamed so far, kept so a retry can send it again.
#[derive(Debug, Default)]
pub struct Capture {
    frames: Vec<Captured>,
    bytes: u64,
    limit: u64,
    /// The body went past `limit`: nothing is kept, and it cannot be replayed.
    overflowed: bool,
    /// The whole body went by (or there was none).
    complete: bool,
    /// The unread rest of a body whose attempt dropped it early.
    rest: Option<RequestBody>,
}

#[derive(Debug, Clone)]
enum Captured {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl Capture {
    /// A body that sends again everything the original sent, if all of it was kept.
    fn replay(&self) -> Option<RequestBody> {
        if !self.complete || self.overflowed {
            return None;
        }
        let frames = self
            .frames
            .iter()
            .map(|f| match f {
                Captured::Data(d) => Frame::data(d.clone()),
                Captured::Trailers(t) => Frame::trailers(t.clone()),
            })
            .collect();
        Some(RequestBody::replay(frames))
    }
}

/// A response body: the upstream's, or one the proxy made.
pub enum ProxyBody {
    Upstream(PooledBody),
    /// The upstream's, for a gRPC call with a deadline (boxed: rare, and the timer is large).
    Deadline(Pin<Box<DeadlineBody>>),
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// The `x-remora-error` reason when the proxy cut this body short itself.
    pub fn late_error(&self) -> Option<&'static str> {
        match self {
            ProxyBody::Deadline(b) if b.expired() => Some(grpc::DEADLINE_REASON),
            _ => None,
        }
    }
}

/// No body at all: the end of the stream comes with the head.
impl Default for ProxyBody {
    fn default() -> Self {
        ProxyBody::Local(None)
    }
}

impl From<Bytes> for ProxyBody {
    fn from(b: Bytes) -> Self {
        ProxyBody::Local(Some(b))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ProxyBody::Deadline(b) => b.as_mut().poll_frame(cx),
            ProxyBody::Local(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream(b) => b.is_end_stream(),
            ProxyBody::Deadline(b) => b.is_end_stream(),
            ProxyBody::Local(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream(b) => b.size_hint(),
            ProxyBody::Deadline(b) => b.size_hint(),
            ProxyBody::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Local(None) => SizeHint::with_exact(0),
        }
    }
}

/// The response body as sent downstream: counts bytes and reports the exchange (metrics and the
/// access log) when the last byte is out, or when the body is dropped early.
pub struct ObservedBody {
    inner: ProxyBody,
    sent: u64,
    completion: Option<Completion>,
}

impl ObservedBody {
    pub fn new(inner: ProxyBody, completion: Completion) -> Self {
        ObservedBody {
            inner,
            sent: 0,
            completion: Some(completion),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut c) = self.completion.take() {
            if let Some(reason) = self.inner.late_error() {
                c.record_error(reason);
            }
            c.finish(self.sent, complete);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.sent += d.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before the end (client went away) or with an empty body that was never
        // polled: report it now. `complete` is true only if nothing was left to send.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}
