//! `load_balancer:` under a cluster: the four policies, the settings each takes, and the keys
//! consistent hashing uses.

mod common;

use std::time::Duration;

use common::{BASE, errors};
use remora_config::model::{Config, HashKey, LbPolicy, LoadBalancer, PeakEwma};
use remora_config::{defaults, load_str, schema, to_yaml};

fn load(yaml: &str) -> Config {
    load_str("t.yaml", yaml).unwrap_or_else(|d| panic!("{d}"))
}

/// BASE with `lb` (indented as a cluster's fields) added to cluster `api`.
fn with_lb(lb: &str) -> String {
    format!("{BASE}    load_balancer:\n{lb}")
}

const POLICIES: &str = "\
listeners: []
clusters:
  - name: rr
    load_balancer: {policy: round_robin, panic_threshold: 0%}
  - name: lr
    load_balancer: {policy: least_request, choice_count: 3, peak_ewma: {decay: 5s}}
  - name: lr-default
    load_balancer: {policy: least_request, peak_ewma: true}
  - name: ring
    load_balancer:
      policy: ring_hash
      minimum_ring_size: 4096
      hash_on:
        - header: X-User-Id
        - cookie: {name: sticky, ttl: 1h, path: /}
        - cookie: {name: session}
        - source_ip: true
        - path: true
        - query_parameter: user
      panic_threshold: 12.5%
  - name: maglev
    load_balancer: {policy: maglev, table_size: 101, hash_on: [{source_ip: true}]}
";

#[test]
fn policies_map_to_the_model() {
    let config = load(POLICIES);
    let lb = |name: &str| config.cluster(name).unwrap().load_balancer.clone();
    assert_eq!(
        lb("rr"),
        LoadBalancer {
            policy: LbPolicy::RoundRobin,
            panic_threshold: 0.0
        }
    );
    assert_eq!(
        lb("lr").policy,
        LbPolicy::LeastRequest {
            choice_count: 3,
            peak_ewma: Some(PeakEwma {
                decay: Duration::from_secs(5),
                default_rtt: defaults::PEAK_EWMA_DEFAULT_RTT,
            }),
        }
    );
    // `peak_ewma: true` is the defaults, as is choice_count left out.
    assert_eq!(
        lb("lr-default").policy,
        LbPolicy::LeastRequest {
            choice_count: defaults::CHOICE_COUNT,
            peak_ewma: Some(PeakEwma::default()),
        }
    );
    let ring = lb("ring");
    assert_eq!(ring.panic_threshold, 0.125);
    let LbPolicy::RingHash {
        minimum_ring_size,
        hash_on,
    } = &ring.policy
    else {
        panic!("not ring_hash: {:?}", ring.policy)
    };
    assert_eq!(*minimum_ring_size, 4096);
    assert_eq!(
        *hash_on,
        [
            HashKey::Header(http::HeaderName::from_static("x-user-id")),
            HashKey::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(3600)),
                path: Some("/".into()),
            },
            HashKey::Cookie {
                name: "session".into(),
                ttl: None,
                path: None,
            },
            HashKey::SourceIp,
            HashKey::Path,
            HashKey::QueryParameter("user".into()),
        ]
    );
    assert_eq!(
        lb("maglev").policy,
        LbPolicy::Maglev {
            table_size: 101,
            hash_on: vec![HashKey::SourceIp],
        }
    );
}

#[test]
fn defaults_fill_every_left_out_setting() {
    let lb = |yaml: &str| load(yaml).cluster("api").unwrap().load_balancer.clone();
    let default = lb(BASE);
    assert_eq!(default, LoadBalancer::default());
    assert_eq!(default.policy, defaults::LB_POLICY);
    assert_eq!(default.panic_threshold, defaults::PANIC_THRESHOLD);
    let least = lb(&with_lb("      policy: least_request\n"));
    assert_eq!(
        least.policy,
        LbPolicy::LeastRequest {
            choice_count: defaults::CHOICE_COUNT,
            peak_ewma: None,
        }
    );
    // `peak_ewma: false` is the same as leaving it out.
    let off = lb(&with_lb(
        "      policy: least_request\n      peak_ewma: false\n",
    ));
    assert_eq!(off, least);
    let ring = lb(&with_lb(
        "      policy: ring_hash\n      hash_on: [{path: true}]\n",
    ));
    assert!(matches!(
        ring.policy,
        LbPolicy::RingHash { minimum_ring_size, .. } if minimum_ring_size == defaults::MINIMUM_RING_SIZE
    ));
    let maglev = lb(&with_lb(
        "      policy: maglev\n      hash_on: [{path: true}]\n",
    ));
    assert!(matches!(
        maglev.policy,
        LbPolicy::Maglev { table_size, .. } if table_size == defaults::MAGLEV_TABLE_SIZE
    ));
}

#[test]
fn load_balancers_round_trip_through_to_yaml() {
    let config = load(POLICIES);
    let yaml = to_yaml(&config);
    for expected in [
        "policy: round_robin",
        "panic_threshold: 0%",
        "choice_count: 3",
        "decay: 5s",
        "default_rtt: 30ms",
        "minimum_ring_size: 4096",
        "- header: x-user-id",
        "ttl: 1h",
        "- source_ip: true",
        "- path: true",
        "- query_parameter: user",
        "panic_threshold: 12.5%",
        "table_size: 101",
    ] {
        assert!(
            yaml.contains(expected),
            "{expected:?} missing from:\n{yaml}"
        );
    }
    let again = load_str("to_yaml", &yaml).unwrap_or_else(|d| panic!("{d}\n{yaml}"));
    assert_eq!(to_yaml(&again), yaml);
    for (a, b) in config.clusters.iter().zip(&again.clusters) {
        assert_eq!(a.load_balancer, b.load_balancer, "{}", a.name);
    }
}

#[test]
fn to_yaml_writes_the_default_load_balancer_and_only_the_policys_settings() {
    let yaml = to_yaml(&load(BASE));
    assert!(
        yaml.contains(
            "    load_balancer:\n      policy: round_robin\n      panic_threshold: 50%\n"
        ),
        "{yaml}"
    );
    // least_request without peak_ewma says it is off; the other policies' settings are
    // never written, since they would not load back.
    let yaml = to_yaml(&load(&with_lb("      policy: least_request\n")));
    assert!(
        yaml.contains("policy: least_request\n      choice_count: 2\n      peak_ewma: false\n"),
        "{yaml}"
    );
    for absent in ["minimum_ring_size", "table_size", "hash_on"] {
        assert!(!yaml.contains(absent), "{absent} in:\n{yaml}");
    }
}

#[test]
fn load_balancer_problems() {
    let yaml = "\
listeners: []
clusters:
  - name: default-policy
    load_balancer:
      choice_count: 3
      hash_on: [{header: x-user}]
      panic_threshold: 150%
  - name: ring
    load_balancer:
      policy: ring_hash
      table_size: 1000
      minimum_ring_size: 0
  - name: maglev
    load_balancer:
      policy: maglev
      table_size: 65536
      peak_ewma: true
      hash_on:
        - header: 'x y'
        - cookie: {name: 'a;b', path: /}
        - source_ip: false
        - {path: true, query_parameter: q}
        - {}
        - query_parameter: 'a=b'
        - cookie: {name: s, ttl: 0s, path: nope}
        - header: X-User
        - header: x-user
  - name: least
    load_balancer:
      policy: least_request
      choice_count: 1
      peak_ewma: {decay: 20m, default_rtt: 0s, alpha: 1}
      minimum_ring_size: 1024
      panic_threshold: 50
  - name: least-yes
    load_balancer: {policy: least_request, peak_ewma: yes}
  - name: empty-keys
    load_balancer: {policy: ring_hash, hash_on: []}
";
    let expected = [
        "t.yaml:5:21: clusters[0].load_balancer.choice_count: 'choice_count' only applies to policy: least_request; the default policy, round_robin, does not compare how loaded endpoints are",
        "t.yaml:6:16: clusters[0].load_balancer.hash_on: 'hash_on' only applies to policy: ring_hash or maglev; the default policy, round_robin, does not hash requests",
        "t.yaml:7:24: clusters[0].load_balancer.panic_threshold: 150% is out of range; expected 0% to 100%",
        "t.yaml:10:7: clusters[1].load_balancer: missing required field 'hash_on' (ring_hash sends requests with the same key to the same endpoint; say what the key is made of)",
        "t.yaml:11:19: clusters[1].load_balancer.table_size: 'table_size' only applies to policy: maglev; ring_hash's ring is sized by 'minimum_ring_size'",
        "t.yaml:12:26: clusters[1].load_balancer.minimum_ring_size: 0 is out of range; expected 1 to 8388608",
        "t.yaml:16:19: clusters[2].load_balancer.table_size: 65536 is not prime, and a Maglev table size must be prime; the nearest prime is 65537",
        "t.yaml:17:18: clusters[2].load_balancer.peak_ewma: 'peak_ewma' only applies to policy: least_request; maglev does not compare how loaded endpoints are",
        "t.yaml:19:19: clusters[2].load_balancer.hash_on[0].header: 'x y' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        "t.yaml:20:26: clusters[2].load_balancer.hash_on[1].cookie.name: 'a;b' is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only)",
        "t.yaml:20:39: clusters[2].load_balancer.hash_on[1].cookie.path: 'path' only applies to a cookie the proxy sets, which needs 'ttl'; without it the client's own cookie is hashed, whatever its path",
        "t.yaml:21:22: clusters[2].load_balancer.hash_on[2].source_ip: 'source_ip: false' hashes nothing; write source_ip: true, or remove this entry",
        "t.yaml:22:41: clusters[2].load_balancer.hash_on[3].query_parameter: set only one of header, cookie, source_ip: true, path: true or query_parameter",
        "t.yaml:23:11: clusters[2].load_balancer.hash_on[4]: set one of header, cookie, source_ip: true, path: true or query_parameter",
        "t.yaml:24:28: clusters[2].load_balancer.hash_on[5].query_parameter: 'a=b' is not a valid query parameter name (no '&', '=', '#', '?' or spaces)",
        "t.yaml:25:34: clusters[2].load_balancer.hash_on[6].cookie.ttl: 0s is out of range; expected 1s to 9600h",
        "t.yaml:25:44: clusters[2].load_balancer.hash_on[6].cookie.path: 'nope' must start with '/'",
        "t.yaml:27:11: clusters[2].load_balancer.hash_on[8]: header 'x-user' is listed twice (also clusters[2].load_balancer.hash_on[7]); list it once",
        "t.yaml:31:21: clusters[3].load_balancer.choice_count: 1 is out of range; expected 2 to 100",
        "t.yaml:32:26: clusters[3].load_balancer.peak_ewma.decay: 20m is out of range; expected 1s to 10m",
        "t.yaml:32:44: clusters[3].load_balancer.peak_ewma.default_rtt: 0s is out of range; expected 1ms to 10s",
        "t.yaml:32:48: clusters[3].load_balancer.peak_ewma.alpha: unknown field 'alpha', expected one of: decay, default_rtt",
        "t.yaml:33:26: clusters[3].load_balancer.minimum_ring_size: 'minimum_ring_size' only applies to policy: ring_hash; least_request has no hash ring",
        "t.yaml:34:24: clusters[3].load_balancer.panic_threshold: '50' has no '%'; write a percentage, e.g. '10%'",
        "t.yaml:36:55: clusters[4].load_balancer.peak_ewma: expected true, false or a mapping of settings, found 'yes'",
        "t.yaml:38:49: clusters[5].load_balancer.hash_on: an empty hash_on list gives nothing to hash; list at least one of header, cookie, source_ip, path or query_parameter",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn settings_of_another_policy_name_their_policy() {
    let yaml = "\
listeners: []
clusters:
  - name: a
    load_balancer: {policy: maglev, minimum_ring_size: 10, hash_on: [{path: true}]}
  - name: b
    load_balancer: {policy: round_robin, table_size: 101}
  - name: c
    load_balancer: {policy: least_request, hash_on: [{path: true}]}
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:4:56: clusters[0].load_balancer.minimum_ring_size: 'minimum_ring_size' only applies to policy: ring_hash; maglev's table is sized by 'table_size'",
            "t.yaml:6:54: clusters[1].load_balancer.table_size: 'table_size' only applies to policy: maglev; round_robin has no lookup table",
            "t.yaml:8:53: clusters[2].load_balancer.hash_on: 'hash_on' only applies to policy: ring_hash or maglev; least_request does not hash requests",
        ]
    );
}

#[test]
fn range_bounds_are_accepted() {
    for lb in [
        "{policy: least_request, choice_count: 2}",
        "{policy: least_request, choice_count: 100}",
        "{policy: least_request, peak_ewma: {decay: 1s, default_rtt: 1ms}}",
        "{policy: least_request, peak_ewma: {decay: 10m, default_rtt: 10s}}",
        "{policy: ring_hash, minimum_ring_size: 1, hash_on: [{path: true}]}",
        "{policy: ring_hash, minimum_ring_size: 8388608, hash_on: [{path: true}]}",
        "{policy: maglev, table_size: 101, hash_on: [{path: true}]}",
        "{policy: maglev, table_size: 5000011, hash_on: [{path: true}]}",
        "{panic_threshold: 0%}",
        "{panic_threshold: 100%}",
        "{policy: ring_hash, hash_on: [{cookie: {name: c, ttl: 1s}}]}",
        "{policy: ring_hash, hash_on: [{cookie: {name: c, ttl: 9600h}}]}",
    ] {
        load(&format!("{BASE}    load_balancer: {lb}\n"));
    }
    let yaml = format!(
        "{BASE}    load_balancer: {{policy: maglev, table_size: 5000012, hash_on: [{{path: true}}]}}\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:49: clusters[0].load_balancer.table_size: 5000012 is out of range; expected 101 to 5000011"
        ]
    );
}

#[test]
fn schema_knows_load_balancers() {
    let schema = schema();
    let defs = &schema["definitions"];
    let cluster = &defs["Cluster"]["properties"];
    for field in ["load_balancer", "health_check", "outlier_detection"] {
        assert!(cluster[field]["description"].is_string(), "{field}");
    }
    let lb = &defs["LoadBalancer"];
    let props = &lb["properties"];
    assert_eq!(props["policy"]["default"], "round_robin");
    assert_eq!(props["panic_threshold"]["default"], "50%");
    assert_eq!(props["choice_count"]["default"], 2);
    assert_eq!(props["choice_count"]["minimum"], 2);
    assert_eq!(props["choice_count"]["maximum"], 100);
    assert_eq!(props["peak_ewma"]["default"], false);
    assert_eq!(props["minimum_ring_size"]["default"], 1024);
    assert_eq!(props["table_size"]["default"], 65537);
    assert_eq!(props["table_size"]["maximum"], 5_000_011);
    for field in [
        "policy",
        "choice_count",
        "peak_ewma",
        "minimum_ring_size",
        "table_size",
        "hash_on",
        "panic_threshold",
    ] {
        assert!(props[field]["description"].is_string(), "{field}");
    }
    assert_eq!(
        defs["LbPolicy"]["enum"],
        serde_json::json!(["round_robin", "least_request", "ring_hash", "maglev"])
    );
    assert_eq!(
        lb["dependencies"]["table_size"]["properties"]["policy"]["const"],
        "maglev"
    );
    assert_eq!(lb["then"]["required"], serde_json::json!(["hash_on"]));
    assert_eq!(defs["PeakEwma"]["properties"]["decay"]["default"], "10s");
    assert_eq!(
        defs["PeakEwma"]["properties"]["default_rtt"]["default"],
        "30ms"
    );
    assert_eq!(defs["HashKey"]["maxProperties"], 1);
    assert_eq!(defs["HashCookie"]["required"], serde_json::json!(["name"]));
}
