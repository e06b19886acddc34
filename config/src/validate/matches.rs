//! `match:` conditions: hosts, path, method and headers.

use http::Method;
use regex::Regex;

use super::{Cx, elements, headers, join, one_of};
use crate::model::{self, HeaderValueMatch, HostMatch, PathMatch};
use crate::raw::{self, Item, Pos};

pub(super) fn route_match(cx: &Cx, raw: &raw::RouteMatch, path: &str) -> Option<model::RouteMatch> {
    let hosts = match &raw.hosts {
        None => Some(Vec::new()),
        Some(list) => hosts(cx, list, &join(path, "hosts")),
    };
    let path_match = match &raw.path {
        None => Some(None),
        Some(item) => item
            .get()
            .and_then(|p| path_match(cx, p, item.pos, &join(path, "path")))
            .map(Some),
    };
    let method = match &raw.method {
        None => Some(None),
        Some(item) => method(cx, item, &join(path, "method")).map(Some),
    };
    let headers = match &raw.headers {
        None => Some(Vec::new()),
        Some(list) => header_matches(cx, list, &join(path, "headers")),
    };
    Some(model::RouteMatch {
        hosts: hosts?,
        path: path_match?,
        method: method?,
        headers: headers?,
    })
}

/// Host patterns; `*` alone means any host, which the model writes as no patterns at all.
fn hosts(cx: &Cx, list: &raw::List<String>, path: &str) -> Option<Vec<HostMatch>> {
    let items = list.get()?;
    if items.is_empty() {
        let msg = "an empty hosts list matches no request; use ['*'] for any host, or leave \
                   'hosts' out";
        cx.report(list.pos, path, msg);
        return None;
    }
    let mut patterns = Vec::new();
    let mut any_host: Option<Pos> = None;
    let mut complete = true;
    for (_, host_path, item) in elements(Some(list), path) {
        let Some(text) = item.get() else {
            complete = false;
            continue;
        };
        match host_pattern(text) {
            Ok(None) => any_host = Some(item.pos),
            Ok(Some(pattern)) => patterns.push(pattern),
            Err(message) => {
                cx.report(item.pos, &host_path, message);
                complete = false;
            }
        }
    }
    if let Some(pos) = any_host
        && !patterns.is_empty()
    {
        let msg = "'*' matches every host, so the other patterns here have no effect; use '*' \
                   alone";
        cx.report(pos, path, msg);
        return None;
    }
    complete.then_some(patterns)
}

/// `api.local` (exact), `*.api.local` (any subdomain), `*` (any host: `None`). Lowercased,
/// because host names are case-insensitive and the proxy lowercases the request's host too.
pub(crate) fn host_pattern(text: &str) -> Result<Option<HostMatch>, String> {
    let host = text.trim().to_ascii_lowercase();
    if host.is_empty() {
        return Err("empty host pattern; use '*' for any host".to_owned());
    }
    if host == "*" {
        return Ok(None);
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {
                Ok(Some(HostMatch::Exact(host)))
            }
            _ if inner.contains("]:") => Err(port_message(text)),
            _ => Err(format!("'{text}' is not a valid host name")),
        };
    }
    if host.contains(':') {
        return Err(port_message(text));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    if name.contains('*') {
        return Err(format!(
            "'{text}': a wildcard is only allowed as a leading '*.' (e.g. '*.example.com'), or \
             '*' alone for any host"
        ));
    }
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !valid {
        return Err(format!("'{text}' is not a valid host name"));
    }
    Ok(Some(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(host)
    }))
}

fn port_message(text: &str) -> String {
    format!(
        "'{text}' has a port; host patterns match the host name only (the request's port is \
         ignored), so remove the port"
    )
}

fn path_match(cx: &Cx, raw: &raw::PathMatch, pos: Pos, path: &str) -> Option<PathMatch> {
    let choices = [
        ("exact", &raw.exact),
        ("prefix", &raw.prefix),
        ("regex", &raw.regex),
    ];
    let (kind, item) = one_of(cx, &choices, pos, path, "exact, prefix or regex")?;
    let text = item.get()?;
    let field_path = join(path, kind);
    if kind == "regex" {
        return anchored_regex(text)
            .map_err(|message| cx.report(item.pos, &field_path, message))
            .ok()
            .map(PathMatch::Regex);
    }
    if !text.starts_with('/') {
        let msg = format!("'{text}' must start with '/'");
        cx.report(item.pos, &field_path, msg);
        return None;
    }
    Some(match kind {
        "exact" => PathMatch::Exact(text.clone()),
        _ => PathMatch::Prefix(text.clone()),
    })
}

/// Methods are case-sensitive in HTTP, but every method in use is upper case, so `get` is
/// taken to mean `GET` rather than an unknown method that never matches.
fn method(cx: &Cx, item: &Item<String>, path: &str) -> Option<Method> {
    let text = item.get()?;
    let upper = text.trim().to_ascii_uppercase();
    match Method::from_bytes(upper.as_bytes()) {
        Ok(method) if !upper.is_empty() => Some(method),
        _ => {
            cx.report(item.pos, path, format!("'{text}' is not an HTTP method"));
            None
        }
    }
}

pub(super) fn header_matches(
    cx: &Cx,
    list: &raw::List<raw::HeaderMatch>,
    path: &str,
) -> Option<Vec<model::HeaderMatch>> {
    let items = list.get()?;
    let mut matches = Vec::with_capacity(items.len());
    for (_, match_path, item) in elements(Some(list), path) {
        if let Some(m) = item
            .get()
            .and_then(|raw| header_match(cx, raw, item.pos, &match_path))
        {
            matches.push(m);
        }
    }
    (matches.len() == items.len()).then_some(matches)
}

fn header_match(
    cx: &Cx,
    raw: &raw::HeaderMatch,
    pos: Pos,
    path: &str,
) -> Option<model::HeaderMatch> {
    let name = cx
        .required(&raw.name, pos, path, "name", "")
        .and_then(|item| headers::name(cx, item, &join(path, "name")));
    let choices = [("exact", &raw.exact), ("regex", &raw.regex)];
    let value = if let Some(present) = &raw.present {
        if raw.exact.is_some() || raw.regex.is_some() {
            let msg = "set only one of exact, regex or present";
            cx.report(present.pos, &join(path, "present"), msg);
            None
        } else {
            present_match(cx, present, &join(path, "present"))
        }
    } else {
        let names = "exact, regex or present: true";
        let (kind, item) = one_of(cx, &choices, pos, path, names)?;
        let text = item.get()?;
        let field_path = join(path, kind);
        match kind {
            "exact" => headers::value(cx, item, &field_path).map(HeaderValueMatch::Exact),
            _ => anchored_regex(text)
                .map_err(|message| cx.report(item.pos, &field_path, message))
                .ok()
                .map(HeaderValueMatch::Regex),
        }
    };
    Some(model::HeaderMatch {
        name: name?,
        value: value?,
    })
}

fn present_match(cx: &Cx, present: &Item<bool>, path: &str) -> Option<HeaderValueMatch> {
    match present.get()? {
        true => Some(HeaderValueMatch::Present),
        false => {
            let msg = "'present: false' is not supported; a header condition matches when the \
                       header is there (write present: true)";
            cx.report(present.pos, path, msg);
            None
        }
    }
}

/// Compiles `pattern` so that it must match the whole text. The pattern is checked on its own
/// first: wrapped, `a)(b` would compile as `^(?:a)(b)$` and hide the user's mistake.
pub(crate) fn anchored_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
        .map_err(|e| regex_message(&e))
}

/// The regex crate's multi-line syntax error, reduced to its last line (the reason).
fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let reason = text
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(text.lines().last().unwrap_or("syntax error"));
            format!("invalid regex: {reason}")
        }
        regex::Error::CompiledTooBig(_) => "regex is too big once compiled; simplify it".to_owned(),
        _ => format!("invalid regex: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(host_pattern("*"), Ok(None));
        assert_eq!(
            host_pattern("API.Local"),
            Ok(Some(HostMatch::Exact("api.local".into())))
        );
        assert_eq!(
            host_pattern("*.Example.com"),
            Ok(Some(HostMatch::Suffix(".example.com".into())))
        );
        assert_eq!(
            host_pattern("[::1]"),
            Ok(Some(HostMatch::Exact("[::1]".into())))
        );
        assert!(
            host_pattern("api.local:8080")
                .unwrap_err()
                .contains("has a port")
        );
        assert!(host_pattern("[::1]:80").unwrap_err().contains("has a port"));
        assert!(host_pattern("api.*.com").unwrap_err().contains("wildcard"));
        assert!(host_pattern("*.").unwrap_err().contains("not a valid host"));
        assert!(
            host_pattern("a b")
                .unwrap_err()
                .contains("not a valid host")
        );
        assert!(host_pattern("").is_err());
    }

    #[test]
    fn regexes_are_anchored_and_checked_alone() {
        let re = anchored_regex("/v[0-9]+").unwrap();
        assert!(re.is_match("/v12"));
        assert!(!re.is_match("/v12/x"));
        assert!(!re.is_match("/x/v12"));
        assert_eq!(
            anchored_regex("a)(b").unwrap_err(),
            "invalid regex: unopened group"
        );
        assert_eq!(
            anchored_regex("/api/(v1").unwrap_err(),
            "invalid regex: unclosed group"
        );
    }
}
