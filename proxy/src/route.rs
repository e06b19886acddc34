//! The route table: which route serves a request.
//!
//! Precedence, most specific first (also documented in `config/examples/routing.yaml` and
//! `docs/request-flow.md`):
//! 1. host: routes naming the exact host, then `*.suffix` routes (longer suffix first), then
//!    routes for any host;
//! 2. path: exact, then regex, then prefix (longer first), then no path condition;
//! 3. a route with a method condition before one without;
//! 4. more header conditions before fewer;
//! 5. config order.
//!
//! The table is sorted into that order once, when the config is applied, so a lookup is the
//! first route in order whose conditions all hold. Exact hosts are found by hash.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, Method};
use remora_config::model::{HeaderValueMatch, HostMatch, PathMatch, RouteMatch};

/// Routes of one listener, in precedence order, each carrying a payload `R` (the runtime route).
pub struct RouteTable<R> {
    exact: HashMap<Box<str>, Vec<Entry<R>>>,
    /// Longest suffix first.
    suffix: Vec<(Box<str>, Vec<Entry<R>>)>,
    any: Vec<Entry<R>>,
}

struct Entry<R> {
    matches: Arc<RouteMatch>,
    order: SortKey,
    route: Arc<R>,
}

/// Lower sorts first. Host specificity is handled by which list an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    path_kind: u8,
    prefix_len: std::cmp::Reverse<usize>,
    no_method: bool,
    headers: std::cmp::Reverse<usize>,
    index: usize,
}

impl SortKey {
    fn of(m: &RouteMatch, index: usize) -> Self {
        let (path_kind, prefix_len) = match &m.path {
            Some(PathMatch::Exact(_)) => (0, 0),
            Some(PathMatch::Regex(_)) => (1, 0),
            Some(PathMatch::Prefix(p)) => (2, p.len()),
            None => (3, 0),
        };
        SortKey {
            path_kind,
            prefix_len: std::cmp::Reverse(prefix_len),
            no_method: m.method.is_none(),
            headers: std::cmp::Reverse(m.headers.len()),
            index,
        }
    }
}

/// The parts of a request that routing looks at.
pub struct RequestView<'a> {
    /// Lowercase or not, with or without a port: [`RouteTable::lookup`] normalises it.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl<R> RouteTable<R> {
    /// Builds the table from routes in config order.
    pub fn new(routes: impl IntoIterator<Item = (RouteMatch, Arc<R>)>) -> Self {
        let mut table = RouteTable {
            exact: HashMap::new(),
            suffix: Vec::new(),
            any: Vec::new(),
        };
        for (index, (matches, route)) in routes.into_iter().enumerate() {
            let order = SortKey::of(&matches, index);
            let matches = Arc::new(matches);
            let entry = || Entry {
                matches: matches.clone(),
                order,
                route: route.clone(),
            };
            if matches.hosts.is_empty() {
                table.any.push(entry());
            }
            for host in &matches.hosts {
                match host {
                    HostMatch::Exact(h) => table
                        .exact
                        .entry(h.as_str().into())
                        .or_default()
                        .push(entry()),
                    HostMatch::Suffix(s) => {
                        match table.suffix.iter_mut().find(|(k, _)| **k == **s) {
                            Some((_, list)) => list.push(entry()),
                            None => table.suffix.push((s.as_str().into(), vec![entry()])),
                        }
                    }
                }
            }
        }
        for list in table.exact.values_mut() {
            list.sort_by_key(|e| e.order);
        }
        for (_, list) in &mut table.suffix {
            list.sort_by_key(|e| e.order);
        }
        table
            .suffix
            .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table.any.sort_by_key(|e| e.order);
        table
    }

    /// Every route once, in config order.
    pub fn in_config_order(&self) -> Vec<&Arc<R>> {
        let mut all: Vec<&Entry<R>> = self
            .exact
            .values()
            .flatten()
            .chain(self.suffix.iter().flat_map(|(_, l)| l))
            .chain(&self.any)
            .collect();
        all.sort_by_key(|e| e.order.index);
        all.dedup_by_key(|e| e.order.index);
        all.into_iter().map(|e| &e.route).collect()
    }

    /// The most specific route whose conditions all hold.
    pub fn lookup(&self, req: &RequestView<'_>) -> Option<&Arc<R>> {
        let host = req.host.map(strip_port).unwrap_or("");
        if !self.exact.is_empty() && !host.is_empty() {
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.exact.get(host.to_ascii_lowercase().as_str())
            } else {
                self.exact.get(host)
            };
            if let Some(route) = found.and_then(|list| first_match(list, req)) {
                return Some(route);
            }
        }
        for (suffix, list) in &self.suffix {
            if host.len() > suffix.len()
                && ends_with_ignore_case(host, suffix)
                && let Some(route) = first_match(list, req)
            {
                return Some(route);
            }
        }
        first_match(&self.any, req)
    }
}

fn first_match<'t, R>(list: &'t [Entry<R>], req: &RequestView<'_>) -> Option<&'t Arc<R>> {
    list.iter()
        .find(|e| conditions_hold(&e.matches, req))
        .map(|e| &e.route)
}

/// Path, method and headers; the host was matched by where the entry is stored.
fn conditions_hold(m: &RouteMatch, req: &RequestView<'_>) -> bool {
    if let Some(method) = &m.method
        && method != req.method
    {
        return false;
    }
    if let Some(path) = &m.path
        && !path_matches(path, req.path)
    {
        return false;
    }
    m.headers.iter().all(|h| match &h.value {
        HeaderValueMatch::Present => req.headers.contains_key(&h.name),
        HeaderValueMatch::Exact(v) => req.headers.get_all(&h.name).iter().any(|got| got == v),
        HeaderValueMatch::Regex(re) => req
            .headers
            .get_all(&h.name)
            .iter()
            .any(|got| got.to_str().is_ok_and(|s| re.is_match(s))),
    })
}

pub fn path_matches(m: &PathMatch, path: &str) -> bool {
    match m {
        PathMatch::Exact(p) => path == p,
        PathMatch::Regex(re) => re.is_match(path),
        PathMatch::Prefix(p) => {
            // Segment-aware: `/api` matches `/api` and `/api/x`, never `/apiary`.
            path.starts_with(p.as_str())
                && (p.ends_with('/') || path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
        }
    }
}

/// `host:port` -> `host`; IPv6 literals keep their brackets.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|_| host.find(']')) {
        return &host[..=end];
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use regex::Regex;
    use remora_config::model::HeaderMatch;

    fn route(
        hosts: &[&str],
        path: Option<PathMatch>,
        method: Option<&str>,
        headers: &[(&'static str, HeaderValueMatch)],
    ) -> RouteMatch {
        RouteMatch {
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix('*') {
                    Some(s) => HostMatch::Suffix(s.to_string()),
                    None => HostMatch::Exact(h.to_string()),
                })
                .collect(),
            path,
            method: method.map(|m| m.parse().unwrap()),
            headers: headers
                .iter()
                .map(|(n, v)| HeaderMatch {
                    name: HeaderName::from_static(n),
                    value: v.clone(),
                })
                .collect(),
        }
    }

    fn prefix(p: &str) -> Option<PathMatch> {
        Some(PathMatch::Prefix(p.into()))
    }

    fn table(routes: Vec<(&'static str, RouteMatch)>) -> RouteTable<&'static str> {
        RouteTable::new(routes.into_iter().map(|(n, m)| (m, Arc::new(n))))
    }

    fn get(t: &RouteTable<&'static str>, host: &str, path: &str) -> Option<&'static str> {
        get_with(t, host, path, &Method::GET, &HeaderMap::new())
    }

    fn get_with(
        t: &RouteTable<&'static str>,
        host: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<&'static str> {
        let view = RequestView {
            host: Some(host),
            path,
            method,
            headers,
        };
        t.lookup(&view).map(|r| **r)
    }

    #[test]
    fn host_precedence_exact_then_longest_suffix_then_any() {
        let t = table(vec![
            ("any", route(&[], None, None, &[])),
            ("short", route(&["*.com"], None, None, &[])),
            ("long", route(&["*.example.com"], None, None, &[])),
            ("exact", route(&["api.example.com"], None, None, &[])),
        ]);
        assert_eq!(get(&t, "api.example.com", "/"), Some("exact"));
        assert_eq!(get(&t, "API.Example.com:8080", "/"), Some("exact"));
        assert_eq!(get(&t, "web.example.com", "/"), Some("long"));
        assert_eq!(get(&t, "other.com", "/"), Some("short"));
        assert_eq!(get(&t, "example.org", "/"), Some("any"));
        // `*.example.com` needs at least one more label character.
        assert_eq!(get(&t, "example.com", "/"), Some("short"));
    }

    #[test]
    fn a_more_specific_host_whose_path_fails_falls_through() {
        let t = table(vec![
            (
                "exact-admin",
                route(&["api.local"], prefix("/admin"), None, &[]),
            ),
            ("any", route(&[], None, None, &[])),
        ]);
        assert_eq!(get(&t, "api.local", "/admin/x"), Some("exact-admin"));
        assert_eq!(get(&t, "api.local", "/public"), Some("any"));
    }

    #[test]
    fn path_precedence_exact_regex_longest_prefix_none() {
        let t = table(vec![
            ("none", route(&[], None, None, &[])),
            ("short", route(&[], prefix("/api"), None, &[])),
            ("long", route(&[], prefix("/api/v2"), None, &[])),
            (
                "regex",
                route(
                    &[],
                    Some(PathMatch::Regex(
                        Regex::new("^(?:/api/v2/users/[0-9]+)$").unwrap(),
                    )),
                    None,
                    &[],
                ),
            ),
            (
                "exact",
                route(
                    &[],
                    Some(PathMatch::Exact("/api/v2/users/1".into())),
                    None,
                    &[],
                ),
            ),
        ]);
        assert_eq!(get(&t, "h", "/api/v2/users/1"), Some("exact"));
        assert_eq!(get(&t, "h", "/api/v2/users/2"), Some("regex"));
        assert_eq!(get(&t, "h", "/api/v2/users/x"), Some("long"));
        assert_eq!(get(&t, "h", "/api/v1"), Some("short"));
        assert_eq!(get(&t, "h", "/apiary"), Some("none"));
    }

    #[test]
    fn method_then_header_count_then_config_order() {
        let canary = (
            "x-canary",
            HeaderValueMatch::Exact(HeaderValue::from_static("1")),
        );
        let t = table(vec![
            ("first", route(&[], prefix("/"), None, &[])),
            ("second", route(&[], prefix("/"), None, &[])),
            ("post", route(&[], prefix("/"), Some("POST"), &[])),
            ("canary", route(&[], prefix("/"), None, &[canary])),
        ]);
        let mut h = HeaderMap::new();
        assert_eq!(get_with(&t, "h", "/", &Method::POST, &h), Some("post"));
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), Some("first"));
        h.insert("x-canary", HeaderValue::from_static("1"));
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), Some("canary"));
        h.insert("x-canary", HeaderValue::from_static("2"));
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), Some("first"));
    }

    #[test]
    fn header_regex_and_presence() {
        let t = table(vec![
            (
                "re",
                route(
                    &[],
                    None,
                    None,
                    &[(
                        "x-version",
                        HeaderValueMatch::Regex(Regex::new("^(?:v[23])$").unwrap()),
                    )],
                ),
            ),
            (
                "present",
                route(&[], None, None, &[("x-debug", HeaderValueMatch::Present)]),
            ),
        ]);
        let mut h = HeaderMap::new();
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), None);
        h.insert("x-debug", HeaderValue::from_static(""));
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), Some("present"));
        h.insert("x-version", HeaderValue::from_static("v3"));
        // Both hold and both have one header condition: config order decides.
        assert_eq!(get_with(&t, "h", "/", &Method::GET, &h), Some("re"));
    }

    #[test]
    fn prefix_is_segment_aware() {
        let api = PathMatch::Prefix("/api".into());
        assert!(path_matches(&api, "/api"));
        assert!(path_matches(&api, "/api/"));
        assert!(path_matches(&api, "/api/v1"));
        assert!(!path_matches(&api, "/apiary"));
        let slash = PathMatch::Prefix("/api/".into());
        assert!(path_matches(&slash, "/api/x"));
        assert!(!path_matches(&slash, "/api"));
    }

    #[test]
    fn ports_are_stripped_but_ipv6_literals_survive() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
