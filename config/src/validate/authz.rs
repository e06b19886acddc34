//! `authorization:` on a listener or route: whole SPIFFE IDs or segment prefixes, paths that
//! start with `/`, and method tokens.

use super::{Cx, elements, join, value};
use crate::model::{self, IdentityPattern, PathPattern};
use crate::raw::{self, Field, Item};

/// `Some(None)` when there is none; `None` if it is invalid (reported).
pub(super) fn authorization(
    cx: &Cx,
    field: &Field<raw::Authorization>,
    path: &str,
) -> Option<Option<model::Authorization>> {
    let Some(item) = field else {
        return Some(None);
    };
    let raw = item.get()?;
    let list = cx.required(&raw.rules, item.pos, path, "rules", "")?;
    let mut rules = Vec::new();
    let mut complete = true;
    for (_, rule_path, rule) in elements(Some(list), &join(path, "rules")) {
        match rule
            .get()
            .and_then(|r| self::rule(cx, r, rule.pos, &rule_path))
        {
            Some(r) => rules.push(r),
            None => complete = false,
        }
    }
    complete.then_some(Some(model::Authorization { rules }))
}

fn rule(cx: &Cx, raw: &raw::AuthzRule, pos: raw::Pos, path: &str) -> Option<model::AuthzRule> {
    let allow = cx
        .required(&raw.action, pos, path, "action", " (allow or deny)")
        .and_then(|a| a.get())
        .map(|a| *a == raw::AuthzAction::Allow);
    let mut ok = true;
    let (mut identities, mut unauthenticated) = (Vec::new(), false);
    if let Some((from, _)) = value(&raw.from) {
        for (_, p, item) in elements(from.identities.as_ref(), &join(path, "from.identities")) {
            match item.get().and_then(|text| identity(cx, text, item, &p)) {
                Some(id) => identities.push(id),
                None => ok = false,
            }
        }
        unauthenticated = value(&from.unauthenticated).is_some_and(|(u, _)| *u);
    }
    let (mut paths, mut methods, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    if let Some((to, _)) = value(&raw.to) {
        if let Some(list) = &to.ports {
            match super::listeners::ports(cx, list, &join(path, "to.ports")) {
                Some(p) => ports = p,
                None => ok = false,
            }
        }
        for (_, p, item) in elements(to.paths.as_ref(), &join(path, "to.paths")) {
            match item.get().and_then(|text| path_pattern(cx, text, item, &p)) {
                Some(pattern) => paths.push(pattern),
                None => ok = false,
            }
        }
        for (_, p, item) in elements(to.methods.as_ref(), &join(path, "to.methods")) {
            match item.get().and_then(|text| method(cx, text, item, &p)) {
                Some(m) => methods.push(m),
                None => ok = false,
            }
        }
    }
    if !ok {
        return None;
    }
    Some(model::AuthzRule {
        allow: allow?,
        identities,
        unauthenticated,
        paths,
        methods,
        ports,
    })
}

/// `spiffe://td/ns/NS/sa/SA` exactly, or `spiffe://td/*` / `spiffe://td/ns/NS/*`.
fn identity(cx: &Cx, text: &str, item: &Item<String>, path: &str) -> Option<IdentityPattern> {
    let Some(prefix) = text.strip_suffix("/*") else {
        return match crate::identity::SpiffeId::parse(text) {
            Ok(id) => Some(IdentityPattern::Exact(id.to_string())),
            Err(m) => {
                cx.report(
                    item.pos,
                    path,
                    format!("{m}; or a prefix such as spiffe://cluster.local/ns/shop/*"),
                );
                None
            }
        };
    };
    let shape_ok = prefix.strip_prefix("spiffe://").is_some_and(|rest| {
        let segments: Vec<&str> = rest.split('/').collect();
        let named = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        match segments.as_slice() {
            [td] => named(td),
            [td, "ns", ns] => named(td) && named(ns),
            _ => false,
        }
    });
    if !shape_ok {
        let msg = format!(
            "'{text}' is not a trust domain or namespace prefix: expected spiffe://<trust-domain>/* or spiffe://<trust-domain>/ns/<namespace>/*"
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    Some(IdentityPattern::Prefix(format!("{prefix}/")))
}

/// `*`, `/exact`, or `/prefix/*`; kept lowercase (compared ignoring case).
fn path_pattern(cx: &Cx, text: &str, item: &Item<String>, path: &str) -> Option<PathPattern> {
    if text == "*" {
        return Some(PathPattern::Any);
    }
    let bad = !text.starts_with('/')
        || text.contains(['?', '#', '%'])
        || text.split('/').any(|s| s == "." || s == "..")
        || text.contains("//")
        || text.trim_end_matches("/*").contains('*');
    if bad {
        let msg = format!(
            "'{text}' is not a path pattern: expected an absolute normalized path (`/admin`) or a prefix (`/admin/*`), without query, '%', '.' or '..' segments, or '*' elsewhere"
        );
        cx.report(item.pos, path, msg);
        return None;
    }
    let lower = text.to_ascii_lowercase();
    Some(match lower.strip_suffix("/*") {
        Some(prefix) => PathPattern::Prefix(prefix.to_owned()),
        None => PathPattern::Exact(lower),
    })
}

fn method(cx: &Cx, text: &str, item: &Item<String>, path: &str) -> Option<http::Method> {
    match http::Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            cx.report(item.pos, path, format!("'{text}' is not an HTTP method"));
            None
        }
    }
}
