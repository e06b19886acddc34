//! W3C Trace Context (`traceparent`) propagation.
//!
//! The proxy is a hop in the trace: a valid incoming `traceparent` keeps its trace id and flags
//! and gets a new span id (the proxy's child span); a missing or malformed one starts a new trace.
//! A new trace is marked sampled (`01`): OpenTelemetry's default sampler is parent-based, so
//! handing the app an unsampled parent would silently switch its tracing off, while `01` leaves
//! it doing what it did without a proxy in front. `tracestate` passes through untouched.

use http::header::Entry;
use http::{HeaderMap, HeaderValue};
use rand::Rng;

pub const TRACEPARENT: &str = "traceparent";

/// Replaces the request's `traceparent` with the proxy's child (or a new trace), with one lookup.
pub fn propagate(headers: &mut HeaderMap, rng: &mut impl Rng) {
    match headers.entry(TRACEPARENT) {
        Entry::Occupied(mut o) => {
            let next = next_traceparent(Some(o.get()), rng);
            o.insert(next);
        }
        Entry::Vacant(v) => {
            v.insert(next_traceparent(None, rng));
        }
    }
}

/// The `traceparent` to forward, given the one received (if any).
pub fn next_traceparent(incoming: Option<&HeaderValue>, rng: &mut impl Rng) -> HeaderValue {
    let span = nonzero(rng);
    // Built in place: this runs on every request, and a `format!` would allocate twice.
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    match incoming.and_then(|v| parse(v.as_bytes())) {
        Some(parent) => {
            out[3..35].copy_from_slice(parent.trace_id.as_bytes());
            out[53..55].copy_from_slice(parent.flags.as_bytes());
        }
        None => {
            hex_u64(rng.next_u64(), &mut out[3..19]);
            hex_u64(nonzero(rng), &mut out[19..35]);
        }
    }
    hex_u64(span, &mut out[36..52]);
    // Only lowercase hex and dashes: always a valid header value.
    HeaderValue::from_bytes(&out).expect("traceparent is ASCII")
}

/// Writes `v` as 16 lowercase hex digits.
pub fn hex_u64(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().take(16).enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

struct Parent<'a> {
    trace_id: &'a str,
    flags: &'a str,
}

/// `version-traceid-parentid-flags`. Versions other than 00 are read by their 00 prefix, as the
/// spec asks; version ff and all-zero ids are invalid.
fn parse(v: &[u8]) -> Option<Parent<'_>> {
    let s = std::str::from_utf8(v).ok()?;
    if s.len() < 55 || (s.len() > 55 && (s.starts_with("00") || s.as_bytes()[55] != b'-')) {
        return None;
    }
    let b = s.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace_id, parent_id, flags) = (&s[0..2], &s[3..35], &s[36..52], &s[53..55]);
    let hex = |x: &str| {
        x.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !(hex(version) && hex(trace_id) && hex(parent_id) && hex(flags)) || version == "ff" {
        return None;
    }
    if trace_id.bytes().all(|c| c == b'0') || parent_id.bytes().all(|c| c == b'0') {
        return None;
    }
    Some(Parent { trace_id, flags })
}

fn nonzero(rng: &mut impl Rng) -> u64 {
    loop {
        let n = rng.next_u64();
        if n != 0 {
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn next(v: Option<&str>) -> String {
        let mut rng = SmallRng::seed_from_u64(1);
        let v = v.map(|s| HeaderValue::from_str(s).unwrap());
        next_traceparent(v.as_ref(), &mut rng)
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_valid_parent_keeps_trace_and_flags_with_a_new_span() {
        let out = next(Some(VALID));
        assert_eq!(&out[..36], &VALID[..36]);
        assert_ne!(&out[36..52], &VALID[36..52]);
        assert_eq!(&out[52..], "-01");
        assert!(parse(out.as_bytes()).is_some());
    }

    #[test]
    fn missing_or_invalid_starts_a_sampled_trace() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
        ] {
            let out = next(bad);
            assert_eq!(out.len(), 55, "{bad:?}");
            assert!(out.ends_with("-01"));
            assert!(parse(out.as_bytes()).is_some());
            if let Some(b) = bad {
                assert_ne!(&out[3..35], &b[3.min(b.len())..35.min(b.len())]);
            }
        }
    }

    #[test]
    fn future_versions_are_read_by_their_prefix() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
        let out = next(Some(v));
        assert_eq!(&out[3..35], &v[3..35]);
    }
}
