//! `authorization:` and `mtls:`: what is accepted, how it reads back, and each mistake named
//! at its position.

mod common;

use common::{errors, load};
use remora_config::model::{IdentityPattern, MtlsMode, PathPattern};

const GOOD: &str = "\
listeners:
  - address: 127.0.0.1:8080
    mtls: strict
    authorization:
      rules:
        - action: deny
          to: { paths: [/admin, /admin/*], ports: [8080] }
        - action: allow
          from: { identities: [spiffe://cluster.local/ns/shop/sa/web, spiffe://cluster.local/ns/ops/*] }
          to: { methods: [get, POST] }
        - action: allow
          from: { unauthenticated: true }
          to: { paths: [/Health] }
    routes:
      - cluster: api
clusters:
  - name: api
    mtls: { identity: spiffe://cluster.local/ns/shop/sa/api }
";

#[test]
fn rules_load_as_written_and_read_back() {
    let c = load(GOOD);
    let l = &c.listeners[0];
    assert_eq!(l.mtls, MtlsMode::Strict);
    let rules = &l.authorization.as_ref().unwrap().rules;
    assert_eq!(rules.len(), 3);
    assert!(!rules[0].allow);
    assert_eq!(rules[0].ports, [8080]);
    assert_eq!(
        rules[0].paths,
        [
            PathPattern::Exact("/admin".into()),
            PathPattern::Prefix("/admin".into())
        ]
    );
    assert_eq!(
        rules[1].identities,
        [
            IdentityPattern::Exact("spiffe://cluster.local/ns/shop/sa/web".into()),
            IdentityPattern::Prefix("spiffe://cluster.local/ns/ops/".into())
        ]
    );
    assert_eq!(rules[1].methods, [http::Method::GET, http::Method::POST]);
    assert!(rules[2].unauthenticated);
    assert_eq!(
        rules[2].paths,
        [PathPattern::Exact("/health".into())],
        "lowercase"
    );
    assert_eq!(
        c.clusters[0].mtls.as_ref().unwrap().identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/api"
    );
    let again = load(&remora_config::to_yaml(&c));
    assert_eq!(remora_config::to_yaml(&again), remora_config::to_yaml(&c));
    assert_eq!(again.listeners[0].authorization, l.authorization);
}

#[test]
fn prefixes_match_whole_segments() {
    let ns = IdentityPattern::Prefix("spiffe://td/ns/shop/".into());
    assert!(ns.matches("spiffe://td/ns/shop/sa/web"));
    assert!(!ns.matches("spiffe://td/ns/shopping/sa/web"));
    let web = IdentityPattern::Exact("spiffe://td/ns/shop/sa/web".into());
    assert!(!web.matches("spiffe://td/ns/shop/sa/web2"));
    let admin = PathPattern::Prefix("/admin".into());
    assert!(admin.matches("/admin") && admin.matches("/admin/x") && admin.matches("/ADMIN/x"));
    assert!(!admin.matches("/administrator"));
}

#[test]
fn each_mistake_is_named_where_it_was_written() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    mtls: sometimes
    authorization:
      rules:
        - to: { paths: [admin, /a/*/b, /x/../y] }
        - action: allow
          from: { identities: [spiffe://td/ns/shop/sa/web/, spiffe://td/ns/*, web] }
          to: { methods: [\"G T\"], ports: [0, 8080, 8080] }
    routes:
      - cluster: api
clusters:
  - name: api
    mtls: { identity: spiffe://td/web }
";
    let found = errors(yaml);
    let joined = found.join("\n");
    for expected in [
        "t.yaml:3:11: listeners[0].mtls: unknown value 'sometimes', expected one of: strict, permissive, disabled",
        "t.yaml:6:11: listeners[0].authorization.rules[0]: missing required field 'action' (allow or deny)",
        "t.yaml:6:25: listeners[0].authorization.rules[0].to.paths[0]: 'admin' is not a path pattern",
        "t.yaml:6:32: listeners[0].authorization.rules[0].to.paths[1]: '/a/*/b' is not a path pattern",
        "t.yaml:6:40: listeners[0].authorization.rules[0].to.paths[2]: '/x/../y' is not a path pattern",
        "t.yaml:8:32: listeners[0].authorization.rules[1].from.identities[0]: 'spiffe://td/ns/shop/sa/web/' is not spiffe://",
        "t.yaml:8:61: listeners[0].authorization.rules[1].from.identities[1]: 'spiffe://td/ns/*' is not a trust domain or namespace prefix",
        "t.yaml:8:79: listeners[0].authorization.rules[1].from.identities[2]: 'web' is not a spiffe:// URI",
        "t.yaml:9:27: listeners[0].authorization.rules[1].to.methods[0]: 'G T' is not an HTTP method",
        "t.yaml:9:43: listeners[0].authorization.rules[1].to.ports[0]: 0 is not a TCP port; expected 1 to 65535",
        "t.yaml:9:52: listeners[0].authorization.rules[1].to.ports[2]: port 8080 is listed twice",
        "t.yaml:14:23: clusters[0].mtls.identity: 'spiffe://td/web' is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
}
