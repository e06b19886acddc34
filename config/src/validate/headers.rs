//! Header names and values, and `request_headers` / `response_headers` rewrites.

use http::{HeaderName, HeaderValue};

use super::{Cx, elements, join};
use crate::model::HeaderRewrite;
use crate::raw::{self, Field, HeaderAppends, HeaderMap, HeaderValues, Item, OneOrMany};

/// Headers that describe one hop's connection or framing. The proxy sets them itself for each
/// side; a rewrite of them would corrupt the message (a wrong `content-length`) or the
/// connection (`connection: close` for an upstream the pool still reuses).
const MANAGED: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A header name, lowercased (HTTP/2 requires lowercase names and HTTP/1.1 ignores case).
pub(super) fn name(cx: &Cx, item: &Item<String>, path: &str) -> Option<HeaderName> {
    let text = item.get()?;
    let lower = text.trim().to_ascii_lowercase();
    match HeaderName::from_bytes(lower.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) if lower.is_empty() => {
            cx.report(item.pos, path, "empty header name");
            None
        }
        Err(_) => {
            let msg = format!(
                "'{text}' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
            );
            cx.report(item.pos, path, msg);
            None
        }
    }
}

pub(super) fn value(cx: &Cx, item: &Item<String>, path: &str) -> Option<HeaderValue> {
    let text = item.get()?;
    match HeaderValue::from_str(text) {
        Ok(value) => Some(value),
        Err(_) => {
            let msg = format!(
                "'{}' is not a valid header value (no control characters or line breaks)",
                text.escape_debug()
            );
            cx.report(item.pos, path, msg);
            None
        }
    }
}

/// A name that a rewrite may touch: valid, and not one the proxy manages per hop.
fn rewritable(cx: &Cx, item: &Item<String>, path: &str) -> Option<HeaderName> {
    let name = name(cx, item, path)?;
    if MANAGED.contains(&name.as_str()) {
        let msg =
            format!("'{name}' is set by the proxy for each connection and cannot be rewritten");
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(name)
}

pub(super) fn rewrite(
    cx: &Cx,
    field: &Field<raw::HeaderRewrite>,
    path: &str,
) -> Option<HeaderRewrite> {
    let Some(item) = field else {
        return Some(HeaderRewrite::default());
    };
    let raw = item.get()?;
    let remove_path = join(path, "remove");
    let mut remove = Some(Vec::new());
    for (_, name_path, name) in elements(raw.remove.as_ref(), &remove_path) {
        match (rewritable(cx, name, &name_path), remove.as_mut()) {
            (Some(name), Some(names)) => names.push(name),
            _ => remove = None,
        }
    }
    if raw.remove.as_ref().is_some_and(|l| l.get().is_none()) {
        remove = None;
    }
    let set = set_pairs(cx, &raw.set, &join(path, "set"));
    let add = add_pairs(cx, &raw.add, &join(path, "add"));
    Some(HeaderRewrite {
        remove: remove?,
        set: set?,
        add: add?,
    })
}

/// The entries of `set`. Setting replaces, so naming a header twice (in any case) is a
/// mistake: only the last would count.
fn set_pairs(
    cx: &Cx,
    field: &Field<HeaderValues>,
    path: &str,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Some(item) = field else {
        return Some(Vec::new());
    };
    let HeaderMap(entries) = item.get()?;
    let mut pairs: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(entries.len());
    let mut complete = true;
    for (key, val) in entries {
        let entry_path = join(path, key.get().map_or("?", String::as_str));
        let name = rewritable(cx, key, &entry_path);
        let value = value(cx, val, &entry_path);
        let (Some(name), Some(value)) = (name, value) else {
            complete = false;
            continue;
        };
        if pairs.iter().any(|(n, _)| *n == name) {
            let msg = format!("header '{name}' is set twice; set it once");
            cx.report(key.pos, &entry_path, msg);
            complete = false;
            continue;
        }
        pairs.push((name, value));
    }
    complete.then_some(pairs)
}

/// The entries of `add`, each header's values together in the order written (a header named
/// twice in different case is one header). Grouping makes the model what `to_yaml` writes.
fn add_pairs(
    cx: &Cx,
    field: &Field<HeaderAppends>,
    path: &str,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    let Some(item) = field else {
        return Some(Vec::new());
    };
    let HeaderMap(entries) = item.get()?;
    let mut grouped: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    let mut complete = true;
    for (key, values) in entries {
        let entry_path = join(path, key.get().map_or("?", String::as_str));
        let name = rewritable(cx, key, &entry_path);
        let mut parsed = Vec::new();
        match values.get() {
            Some(OneOrMany(list)) if list.is_empty() => {
                cx.report(values.pos, &entry_path, "no values to add");
                complete = false;
            }
            Some(OneOrMany(list)) => {
                for (i, v) in list.iter().enumerate() {
                    let value_path = if list.len() > 1 {
                        format!("{entry_path}[{i}]")
                    } else {
                        entry_path.clone()
                    };
                    match value(cx, v, &value_path) {
                        Some(v) => parsed.push(v),
                        None => complete = false,
                    }
                }
            }
            None => complete = false,
        }
        let Some(name) = name else {
            complete = false;
            continue;
        };
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => existing.extend(parsed),
            None => grouped.push((name, parsed)),
        }
    }
    let flat = grouped
        .into_iter()
        .flat_map(|(name, values)| values.into_iter().map(move |v| (name.clone(), v)));
    complete.then(|| flat.collect())
}
