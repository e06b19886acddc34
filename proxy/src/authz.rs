//! Authorization policies: who may call what, checked on each request (after the path is
//! normalized) and on each opaque TCP connection.
//!
//! A request matching a deny rule is refused; otherwise, when there are allow rules, it must
//! match one of them. On opaque TCP, where paths and methods cannot be seen, a deny rule
//! applies whatever its paths and methods say, and an allow rule only when it says nothing
//! about them: in doubt, closed. Ports are known for both (the connection's original
//! destination port, else the listener's): a rule with `ports` applies to those only.

use std::borrow::Cow;

use http::Method;
use prometheus_client::metrics::counter::Counter;
use remora_config::model::{Authorization, AuthzRule};

/// A listener's or route's rules, and the counter of what they refused.
pub struct AuthzRt {
    pub rules: Authorization,
    pub denied: Counter,
}

impl AuthzRt {
    /// Checks a request on a connection for `port`; counts a refusal.
    pub fn check_request(
        &self,
        caller: Option<&str>,
        path: &str,
        method: &Method,
        port: Option<u16>,
    ) -> bool {
        self.count(allowed(&self.rules, caller, Some((path, method)), port))
    }

    /// Checks an opaque TCP connection for `port`; counts a refusal.
    pub fn check_connection(&self, caller: Option<&str>, port: Option<u16>) -> bool {
        self.count(allowed(&self.rules, caller, None, port))
    }

    fn count(&self, allowed: bool) -> bool {
        if !allowed {
            self.denied.inc();
        }
        allowed
    }
}

/// Whether `caller` (its SPIFFE ID; `None` unauthenticated) may make `request` (normalized path
/// and method; `None` for an opaque TCP connection) on a connection for `port` (`None` when
/// unknown: a deny rule with ports applies then, an allow rule with ports does not).
pub fn allowed(
    authz: &Authorization,
    caller: Option<&str>,
    request: Option<(&str, &Method)>,
    port: Option<u16>,
) -> bool {
    let from = |r: &AuthzRule| {
        !r.has_from()
            || (r.unauthenticated && caller.is_none())
            || caller.is_some_and(|c| r.identities.iter().any(|p| p.matches(c)))
    };
    let to = |r: &AuthzRule| match request {
        Some((path, method)) => {
            (r.paths.is_empty() || r.paths.iter().any(|p| p.matches(path)))
                && (r.methods.is_empty() || r.methods.contains(method))
        }
        // Unseen: a deny rule applies, an allow rule only if it asks nothing of the request.
        None => !r.allow || !r.has_to(),
    };
    let deny_port = |r: &AuthzRule| port.is_none() || r.covers_port(port);
    if authz
        .rules
        .iter()
        .any(|r| !r.allow && from(r) && deny_port(r) && to(r))
    {
        return false;
    }
    let mut allows = authz.rules.iter().filter(|r| r.allow).peekable();
    allows.peek().is_none() || allows.any(|r| from(r) && r.covers_port(port) && to(r))
}

/// Why a path cannot be normalized: it would mean different things to different servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `%2F` or `%5C`: a slash that is not one, to some servers but not others.
    EncodedSlash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Not an absolute path (`*`, or empty).
    NotAbsolute,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::EncodedSlash => "the path has an encoded slash (%2F or %5C)",
            PathError::BadEscape => "the path has a malformed percent-encoding",
            PathError::NotAbsolute => "the path is not absolute",
        }
    }
}

/// The path as it is matched and forwarded on a listener with authorization: percent-encoded
/// unreserved characters decoded (`%2e` is `.`, `%41` is `A`, RFC 3986 section 6.2.2.2),
/// other escapes upper-cased, runs of `/` merged, and `.` and `..` segments removed (section
/// 5.2.4). An encoded slash or backslash is refused rather than guessed at. Borrowed when
/// nothing changes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let simple = !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if simple {
        return Ok(Cow::Borrowed(path));
    }
    // Decode what may be decoded.
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let hex = |b: u8| (b as char).to_digit(16);
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let c = (h * 16 + l) as u8;
        match c {
            b'/' | b'\\' => return Err(PathError::EncodedSlash),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                decoded.push(c as char)
            }
            _ => {
                decoded.push('%');
                decoded.push_str(&format!("{c:02X}"));
            }
        }
        i += 3;
    }
    // Merge slashes and resolve dot segments, segment by segment.
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for s in &out {
        result.push('/');
        result.push_str(s);
    }
    if trailing || result.is_empty() {
        result.push('/');
    }
    Ok(Cow::Owned(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_config::model::{IdentityPattern, PathPattern};

    #[test]
    fn paths_normalize_to_what_is_forwarded() {
        for (raw, want) in [
            ("/admin", "/admin"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/a/./b/../../admin", "/admin"),
            ("//admin", "/admin"),
            ("///admin//x", "/admin/x"),
            ("/../../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/admin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/", "/"),
            ("/..", "/"),
        ] {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
        assert!(matches!(normalize("/plain/path"), Ok(Cow::Borrowed(_))));
        assert_eq!(normalize("/%2Fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%2fadmin"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%5Cadmin"), Err(PathError::EncodedSlash));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("*"), Err(PathError::NotAbsolute));
    }

    fn rule(
        allow: bool,
        ids: &[&str],
        unauth: bool,
        paths: &[&str],
        methods: &[&str],
    ) -> AuthzRule {
        AuthzRule {
            allow,
            identities: ids
                .iter()
                .map(|i| match i.strip_suffix('*') {
                    Some(p) => IdentityPattern::Prefix(p.to_owned()),
                    None => IdentityPattern::Exact((*i).to_owned()),
                })
                .collect(),
            unauthenticated: unauth,
            paths: paths
                .iter()
                .map(|p| match p.strip_suffix("/*") {
                    Some(p) => PathPattern::Prefix(p.to_owned()),
                    None => PathPattern::Exact((*p).to_owned()),
                })
                .collect(),
            methods: methods
                .iter()
                .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                .collect(),
            ports: Vec::new(),
        }
    }

    const WEB: &str = "spiffe://td/ns/shop/sa/web";
    const WEB2: &str = "spiffe://td/ns/shop/sa/web2";
    const OPS: &str = "spiffe://td/ns/ops/sa/admin";

    fn check(a: &Authorization, caller: Option<&str>, path: &str, method: &str) -> bool {
        let normalized = normalize(path).unwrap();
        allowed(
            a,
            caller,
            Some((&normalized, &Method::from_bytes(method.as_bytes()).unwrap())),
            Some(8080),
        )
    }

    #[test]
    fn a_deny_on_admin_holds_whatever_the_spelling() {
        let a = Authorization {
            rules: vec![rule(false, &[], false, &["/admin", "/admin/*"], &[])],
        };
        for path in [
            "/admin",
            "/public/../admin",
            "/public/%2e%2e/admin",
            "//admin",
            "/ADMIN",
            "/Admin/x",
            "/%61dmin",
            "/admin/",
        ] {
            assert!(!check(&a, Some(WEB), path, "GET"), "{path}");
        }
        for path in ["/administrator", "/public", "/"] {
            assert!(check(&a, Some(WEB), path, "GET"), "{path}");
        }
    }

    #[test]
    fn allow_rules_admit_only_what_they_name() {
        let a = Authorization {
            rules: vec![
                rule(true, &[WEB], false, &["/api/*"], &["GET", "POST"]),
                rule(true, &["spiffe://td/ns/ops/*"], false, &[], &[]),
                rule(false, &[], false, &["/api/secret"], &[]),
            ],
        };
        assert!(check(&a, Some(WEB), "/api/orders", "GET"));
        assert!(!check(&a, Some(WEB), "/api/orders", "DELETE"), "method");
        assert!(!check(&a, Some(WEB), "/other", "GET"), "path");
        assert!(
            !check(&a, Some(WEB2), "/api/orders", "GET"),
            "a prefix of the ID is not the ID"
        );
        assert!(!check(&a, None, "/api/orders", "GET"), "unauthenticated");
        assert!(
            check(&a, Some(OPS), "/anything", "DELETE"),
            "namespace prefix"
        );
        assert!(!check(
            &a,
            Some("spiffe://td/ns/opsx/sa/a"),
            "/anything",
            "GET"
        ));
        assert!(!check(&a, Some(OPS), "/api/secret", "GET"), "deny wins");
    }

    #[test]
    fn plaintext_callers_are_matched_only_by_unauthenticated() {
        let a = Authorization {
            rules: vec![rule(true, &[], true, &["/health"], &[])],
        };
        assert!(check(&a, None, "/health", "GET"));
        assert!(
            !check(&a, Some(WEB), "/health", "GET"),
            "an identity is not unauthenticated"
        );
        let deny_plain = Authorization {
            rules: vec![rule(false, &[], true, &[], &[])],
        };
        assert!(!check(&deny_plain, None, "/x", "GET"));
        assert!(check(&deny_plain, Some(WEB), "/x", "GET"));
        assert!(
            check(&Authorization { rules: vec![] }, None, "/x", "GET"),
            "no rules: open"
        );
    }

    #[test]
    fn tcp_connections_fail_closed_on_rules_about_requests() {
        let a = Authorization {
            rules: vec![rule(false, &[WEB], false, &["/admin"], &[])],
        };
        assert!(
            !allowed(&a, Some(WEB), None, None),
            "a deny by path denies opaque TCP"
        );
        assert!(allowed(&a, Some(OPS), None, None));
        let b = Authorization {
            rules: vec![rule(true, &[WEB], false, &["/api/*"], &[])],
        };
        assert!(
            !allowed(&b, Some(WEB), None, None),
            "an allow by path does not admit TCP"
        );
        let c = Authorization {
            rules: vec![rule(true, &[WEB], false, &[], &[])],
        };
        assert!(allowed(&c, Some(WEB), None, None));
        assert!(!allowed(&c, Some(WEB2), None, None));
        assert!(!allowed(&c, None, None, None));
    }

    /// `ports` scopes a rule: a path rule on the HTTP port leaves the pod's other ports (as
    /// opaque TCP) alone, a port-only rule applies to connections and requests alike, and an
    /// unknown port meets every deny (in doubt, closed) and no allow that names ports.
    #[test]
    fn ports_scope_a_rule_to_the_connections_for_them() {
        let mut admin = rule(false, &[], false, &["/admin", "/admin/*"], &[]);
        admin.ports = vec![8080];
        let mut metrics_from_ops = rule(true, &[OPS], false, &[], &[]);
        metrics_from_ops.ports = vec![9090];
        let mut web_on_8080 = rule(true, &[WEB], false, &[], &[]);
        web_on_8080.ports = vec![8080];
        let a = Authorization {
            rules: vec![admin, metrics_from_ops, web_on_8080],
        };
        fn get(path: &str) -> Option<(&str, &'static Method)> {
            Some((path, &Method::GET))
        }
        // The HTTP port: web, but not /admin.
        assert!(allowed(&a, Some(WEB), get("/orders"), Some(8080)));
        assert!(!allowed(&a, Some(WEB), get("/admin"), Some(8080)));
        // 9090 as opaque TCP: the /admin rule (8080 only) does not close it; ops may, web not.
        assert!(allowed(&a, Some(OPS), None, Some(9090)));
        assert!(!allowed(&a, Some(WEB), None, Some(9090)));
        // TCP on 8080: the path rule cannot be checked there, so it closes it.
        assert!(!allowed(&a, Some(WEB), None, Some(8080)));
        // Port unknown: every deny applies, no allow naming ports does.
        assert!(!allowed(&a, Some(WEB), get("/admin"), None));
        assert!(!allowed(&a, Some(WEB), get("/orders"), None));
        assert!(!allowed(&a, Some(OPS), None, None));
    }
}
