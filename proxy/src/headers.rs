//! Header rules applied to every proxied message: hop-by-hop removal (RFC 9110 section 7.6.1),
//! `X-Forwarded-*`, `x-request-id`, and a route's configured rewrites.
//!
//! These run on every request and response, so each costs as few header-map hash lookups as it
//! can: one pass over the names decides whether any hop-by-hop field is there at all (the common
//! message carries none), and the entry API finds-or-inserts with a single hash.

use http::header::{CONNECTION, Entry, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderValue};
use rand::Rng;
use remora_config::model::HeaderRewrite;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The caller's SPIFFE ID, as its mTLS certificate proved it. Only the sidecar sets it: a copy
/// from the client is always removed first.
pub const X_REMORA_PEER_IDENTITY: HeaderName = HeaderName::from_static("x-remora-peer-identity");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the fields RFC 9110 section 7.6.1 says a proxy must not forward: those named by
/// `Connection`, `Connection` itself, and Proxy-Connection, Keep-Alive, TE, Transfer-Encoding
/// and Upgrade. `TE: trailers` is kept, as Envoy does: gRPC needs it end to end, and it only
/// says the client accepts trailers.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Comparing a name against standard headers is an integer compare; a pass over a typical
    // dozen names is cheaper than six hash lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        // Nearly every Connection header says only `keep-alive` or `close`: neither names a
        // field that survives below, so only other tokens are collected (and allocated).
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in [PROXY_CONNECTION, KEEP_ALIVE, TRANSFER_ENCODING, UPGRADE] {
        if headers.contains_key(&name) {
            headers.remove(name);
        }
    }
    if let Some(te) = headers.get(TE) {
        let only_trailers = headers.get_all(TE).iter().count() == 1
            && te
                .to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("trailers"));
        if !only_trailers {
            headers.remove(TE);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Appends the client's address to `X-Forwarded-For` and the scheme to `X-Forwarded-Proto`.
/// `client_ip` is rendered once per connection, not per request.
pub fn append_forwarded(headers: &mut HeaderMap, client_ip: &HeaderValue, proto: &HeaderValue) {
    append_list(headers, X_FORWARDED_FOR, client_ip);
    append_list(headers, X_FORWARDED_PROTO, proto);
}

pub const PROTO_HTTP: HeaderValue = HeaderValue::from_static("http");

/// Appends `item` to a comma-separated list header, merging repeated header lines into one.
/// When the header is absent (the common case) `item` is inserted as is: a reference-count bump,
/// no allocation.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(v) => {
            v.insert(item.clone());
        }
        Entry::Occupied(mut o) => {
            let mut out = Vec::with_capacity(64);
            for v in o.iter() {
                out.extend_from_slice(v.as_bytes());
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(item.as_bytes());
            // The parts were valid header values joined by ", ": still valid.
            o.insert(HeaderValue::from_bytes(&out).expect("joined header values"));
        }
    }
}

/// Returns the request's `x-request-id`, setting a new random (UUID v4 format) one if absent.
pub fn ensure_request_id(headers: &mut HeaderMap, rng: &mut impl Rng) -> HeaderValue {
    match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(o) => o.get().clone(),
        Entry::Vacant(v) => v.insert(new_request_id(rng)).clone(),
    }
}

fn new_request_id(rng: &mut impl Rng) -> HeaderValue {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[(byte >> 4) as usize];
        out[o + 1] = HEX[(byte & 0xf) as usize];
        o += 2;
    }
    HeaderValue::from_bytes(&out).expect("hex and dashes")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Applies a route's configured changes: remove, then set, then add.
pub fn rewrite(headers: &mut HeaderMap, rules: &HeaderRewrite) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &rules.add {
        headers.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn forwarded_headers_append() {
        let ip = HeaderValue::from_static("10.0.0.7");
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, &ip, &PROTO_HTTP);
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
        ]);
        append_forwarded(&mut h, &ip, &PROTO_HTTP);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https, http");
    }

    #[test]
    fn request_id_is_kept_or_made() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut h = map(&[("x-request-id", "abc")]);
        assert_eq!(ensure_request_id(&mut h, &mut rng), "abc");

        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h, &mut rng);
        let s = id.to_str().unwrap();
        assert_eq!(h["x-request-id"], id);
        assert_eq!(s.len(), 36);
        assert_eq!(s.as_bytes()[14], b'4');
        assert!(matches!(s.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
        let other = ensure_request_id(&mut HeaderMap::new(), &mut rng);
        assert_ne!(id, other);
    }

    #[test]
    fn rewrite_removes_then_sets_then_adds() {
        let rules = HeaderRewrite {
            remove: vec![HeaderName::from_static("x-debug")],
            set: vec![(
                HeaderName::from_static("x-env"),
                HeaderValue::from_static("prod"),
            )],
            add: vec![(
                HeaderName::from_static("x-via"),
                HeaderValue::from_static("remora"),
            )],
        };
        let mut h = map(&[("x-debug", "1"), ("x-env", "dev"), ("x-via", "lb")]);
        rewrite(&mut h, &rules);
        assert!(!h.contains_key("x-debug"));
        assert_eq!(h["x-env"], "prod");
        let via: Vec<_> = h.get_all("x-via").iter().collect();
        assert_eq!(via, ["lb", "remora"]);
    }
}
