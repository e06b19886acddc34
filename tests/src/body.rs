//! Bodies for tests that move a lot of data: generated chunk by chunk, checked chunk by chunk,
//! never held whole in memory.
//!
//! The data is a fixed pattern: byte `i` of a body is `i % 251`. 251 is prime, so a chunk that was
//! lost, repeated or reordered anywhere in the stream shifts the pattern and is caught by
//! [`PatternCheck`], which compares with `memcmp`-speed slice equality.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Period of the pattern.
const PERIOD: usize = 251;

/// Size of each generated chunk: a whole number of periods, so every chunk is the same bytes and
/// one shared buffer serves them all.
pub const CHUNK: usize = PERIOD * 256;

/// One chunk of the pattern, plus one extra period so that any offset's expected bytes are a
/// single slice.
fn reference() -> &'static [u8] {
    static REF: OnceLock<Vec<u8>> = OnceLock::new();
    REF.get_or_init(|| (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect())
}

/// The first `len` bytes of the pattern, for small bodies.
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % PERIOD) as u8).collect()
}

/// A body of `len` pattern bytes, produced in frames of [`CHUNK`] bytes (or the size given to
/// [`PatternBody::with_chunk`]) that are all slices of one static buffer: nothing is allocated per
/// frame. Its size is known (`Content-Length` on HTTP/1.1) unless built with
/// [`PatternBody::chunked`].
#[derive(Debug)]
pub struct PatternBody {
    sent: u64,
    remaining: u64,
    chunk: usize,
    /// Whether `size_hint` reports the exact length; without it hyper sends HTTP/1.1 chunked.
    sized: bool,
}

impl PatternBody {
    pub fn new(len: u64) -> PatternBody {
        PatternBody {
            sent: 0,
            remaining: len,
            chunk: CHUNK,
            sized: true,
        }
    }

    /// The same bytes, with no length announced up front (HTTP/1.1 `Transfer-Encoding: chunked`).
    pub fn chunked(len: u64) -> PatternBody {
        PatternBody {
            sized: false,
            ..PatternBody::new(len)
        }
    }

    /// Frames of `size` bytes (at most [`CHUNK`]); the last one may be shorter.
    pub fn with_chunk(mut self, size: usize) -> PatternBody {
        self.chunk = size.clamp(1, CHUNK);
        self
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk as u64) as usize;
        let start = (self.sent % PERIOD as u64) as usize;
        self.sent += n as u64;
        self.remaining -= n as u64;
        let data = Bytes::from_static(reference()).slice(start..start + n);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// A body whose frames a test (or a handler) sends as it goes: slow streams, bodies that stop
/// half-way, bodies shaped by the test. It ends when every sender is dropped; a frame sent as
/// `Err` fails the body there.
#[derive(Debug)]
pub struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
}

/// The sending side of a [`ChannelBody`].
pub type BodySender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

impl ChannelBody {
    /// A body and its sender; `buffer` frames may wait in between.
    pub fn new(buffer: usize) -> (BodySender, ChannelBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(buffer.max(1));
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx)
    }
}

/// Checks, piece by piece, that a stream of bytes is the pattern from offset 0.
#[derive(Debug, Default, Clone)]
pub struct PatternCheck {
    len: u64,
    /// Offset of the first byte that differed from the pattern, if any.
    first_mismatch: Option<u64>,
}

impl PatternCheck {
    pub fn new() -> PatternCheck {
        PatternCheck::default()
    }

    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        let reference = reference();
        while !data.is_empty() {
            let start = (self.len % PERIOD as u64) as usize;
            let n = data.len().min(CHUNK);
            if self.first_mismatch.is_none() && data[..n] != reference[start..start + n] {
                let at = (0..n)
                    .find(|&i| data[i] != reference[start + i])
                    .unwrap_or(0);
                self.first_mismatch = Some(self.len + at as u64);
            }
            self.len += n as u64;
            data = &data[n..];
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether every byte fed so far was the pattern.
    pub fn ok(&self) -> bool {
        self.first_mismatch.is_none()
    }

    pub fn first_mismatch(&self) -> Option<u64> {
        self.first_mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn the_pattern_body_is_checked_as_the_pattern() {
        let mut body = PatternBody::new(3 * CHUNK as u64 + 17);
        let mut check = PatternCheck::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            // Split unevenly, as a network would.
            let data = frame.into_data().unwrap();
            let (a, b) = data.split_at(data.len() / 3);
            check.feed(a);
            check.feed(b);
        }
        assert_eq!(check.len(), 3 * CHUNK as u64 + 17);
        assert!(check.ok());
        assert!(body.is_end_stream());
    }

    #[test]
    fn a_lost_byte_is_found() {
        let mut data = pattern_bytes(10_000);
        data.remove(5000);
        let mut check = PatternCheck::new();
        check.feed(&data);
        assert_eq!(check.first_mismatch(), Some(5000));
    }

    #[test]
    fn small_chunks_keep_the_pattern() {
        let body = PatternBody::chunked(1000).with_chunk(97);
        assert_eq!(body.size_hint().exact(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt.block_on(body.collect()).unwrap().to_bytes();
        assert_eq!(&bytes[..], &pattern_bytes(1000)[..]);
    }
}
