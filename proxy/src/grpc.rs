//! gRPC over the proxy: recognising a call, its `grpc-timeout` deadline, and the status codes the
//! proxy answers with when it fails a call itself.
//!
//! A gRPC call is an HTTP/2 exchange whose request `content-type` starts with `application/grpc`.
//! Everything else about it (messages, metadata, trailers) streams through untouched. What the
//! proxy adds:
//! - the client's `grpc-timeout` is a deadline for the whole call: the response head must arrive
//!   before it (and before the route timeout), the upstream is told how much of it is left, and a
//!   response still streaming when it passes is ended with `grpc-status: 4` ([`DeadlineBody`]);
//! - a failure the proxy generates is a trailers-only response with a `grpc-status`
//!   ([`crate::error::ProxyError::to_grpc_response`]), since gRPC clients ignore HTTP statuses.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ERROR_HEADER;
use crate::upstream::pool::PooledBody;

pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub const CONTENT_TYPE_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// The reason recorded (`x-remora-error`, metrics, access log) when a call's own deadline passes.
pub const DEADLINE_REASON: &str = "deadline-exceeded";

/// The gRPC status codes the proxy produces (the full list is in gRPC's `doc/statuscodes.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
}

impl Code {
    /// The `grpc-status` value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Code::DeadlineExceeded => "4",
            Code::PermissionDenied => "7",
            Code::ResourceExhausted => "8",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
        })
    }
}

/// Whether a request is a gRPC call: its `content-type` is `application/grpc`, alone or with a
/// `+codec` or `;params` suffix (gRPC-Web's `application/grpc-web` too).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and a unit, `H`ours, `M`inutes, `S`econds,
/// `m`illiseconds, `u` microseconds or `n`anoseconds (`100m`, `5S`). `None` if malformed.
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The largest value `grpc-timeout` can carry per unit.
const MAX_TIMEOUT_VALUE: u128 = 99_999_999;

/// Formats a duration as a `grpc-timeout` value in the finest unit whose count fits in 8 digits.
/// The count is rounded down, so the upstream never believes it has more time than the proxy
/// gives it; past 99999999 hours it is capped.
pub fn format_timeout(d: Duration) -> HeaderValue {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = d.as_nanos();
    let (count, unit) = UNITS
        .iter()
        .map(|&(size, unit)| (nanos / size, unit))
        .find(|&(count, _)| count <= MAX_TIMEOUT_VALUE)
        .unwrap_or((MAX_TIMEOUT_VALUE, 'H'));
    HeaderValue::try_from(format!("{count}{unit}")).expect("digits and a letter")
}

/// A gRPC call's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    /// The `grpc-timeout` the client sent, for messages.
    pub timeout: Duration,
}

impl Deadline {
    /// The call's deadline from its `grpc-timeout`, counted from `start` (when the request head
    /// arrived). `None` without a valid header, or for a timeout too far away to represent.
    pub fn from_request(headers: &HeaderMap, start: Instant) -> Option<Deadline> {
        let timeout = parse_timeout(headers.get(GRPC_TIMEOUT)?.as_bytes())?;
        Some(Deadline {
            at: start.checked_add(timeout)?,
            timeout,
        })
    }

    /// The time left at `now`; `None` once there is none.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let left = self.at.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

/// Percent-encodes a `grpc-message` value as the gRPC HTTP/2 spec asks: bytes outside printable
/// ASCII, and `%` itself, become `%XX`.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::try_from(out).expect("printable ASCII")
}

pin_project_lite::pin_project! {
    /// An upstream response body of a gRPC call with a deadline. If the deadline passes before
    /// the body ends, the upstream stream is dropped (HTTP/2: reset) and the response ends with
    /// trailers `grpc-status: 4` instead.
    pub struct DeadlineBody<B = PooledBody> {
        // None once the body has ended, either way.
        inner: Option<B>,
        #[pin]
        sleep: Sleep,
        // What the client asked for, for the message.
        timeout: Duration,
        expired: bool,
    }
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, deadline: Deadline) -> Self {
        DeadlineBody {
            inner: Some(inner),
            sleep: tokio::time::sleep_until(deadline.at),
            timeout: deadline.timeout,
            expired: false,
        }
    }

    /// Whether the deadline cut the response short.
    pub fn expired(&self) -> bool {
        self.expired
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for DeadlineBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.sleep.poll(cx).is_ready() {
            *this.inner = None;
            *this.expired = true;
            tracing::debug!(timeout = ?this.timeout, "gRPC deadline passed mid-response");
            return Poll::Ready(Some(Ok(Frame::trailers(deadline_trailers(*this.timeout)))));
        }
        let res = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = res {
            *this.inner = None;
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(B::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            // The trailers may come early, so only the upper bound of the inner body holds.
            Some(b) => {
                let mut hint = SizeHint::new();
                if let Some(upper) = b.size_hint().upper() {
                    hint.set_upper(upper);
                }
                hint
            }
            None => SizeHint::with_exact(0),
        }
    }
}

fn deadline_trailers(timeout: Duration) -> HeaderMap {
    let mut t = HeaderMap::with_capacity(3);
    t.insert(GRPC_STATUS, Code::DeadlineExceeded.header_value());
    t.insert(
        GRPC_MESSAGE,
        encode_message(&format!(
            "remora: {DEADLINE_REASON}: the call's grpc-timeout of {timeout:?} passed"
        )),
    );
    t.insert(ERROR_HEADER, HeaderValue::from_static(DEADLINE_REASON));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit() {
        let cases = [
            ("100m", Duration::from_millis(100)),
            ("5S", Duration::from_secs(5)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("250u", Duration::from_micros(250)),
            ("7n", Duration::from_nanos(7)),
            ("0m", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
            ("00000001S", Duration::from_secs(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timeout(text.as_bytes()), Some(want), "{text}");
        }
    }

    #[test]
    fn malformed_timeouts_are_refused() {
        for text in [
            "",
            "m",
            "100",
            "100x",
            "123456789m",
            "-1S",
            "1.5S",
            " 1S",
            "1S ",
            "1s",
            "S1",
        ] {
            assert_eq!(parse_timeout(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn timeouts_format_in_the_finest_unit_that_fits_rounding_down() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(7), "7n"),
            (Duration::from_millis(99), "99000000n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_nanos(123_456_789), "123456u"),
            (Duration::from_secs(5), "5000000u"),
            (Duration::from_secs(500), "500000m"),
            // 1e8 ms is one digit too many: seconds.
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(3600 * 200_000_000), "99999999H"),
        ];
        for (d, want) in cases {
            assert_eq!(format_timeout(d), want, "{d:?}");
        }
    }

    #[test]
    fn format_and_parse_round_trip_within_the_rounding() {
        for nanos in [
            1u64,
            999,
            1_000_001,
            99_999_999,
            100_000_001,
            5_000_000_000_123,
        ] {
            let d = Duration::from_nanos(nanos);
            let back = parse_timeout(format_timeout(d).as_bytes()).unwrap();
            assert!(
                back <= d && d - back < d / 1_000_000 + Duration::from_nanos(1),
                "{d:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn grpc_calls_are_recognised_by_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
            ("text/plain", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("plain text: ok"), "plain text: ok");
        assert_eq!(encode_message("100% sure"), "100%25 sure");
        assert_eq!(encode_message("line\nbreak é"), "line%0Abreak %C3%A9");
    }

    /// A body that sends one data frame, then nothing until it is dropped.
    struct Stalls {
        sent: bool,
        dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if std::mem::replace(&mut self.sent, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"msg")))))
            }
        }
    }

    impl Drop for Stalls {
        fn drop(&mut self) {
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_streaming_past_the_deadline_ends_with_deadline_exceeded() {
        use http_body_util::BodyExt;
        let dropped = std::sync::Arc::default();
        let inner = Stalls {
            sent: false,
            dropped: std::sync::Arc::clone(&dropped),
        };
        let start = Instant::now();
        let deadline = Deadline {
            at: start + Duration::from_millis(300),
            timeout: Duration::from_millis(300),
        };
        let mut body = Box::pin(DeadlineBody::new(inner, deadline));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap(), "msg");
        assert!(!body.expired());

        let last = body.frame().await.unwrap().unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        let trailers = last.trailers_ref().expect("trailers");
        assert_eq!(trailers[GRPC_STATUS], "4");
        assert_eq!(trailers[ERROR_HEADER], DEADLINE_REASON);
        assert!(body.expired());
        assert!(body.is_end_stream());
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "upstream kept"
        );
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_the_request_head() {
        let start = Instant::now();
        let mut h = HeaderMap::new();
        assert_eq!(Deadline::from_request(&h, start), None);
        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("soon"));
        assert_eq!(Deadline::from_request(&h, start), None);

        h.insert(GRPC_TIMEOUT, HeaderValue::from_static("250m"));
        let d = Deadline::from_request(&h, start).unwrap();
        assert_eq!(d.at, start + Duration::from_millis(250));
        assert_eq!(d.timeout, Duration::from_millis(250));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            d.remaining(Instant::now()),
            Some(Duration::from_millis(150))
        );
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(d.remaining(Instant::now()), None);
    }
}
