//! No cascades: one mistake gives one message, not a message for everything that depends on
//! the mistaken value.

mod common;

use common::{BASE, errors};

#[test]
fn a_route_to_a_broken_cluster_is_not_reported_again() {
    let yaml = BASE.replace(
        "  - name: api\n",
        "  - name: api\n    connect_timeout: soon\n    endpoints: 5\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:22: clusters[0].connect_timeout: 'soon' is not a duration; write e.g. '250ms', '1.5s' or '1m30s'",
            "t.yaml:8:16: clusters[0].endpoints: expected a list, found '5'; a list of one is written ['5']",
        ]
    );
}

#[test]
fn a_misspelled_required_field_is_not_also_missing() {
    let yaml = BASE
        .replace("address:", "adress:")
        .replace("      - cluster:", "      - clustr:");
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:2:5: listeners[0].adress: unknown field 'adress', expected one of: name, address, protocol, direction, routes, cluster, detect_timeout, rate_limit, mtls, authorization, transparent, opaque_ports, follow_original_port, passthrough (did you mean 'address'?)",
            "t.yaml:4:9: listeners[0].routes[0].clustr: unknown field 'clustr', expected one of: name, match, cluster, backends, timeout, request_headers, response_headers, retries, fault, rate_limit, authorization (did you mean 'cluster'?)",
        ]
    );
}

#[test]
fn a_bad_weight_does_not_also_make_weights_all_zero() {
    let yaml = BASE.replace(
        "      - cluster: api\n",
        "      - backends: [{cluster: api, weight: 0}, {cluster: api2, weight: lots}]\n",
    ) + "  - name: api2\n";
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:4:71: listeners[0].routes[0].backends[1].weight: expected a whole number from 0 to 4294967295, found 'lots'"
        ]
    );
}

#[test]
fn a_bad_protocol_does_not_also_demand_routes_or_a_cluster() {
    let yaml = BASE.replace("    routes:", "    protocol: udp\n    routes:");
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:3:15: listeners[0].protocol: unknown value 'udp', expected one of: http, tcp, auto"
        ]
    );
}

#[test]
fn a_bad_protocol_does_not_also_refuse_detect_timeout() {
    // Whether detect_timeout belongs depends on the protocol, which is unknown; its range is
    // still checked.
    let yaml = BASE.replace(
        "    routes:",
        "    protocol: atuo\n    detect_timeout: 1s\n    routes:",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:3:15: listeners[0].protocol: unknown value 'atuo', expected one of: http, tcp, auto (did you mean 'auto'?)"
        ]
    );
    let yaml = BASE.replace(
        "    routes:",
        "    protocol: udp\n    detect_timeout: 0s\n    routes:",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:3:15: listeners[0].protocol: unknown value 'udp', expected one of: http, tcp, auto",
            "t.yaml:4:21: listeners[0].detect_timeout: 0s is out of range; expected 10ms to 1m",
        ]
    );
}

#[test]
fn one_bad_list_element_does_not_hide_the_others() {
    let yaml = "\
listeners:
  - 5
  - address: 127.0.0.1:1
    routes: [{cluster: nope}]
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:2:5: listeners[0]: expected a mapping with fields name, address, protocol, direction, routes, cluster, detect_timeout, rate_limit, mtls, authorization, transparent, opaque_ports, follow_original_port, passthrough; found '5'",
            "t.yaml:4:24: listeners[1].routes[0].cluster: no cluster named 'nope' (clusters: api)",
        ]
    );
}

#[test]
fn aliases_report_at_the_use_site_once() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:1
    routes:
      - &r {cluster: nope}
      - *r
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:4:22: listeners[0].routes[0].cluster: no cluster named 'nope' (clusters: api)",
            "t.yaml:5:9: listeners[0].routes[1].cluster: no cluster named 'nope' (clusters: api)",
        ]
    );
}

#[test]
fn a_bad_lb_policy_does_not_also_demand_or_refuse_settings() {
    // Which settings belong depends on the policy, which is unknown; their values are still
    // checked.
    let yaml = format!(
        "{BASE}    load_balancer: {{policy: random, choice_count: 0, hash_on: [{{path: true}}]}}\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:29: clusters[0].load_balancer.policy: unknown value 'random', expected one of: round_robin, least_request, ring_hash, maglev",
            "t.yaml:7:51: clusters[0].load_balancer.choice_count: 0 is out of range; expected 2 to 100",
        ]
    );
}

#[test]
fn a_misspelled_hash_on_is_not_also_missing() {
    let yaml =
        format!("{BASE}    load_balancer: {{policy: ring_hash, hashon: [{{path: true}}]}}\n");
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:40: clusters[0].load_balancer.hashon: unknown field 'hashon', expected one of: policy, choice_count, peak_ewma, minimum_ring_size, table_size, hash_on, panic_threshold (did you mean 'hash_on'?)"
        ]
    );
}

#[test]
fn a_broken_health_check_is_still_a_health_check() {
    // require_health_check_to_return needs a health_check; a broken one is reported alone.
    let yaml = format!(
        "{BASE}    health_check: {{http: {{pth: /healthz}}}}\n    outlier_detection: {{require_health_check_to_return: true}}\n"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:27: clusters[0].health_check.http.pth: unknown field 'pth', expected one of: path, host, expected_statuses (did you mean 'path'?)"
        ]
    );
}
