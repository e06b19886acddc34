//! `load_balancer:`: the policy, the settings that belong to it, and the keys consistent
//! hashing uses.

use super::{Cx, elements, headers, join, only_one, pos_of, value};
use crate::defaults::{self, ranges};
use crate::model::{self, HashKey};
use crate::raw::{self, Item, LbPolicy, Pos, Toggle};

pub(super) fn load_balancer(
    cx: &Cx,
    field: &raw::Field<raw::LoadBalancer>,
    path: &str,
) -> Option<model::LoadBalancer> {
    let Some(item) = field else {
        return Some(model::LoadBalancer::default());
    };
    let raw = item.get()?;
    let panic_threshold = cx.percent(
        &raw.panic_threshold,
        &join(path, "panic_threshold"),
        defaults::PANIC_THRESHOLD,
    );
    let name = match &raw.policy {
        None => Some(LbPolicy::from(&defaults::LB_POLICY)),
        Some(item) => item.get().copied(),
    };
    let policy = match name {
        Some(name) => {
            misplaced(cx, raw, name, path);
            policy(cx, raw, name, item.pos, path)
        }
        None => {
            // The policy is invalid and reported; which settings belong is unknown, but
            // their values can still be checked.
            choice_count(cx, raw, path);
            peak_ewma(cx, raw, path);
            minimum_ring_size(cx, raw, path);
            table_size(cx, raw, path);
            if let Some(list) = &raw.hash_on {
                hash_keys(cx, list, &join(path, "hash_on"));
            }
            None
        }
    };
    Some(model::LoadBalancer {
        policy: policy?,
        panic_threshold,
    })
}

fn policy(
    cx: &Cx,
    raw: &raw::LoadBalancer,
    name: LbPolicy,
    pos: Pos,
    path: &str,
) -> Option<model::LbPolicy> {
    match name {
        LbPolicy::RoundRobin => Some(model::LbPolicy::RoundRobin),
        LbPolicy::LeastRequest => Some(model::LbPolicy::LeastRequest {
            choice_count: choice_count(cx, raw, path),
            peak_ewma: peak_ewma(cx, raw, path)?,
        }),
        LbPolicy::RingHash => {
            let minimum_ring_size = minimum_ring_size(cx, raw, path);
            Some(model::LbPolicy::RingHash {
                minimum_ring_size,
                hash_on: hash_on(cx, raw, name, pos, path)?,
            })
        }
        LbPolicy::Maglev => {
            let table_size = table_size(cx, raw, path);
            Some(model::LbPolicy::Maglev {
                table_size,
                hash_on: hash_on(cx, raw, name, pos, path)?,
            })
        }
    }
}

/// Reports each setting that belongs to another policy than `policy`: most likely the policy
/// was meant to be that other one.
fn misplaced(cx: &Cx, raw: &raw::LoadBalancer, policy: LbPolicy, path: &str) {
    use LbPolicy::{LeastRequest, Maglev, RingHash};
    let settings: [(&str, Option<Pos>, &[LbPolicy]); 5] = [
        ("choice_count", pos_of(&raw.choice_count), &[LeastRequest]),
        ("peak_ewma", pos_of(&raw.peak_ewma), &[LeastRequest]),
        (
            "minimum_ring_size",
            pos_of(&raw.minimum_ring_size),
            &[RingHash],
        ),
        ("table_size", pos_of(&raw.table_size), &[Maglev]),
        ("hash_on", pos_of(&raw.hash_on), &[RingHash, Maglev]),
    ];
    let current = match raw.policy {
        Some(_) => policy.as_str().to_owned(),
        None => format!("the default policy, {},", policy.as_str()),
    };
    for (field, pos, owners) in settings {
        let Some(pos) = pos else { continue };
        if owners.contains(&policy) {
            continue;
        }
        let owners: Vec<&str> = owners.iter().map(|p| p.as_str()).collect();
        let why = match (field, policy) {
            ("minimum_ring_size", Maglev) => "maglev's table is sized by 'table_size'".to_owned(),
            ("table_size", RingHash) => {
                "ring_hash's ring is sized by 'minimum_ring_size'".to_owned()
            }
            ("minimum_ring_size", _) => format!("{current} has no hash ring"),
            ("table_size", _) => format!("{current} has no lookup table"),
            ("hash_on", _) => format!("{current} does not hash requests"),
            _ => format!("{current} does not compare how loaded endpoints are"),
        };
        let msg = format!(
            "'{field}' only applies to policy: {}; {why}",
            owners.join(" or ")
        );
        cx.report(pos, &join(path, field), msg);
    }
}

fn choice_count(cx: &Cx, raw: &raw::LoadBalancer, path: &str) -> u32 {
    cx.count(
        &raw.choice_count,
        &join(path, "choice_count"),
        ranges::CHOICE_COUNT,
        defaults::CHOICE_COUNT,
    )
}

/// Off unless written; `true` is the default settings.
fn peak_ewma(cx: &Cx, raw: &raw::LoadBalancer, path: &str) -> Option<Option<model::PeakEwma>> {
    let Some(item) = &raw.peak_ewma else {
        return Some(None);
    };
    match item.get()? {
        Toggle::Flag(false) => Some(None),
        Toggle::Flag(true) => Some(Some(model::PeakEwma::default())),
        Toggle::Settings(settings) => {
            let path = join(path, "peak_ewma");
            Some(Some(model::PeakEwma {
                decay: cx.duration(
                    &settings.decay,
                    &join(&path, "decay"),
                    ranges::PEAK_EWMA_DECAY,
                    defaults::PEAK_EWMA_DECAY,
                ),
                default_rtt: cx.duration(
                    &settings.default_rtt,
                    &join(&path, "default_rtt"),
                    ranges::PEAK_EWMA_DEFAULT_RTT,
                    defaults::PEAK_EWMA_DEFAULT_RTT,
                ),
            }))
        }
    }
}

fn minimum_ring_size(cx: &Cx, raw: &raw::LoadBalancer, path: &str) -> u64 {
    cx.count(
        &raw.minimum_ring_size,
        &join(path, "minimum_ring_size"),
        ranges::MINIMUM_RING_SIZE,
        defaults::MINIMUM_RING_SIZE,
    )
}

/// Maglev's table size must be prime: the algorithm's permutations only cover every entry
/// when it is.
fn table_size(cx: &Cx, raw: &raw::LoadBalancer, path: &str) -> u64 {
    let field_path = join(path, "table_size");
    let size = cx.count(
        &raw.table_size,
        &field_path,
        ranges::MAGLEV_TABLE_SIZE,
        defaults::MAGLEV_TABLE_SIZE,
    );
    let (min, max) = ranges::MAGLEV_TABLE_SIZE;
    if let Some((_, pos)) = value(&raw.table_size)
        && (min..=max).contains(&size)
        && !is_prime(size)
    {
        let msg = format!(
            "{size} is not prime, and a Maglev table size must be prime; the nearest prime is {}",
            nearest_prime(size, ranges::MAGLEV_TABLE_SIZE)
        );
        cx.report(pos, &field_path, msg);
    }
    size
}

fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    (3..)
        .step_by(2)
        .take_while(|d| d * d <= n)
        .all(|d| !n.is_multiple_of(d))
}

/// The prime closest to `n` within `(min, max)` (both prime), the larger one on a tie.
fn nearest_prime(n: u64, (min, max): (u64, u64)) -> u64 {
    (0..)
        .find_map(|distance| {
            let above = n.saturating_add(distance);
            let below = n.saturating_sub(distance);
            if above <= max && is_prime(above) {
                Some(above)
            } else if below >= min && is_prime(below) {
                Some(below)
            } else {
                None
            }
        })
        .unwrap_or(min)
}

/// ring_hash and maglev need to know what to hash.
fn hash_on(
    cx: &Cx,
    raw: &raw::LoadBalancer,
    policy: LbPolicy,
    pos: Pos,
    path: &str,
) -> Option<Vec<HashKey>> {
    let why = format!(
        " ({} sends requests with the same key to the same endpoint; say what the key is made \
         of)",
        policy.as_str()
    );
    let list = cx.required(&raw.hash_on, pos, path, "hash_on", &why)?;
    hash_keys(cx, list, &join(path, "hash_on"))
}

/// `None` if the list is unusable or any key is invalid (all of it reported).
fn hash_keys(cx: &Cx, list: &raw::List<raw::HashKey>, path: &str) -> Option<Vec<HashKey>> {
    let items = list.get()?;
    if items.is_empty() {
        let msg = "an empty hash_on list gives nothing to hash; list at least one of header, \
                   cookie, source_ip, path or query_parameter";
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut keys: Vec<(HashKey, String)> = Vec::with_capacity(items.len());
    let mut complete = true;
    for (_, key_path, item) in elements(Some(list), path) {
        let Some(key) = item
            .get()
            .and_then(|raw| hash_key(cx, raw, item.pos, &key_path))
        else {
            complete = false;
            continue;
        };
        if let Some((_, first)) = keys.iter().find(|(k, _)| same_key(k, &key)) {
            let msg = format!(
                "{} is listed twice (also {first}); list it once",
                describe(&key)
            );
            cx.report(item.pos, &key_path, msg);
            complete = false;
        }
        keys.push((key, key_path));
    }
    complete.then(|| keys.into_iter().map(|(k, _)| k).collect())
}

/// Two entries hash the same part of the request (a cookie's `ttl` and `path` aside).
fn same_key(a: &HashKey, b: &HashKey) -> bool {
    match (a, b) {
        (HashKey::Cookie { name: x, .. }, HashKey::Cookie { name: y, .. }) => x == y,
        _ => a == b,
    }
}

fn describe(key: &HashKey) -> String {
    match key {
        HashKey::Header(name) => format!("header '{name}'"),
        HashKey::Cookie { name, .. } => format!("cookie '{name}'"),
        HashKey::SourceIp => "source_ip".to_owned(),
        HashKey::Path => "path".to_owned(),
        HashKey::QueryParameter(name) => format!("query parameter '{name}'"),
    }
}

fn hash_key(cx: &Cx, raw: &raw::HashKey, pos: Pos, path: &str) -> Option<HashKey> {
    let given: Vec<(&'static str, Pos)> = [
        ("header", pos_of(&raw.header)),
        ("cookie", pos_of(&raw.cookie)),
        ("source_ip", pos_of(&raw.source_ip)),
        ("path", pos_of(&raw.path)),
        ("query_parameter", pos_of(&raw.query_parameter)),
    ]
    .into_iter()
    .filter_map(|(name, pos)| Some((name, pos?)))
    .collect();
    let names = "header, cookie, source_ip: true, path: true or query_parameter";
    let kind = only_one(cx, &given, pos, path, names)?;
    let field_path = join(path, kind);
    match kind {
        "header" => {
            let item = raw.header.as_ref()?;
            headers::name(cx, item, &field_path).map(HashKey::Header)
        }
        "cookie" => {
            let item = raw.cookie.as_ref()?;
            cookie(cx, item.get()?, item.pos, &field_path)
        }
        "source_ip" => flag(
            cx,
            raw.source_ip.as_ref()?,
            kind,
            &field_path,
            HashKey::SourceIp,
        ),
        "path" => flag(cx, raw.path.as_ref()?, kind, &field_path, HashKey::Path),
        _ => {
            let item = raw.query_parameter.as_ref()?;
            query_parameter(cx, item, &field_path).map(HashKey::QueryParameter)
        }
    }
}

/// `source_ip: true` and `path: true`; `false` would hash nothing.
fn flag(cx: &Cx, item: &Item<bool>, name: &str, path: &str, key: HashKey) -> Option<HashKey> {
    if *item.get()? {
        return Some(key);
    }
    let msg = format!("'{name}: false' hashes nothing; write {name}: true, or remove this entry");
    cx.report(item.pos, path, msg);
    None
}

fn cookie(cx: &Cx, raw: &raw::HashCookie, pos: Pos, path: &str) -> Option<HashKey> {
    let name = cx
        .required(&raw.name, pos, path, "name", "")
        .and_then(|item| cookie_name(cx, item, &join(path, "name")));
    let ttl = match &raw.ttl {
        None => Some(None),
        Some(item) => item.get().map(|_| {
            let (min, _) = ranges::COOKIE_TTL;
            Some(cx.duration(&raw.ttl, &join(path, "ttl"), ranges::COOKIE_TTL, min))
        }),
    };
    let cookie_path = match &raw.path {
        None => Some(None),
        Some(item) => cookie_path(cx, item, raw.ttl.is_some(), &join(path, "path")).map(Some),
    };
    Some(HashKey::Cookie {
        name: name?,
        ttl: ttl?,
        path: cookie_path?,
    })
}

/// A cookie name is an HTTP token (RFC 6265 section 4.1.1), and case-sensitive.
fn cookie_name(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = item.get()?;
    if text.is_empty() {
        cx.report(item.pos, path, "empty cookie name");
        return None;
    }
    if !text.bytes().all(is_token_byte) {
        let msg = format!(
            "'{text}' is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)"
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(text.clone())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Path` attribute of a cookie the proxy mints, so only with `ttl`.
fn cookie_path(cx: &Cx, item: &Item<String>, minted: bool, path: &str) -> Option<String> {
    let text = item.get()?;
    if !minted {
        let msg = "'path' only applies to a cookie the proxy sets, which needs 'ttl'; without \
                   it the client's own cookie is hashed, whatever its path";
        cx.report(item.pos, path, msg);
        return None;
    }
    if !text.starts_with('/') {
        cx.report(item.pos, path, format!("'{text}' must start with '/'"));
        return None;
    }
    if text.chars().any(|c| c == ';' || c.is_control()) {
        let msg = format!(
            "'{}' is not a valid cookie path (no ';' or control characters)",
            text.escape_debug()
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(text.clone())
}

fn query_parameter(cx: &Cx, item: &Item<String>, path: &str) -> Option<String> {
    let text = item.get()?;
    if text.is_empty() {
        cx.report(item.pos, path, "empty query parameter name");
        return None;
    }
    if text
        .chars()
        .any(|c| matches!(c, '&' | '=' | '#' | '?') || c.is_whitespace() || c.is_control())
    {
        let msg = format!(
            "'{}' is not a valid query parameter name (no '&', '=', '#', '?' or spaces)",
            text.escape_debug()
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(text.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let small: Vec<u64> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(defaults::MAGLEV_TABLE_SIZE));
        let (min, max) = ranges::MAGLEV_TABLE_SIZE;
        assert!(is_prime(min) && is_prime(max), "the range bounds are prime");
        assert!(!is_prime(65_535) && !is_prime(5_000_000));
    }

    #[test]
    fn nearest_prime_stays_in_range() {
        let range = ranges::MAGLEV_TABLE_SIZE;
        assert_eq!(nearest_prime(65_536, range), 65_537);
        assert_eq!(nearest_prime(65_535, range), 65_537);
        assert_eq!(nearest_prime(1000, range), 997);
        // 102 is as far from 101 as from 103; the larger wins.
        assert_eq!(nearest_prime(102, range), 103);
        assert_eq!(nearest_prime(5_000_010, range), 5_000_011);
    }
}
