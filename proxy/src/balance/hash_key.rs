//! The hash a request is placed by under `ring_hash` and `maglev`, from the cluster's
//! `hash_on` list.
//!
//! The parts a request has are hashed together in order, each tagged with its position in the
//! list so that different parts with equal values never collide; a request with none of them
//! has no hash and gets a random endpoint. A `cookie` part with a `ttl` is never missing: when
//! the request lacks the cookie, a random value is minted, hashed as if the client had sent
//! it, and returned as a `Set-Cookie` for the response, so the client sticks from its first
//! request on. The hash is the stable one of [`super::stable_hash`]: every sidecar must place a
//! request alike.

use std::net::IpAddr;
use std::time::Duration;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue, Uri};
use rand::Rng;
use remora_config::model::{HashKey, LbPolicy};

use super::stable_hash::StableHasher;

/// Random bytes in a minted cookie value: 128 bits, so two clients never share one.
const MINTED_BYTES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHash {
    /// `None` when the request has none of the parts: pick a random endpoint.
    pub hash: Option<u64>,
    /// `Set-Cookie` values to add to the response, one per cookie minted (usually none).
    pub set_cookie: Vec<HeaderValue>,
}

/// The `hash_on` list of a hashing policy; empty for the others.
pub fn hash_keys(policy: &LbPolicy) -> &[HashKey] {
    match policy {
        LbPolicy::RingHash { hash_on, .. } | LbPolicy::Maglev { hash_on, .. } => hash_on,
        LbPolicy::RoundRobin | LbPolicy::LeastRequest { .. } => &[],
    }
}

/// The hash of the request described by `headers`, `uri` and the connection's peer address
/// `client_ip`. `rng` is drawn only to mint cookies.
pub fn request_hash(
    keys: &[HashKey],
    headers: &HeaderMap,
    uri: &Uri,
    client_ip: IpAddr,
    rng: &mut impl Rng,
) -> RequestHash {
    let mut hasher = StableHasher::new();
    let mut present = false;
    let mut set_cookie = Vec::new();
    for (position, key) in keys.iter().enumerate() {
        // Tagged with the position and the number of values, so the encoding of all the
        // parts is unambiguous.
        let mut part = |count: usize, values: &mut dyn Iterator<Item = &[u8]>| {
            hasher.write_u64(position as u64);
            hasher.write_u64(count as u64);
            for v in values {
                hasher.write_field(v);
            }
            present = true;
        };
        match key {
            HashKey::Header(name) => {
                // Every value of a repeated header, in order: the client's whole identity.
                let values = headers.get_all(name);
                let count = values.iter().count();
                if count > 0 {
                    part(count, &mut values.iter().map(HeaderValue::as_bytes));
                }
            }
            HashKey::Cookie { name, ttl, path } => match (cookie(headers, name), ttl) {
                (Some(value), _) => part(1, &mut std::iter::once(value)),
                (None, Some(ttl)) => {
                    let value = mint(rng);
                    part(1, &mut std::iter::once(value.as_bytes()));
                    // Fails only if validation let through a name or path a header cannot
                    // carry: the request is still placed, the client just does not stick.
                    if let Some(header) = set_cookie_value(name, &value, *ttl, path.as_deref()) {
                        set_cookie.push(header);
                    }
                }
                (None, None) => {}
            },
            HashKey::SourceIp => match client_ip.to_canonical() {
                IpAddr::V4(ip) => part(1, &mut std::iter::once(&ip.octets()[..])),
                IpAddr::V6(ip) => part(1, &mut std::iter::once(&ip.octets()[..])),
            },
            HashKey::Path => part(1, &mut std::iter::once(uri.path().as_bytes())),
            HashKey::QueryParameter(name) => {
                if let Some(value) = query_parameter(uri, name) {
                    part(1, &mut std::iter::once(value.as_bytes()));
                }
            }
        }
    }
    RequestHash {
        hash: present.then(|| hasher.finish()),
        set_cookie,
    }
}

/// The value of the first cookie called `name` in any of the request's `Cookie` lines (RFC
/// 6265 section 5.4 lets a client split them over several, HTTP/2 clients usually do). Pairs
/// are `;`-separated with optional whitespace around them and around `=`; a pair without `=`
/// is skipped; names match exactly (they are case-sensitive); a quoted value keeps its quotes,
/// as browsers keep them.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
        })
}

fn trim(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// The raw (not percent-decoded) value of the first query parameter called `name`; a
/// parameter without `=` has the empty value. Names compare raw too: `a%20b` is not `a b`.
pub fn query_parameter<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v)
    })
}

/// A fresh cookie value: random bytes as lowercase hex.
fn mint(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; MINTED_BYTES];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name=value; Path=path; Max-Age=seconds; HttpOnly`. Max-Age is rounded up and at least 1:
/// `Max-Age=0` would tell the browser to delete the cookie at once.
fn set_cookie_value(
    name: &str,
    value: &str,
    ttl: Duration,
    path: Option<&str>,
) -> Option<HeaderValue> {
    let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    let path = path.map(|p| format!("; Path={p}")).unwrap_or_default();
    HeaderValue::try_from(format!("{name}={value}{path}; Max-Age={seconds}; HttpOnly")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(9)
    }

    fn ip() -> IpAddr {
        "10.1.2.3".parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn hash(keys: &[HashKey], h: &HeaderMap, uri: &str) -> Option<u64> {
        let r = request_hash(keys, h, &uri.parse().unwrap(), ip(), &mut rng());
        assert!(r.set_cookie.is_empty());
        r.hash
    }

    fn header(name: &str) -> HashKey {
        HashKey::Header(HeaderName::from_bytes(name.as_bytes()).unwrap())
    }

    fn session(ttl: Option<Duration>, path: Option<&str>) -> HashKey {
        HashKey::Cookie {
            name: "session".into(),
            ttl,
            path: path.map(String::from),
        }
    }

    #[test]
    fn header_values_are_hashed() {
        let keys = [header("x-user")];
        let a = hash(&keys, &headers(&[("x-user", "alice")]), "/");
        let a2 = hash(&keys, &headers(&[("X-User", "alice")]), "/other");
        let b = hash(&keys, &headers(&[("x-user", "bob")]), "/");
        assert!(a.is_some());
        assert_eq!(a, a2, "name case-insensitive, path not part of the key");
        assert_ne!(a, b);
        // Every value counts.
        let two = hash(
            &keys,
            &headers(&[("x-user", "alice"), ("x-user", "bob")]),
            "/",
        );
        assert_ne!(two, a);
    }

    #[test]
    fn path_without_the_query() {
        let keys = [HashKey::Path];
        let h = HeaderMap::new();
        assert_eq!(hash(&keys, &h, "/a/b?x=1"), hash(&keys, &h, "/a/b?x=2"));
        assert_ne!(hash(&keys, &h, "/a/b"), hash(&keys, &h, "/a/c"));
        assert!(
            hash(&keys, &h, "http://example.com").is_some(),
            "an empty path is '/'"
        );
    }

    #[test]
    fn query_parameters() {
        let keys = [HashKey::QueryParameter("user".into())];
        let h = HeaderMap::new();
        let a = hash(&keys, &h, "/?x=1&user=alice&user=bob");
        assert_eq!(a, hash(&keys, &h, "/p?user=alice"));
        assert_ne!(a, hash(&keys, &h, "/?user=bob"));
        assert_eq!(hash(&keys, &h, "/?username=alice"), None);
        assert_eq!(hash(&keys, &h, "/"), None);
        assert!(
            hash(&keys, &h, "/?user").is_some(),
            "present without a value"
        );
        assert_eq!(
            query_parameter(&"/?a=1&user&b".parse().unwrap(), "user"),
            Some("")
        );
    }

    #[test]
    fn source_ip_is_the_peer() {
        let keys = [HashKey::SourceIp];
        let h = HeaderMap::new();
        let uri: Uri = "/".parse().unwrap();
        let at = |ip: &str| request_hash(&keys, &h, &uri, ip.parse().unwrap(), &mut rng()).hash;
        assert!(at("10.0.0.1").is_some());
        assert_ne!(at("10.0.0.1"), at("10.0.0.2"));
        // A v4 client seen through a dual-stack socket is the same client.
        assert_eq!(at("10.0.0.1"), at("::ffff:10.0.0.1"));
        // Forwarded-for headers are not the source.
        let forwarded = headers(&[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(
            request_hash(&keys, &forwarded, &uri, ip(), &mut rng()).hash,
            request_hash(&keys, &h, &uri, ip(), &mut rng()).hash
        );
    }

    #[test]
    fn cookies_across_several_headers_with_whitespace() {
        let h = headers(&[
            ("cookie", "theme=dark;lang=en"),
            ("cookie", " a=1 ;  session = abc123 ; session=later"),
        ]);
        assert_eq!(cookie(&h, "session"), Some(&b"abc123"[..]));
        assert_eq!(cookie(&h, "lang"), Some(&b"en"[..]));
        assert_eq!(cookie(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie(&h, "Session"), None, "names are case-sensitive");
        assert_eq!(cookie(&h, "sess"), None);
        let odd = headers(&[("cookie", "flag; empty=; q=\"x y\"")]);
        assert_eq!(cookie(&odd, "flag"), None);
        assert_eq!(cookie(&odd, "empty"), Some(&b""[..]));
        assert_eq!(cookie(&odd, "q"), Some(&b"\"x y\""[..]));

        let keys = [session(None, None)];
        let a = hash(&keys, &h, "/");
        assert_eq!(
            a,
            hash(&keys, &headers(&[("cookie", "session=abc123")]), "/x")
        );
        assert_ne!(
            a,
            hash(&keys, &headers(&[("cookie", "session=other")]), "/")
        );
        // Without a ttl a missing cookie is just missing.
        assert_eq!(
            hash(&keys, &headers(&[("cookie", "theme=dark")]), "/"),
            None
        );
    }

    #[test]
    fn a_missing_cookie_with_a_ttl_is_minted() {
        let keys = [session(Some(Duration::from_secs(3600)), Some("/app"))];
        let uri: Uri = "/".parse().unwrap();
        let r = request_hash(&keys, &HeaderMap::new(), &uri, ip(), &mut rng());
        assert_eq!(r.set_cookie.len(), 1);
        let set = r.set_cookie[0].to_str().unwrap();
        let re = regex::Regex::new(r"^session=([0-9a-f]{32}); Path=/app; Max-Age=3600; HttpOnly$")
            .unwrap();
        let value = &re.captures(set).unwrap_or_else(|| panic!("{set}"))[1];
        // The client's next request, carrying the cookie, hashes the same.
        let back = headers(&[("cookie", &format!("session={value}"))]);
        let again = request_hash(&keys, &back, &uri, ip(), &mut rng());
        assert_eq!(again.hash, r.hash);
        assert!(again.set_cookie.is_empty());
        // Another client gets another value.
        let mut other_rng = SmallRng::seed_from_u64(10);
        let other = request_hash(&keys, &HeaderMap::new(), &uri, ip(), &mut other_rng);
        assert_ne!(other.set_cookie, r.set_cookie);
        assert_ne!(other.hash, r.hash);
    }

    #[test]
    fn minted_cookie_without_path_and_with_a_short_ttl() {
        let keys = [session(Some(Duration::from_millis(1500)), None)];
        let r = request_hash(
            &keys,
            &HeaderMap::new(),
            &"/".parse().unwrap(),
            ip(),
            &mut rng(),
        );
        let set = r.set_cookie[0].to_str().unwrap();
        assert!(set.ends_with("; Max-Age=2; HttpOnly"), "{set}");
        assert!(!set.contains("Path"), "{set}");
        let v = set_cookie_value("s", "v", Duration::from_millis(10), None).unwrap();
        assert_eq!(v, "s=v; Max-Age=1; HttpOnly");
    }

    #[test]
    fn parts_are_combined_in_order_and_tagged() {
        let keys = [header("x-a"), header("x-b")];
        let ab = hash(&keys, &headers(&[("x-a", "1"), ("x-b", "2")]), "/");
        let a = hash(&keys, &headers(&[("x-a", "1")]), "/");
        let b_same_value = hash(&keys, &headers(&[("x-b", "1")]), "/");
        assert!(ab.is_some() && a.is_some());
        assert_ne!(ab, a);
        assert_ne!(a, b_same_value, "equal values in different parts differ");
        let swapped = [header("x-b"), header("x-a")];
        assert_ne!(
            hash(&swapped, &headers(&[("x-a", "1"), ("x-b", "2")]), "/"),
            ab
        );
    }

    #[test]
    fn none_present_is_none() {
        let keys = [
            header("x-user"),
            session(None, None),
            HashKey::QueryParameter("u".into()),
        ];
        assert_eq!(hash(&keys, &headers(&[("x-other", "1")]), "/?v=1"), None);
        assert_eq!(hash(&[], &HeaderMap::new(), "/"), None);
    }

    #[test]
    fn stable_across_processes() {
        // Pinned: the same request must hash alike in every sidecar and version.
        let keys = [header("x-user"), HashKey::Path];
        let got = hash(&keys, &headers(&[("x-user", "alice")]), "/cart");
        assert_eq!(got, Some(PINNED));
    }

    const PINNED: u64 = 0x5738632f89ca4824;

    #[test]
    fn keys_of_a_policy() {
        let keys = vec![HashKey::Path];
        let ring = LbPolicy::RingHash {
            minimum_ring_size: 1024,
            hash_on: keys.clone(),
        };
        assert_eq!(hash_keys(&ring), &keys[..]);
        assert!(hash_keys(&LbPolicy::RoundRobin).is_empty());
    }
}
