//! What users see when a config is wrong: every problem at once, one `file:line:col: path:
//! message` line each, sorted by position, and nothing reported twice.

mod common;

use common::{BASE, errors};
use remora_config::load_str;

#[test]
fn base_config_is_valid() {
    assert_eq!(errors(BASE), Vec::<String>::new());
}

#[test]
fn one_file_with_many_kinds_of_error() {
    let yaml = "\
listeners:
  - name: inbound
    adress: 127.0.0.1:15006
    routes:
      - name: api
        match:
          path: { regex: \"/api/(v1\" }
        backends:
          - cluster: api
            weight: heavy
          - cluster: apii
        timeout: 48h
      - name: canary
        backends:
          - cluster: api
            weight: 0
          - cluster: web
            weight: 0
  - name: db
    address: 127.0.0.1:15432
    protocol: tcp
    cluster: api
  - name: db-copy
    address: 127.0.0.1:15432
    protocol: tcp
    cluster: web
clusters:
  - name: api
    endpoints:
      - address: 127.0.0.1:8080
  - name: web
    connect_timeout: 2m
";
    let expected = [
        "t.yaml:3:5: listeners[0].adress: unknown field 'adress', expected one of: name, address, protocol, direction, routes, cluster, detect_timeout, rate_limit, mtls, authorization, transparent, opaque_ports, follow_original_port, passthrough (did you mean 'address'?)",
        "t.yaml:7:26: listeners[0].routes[0].match.path.regex: invalid regex: unclosed group",
        "t.yaml:10:21: listeners[0].routes[0].backends[0].weight: expected a whole number from 0 to 4294967295, found 'heavy'",
        "t.yaml:11:22: listeners[0].routes[0].backends[1].cluster: no cluster named 'apii' (clusters: api, web)",
        "t.yaml:12:18: listeners[0].routes[0].timeout: 48h is out of range; expected 1ms to 24h",
        "t.yaml:15:11: listeners[0].routes[1].backends: all backend weights are 0, so no request could be sent; give at least one backend a positive weight",
        "t.yaml:24:14: listeners[2].address: address 127.0.0.1:15432 is already used by listeners[1]",
        "t.yaml:32:22: clusters[1].connect_timeout: 2m is out of range; expected 1ms to 1m",
    ];
    let actual = errors(yaml);
    for (i, (a, e)) in actual.iter().zip(expected.iter()).enumerate() {
        assert_eq!(a, e, "line {}", i + 1);
    }
    assert_eq!(actual.len(), expected.len(), "{actual:#?}");
}

#[test]
fn diagnostics_display_one_per_line() {
    let err = load_str(
        "t.yaml",
        "runtime: {workers: 0}\nlimits: {max_request_headers: 0}\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.yaml:1:20: runtime.workers: 0 is out of range; expected 1 to 256\n\
         t.yaml:2:31: limits.max_request_headers: 0 is out of range; expected 1 to 10000"
    );
    let first = &err.0[0];
    assert_eq!((first.line, first.column), (1, 20));
    assert_eq!(first.path, "runtime.workers");
    assert_eq!(first.file, "t.yaml");
}

#[test]
fn diagnostics_are_sorted_by_position_not_by_kind() {
    // The semantic error (line 4) comes before the structural one (line 7) in the output,
    // although structure is checked first.
    let yaml = BASE.replace("cluster: api", "cluster: nope") + "    weight: 5\n";
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:4:18: listeners[0].routes[0].cluster: no cluster named 'nope' (clusters: api)",
            "t.yaml:7:5: clusters[0].weight: unknown field 'weight', expected one of: name, protocol, connect_timeout, idle_timeout, type, endpoints, dns, load_balancer, health_check, outlier_detection, retries, retry_budget, circuit_breakers, mtls",
        ]
    );
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        errors("listeners:\n  - address: [1\n"),
        ["t.yaml:2:14: invalid YAML: unclosed bracket '['"]
    );
}

#[test]
fn empty_file() {
    assert_eq!(
        errors("# nothing yet\n"),
        ["t.yaml:2:1: the config is empty; it needs at least 'listeners' and 'clusters'"]
    );
}

#[test]
fn unknown_field_with_and_without_suggestion() {
    let yaml = BASE.replace(
        "  - name: api\n",
        "  - name: api\n    protocl: http2\n    compress: true\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:5: clusters[0].protocl: unknown field 'protocl', expected one of: name, protocol, connect_timeout, idle_timeout, type, endpoints, dns, load_balancer, health_check, outlier_detection, retries, retry_budget, circuit_breakers, mtls (did you mean 'protocol'?)",
            "t.yaml:8:5: clusters[0].compress: unknown field 'compress', expected one of: name, protocol, connect_timeout, idle_timeout, type, endpoints, dns, load_balancer, health_check, outlier_detection, retries, retry_budget, circuit_breakers, mtls",
        ]
    );
}

#[test]
fn unknown_top_level_section() {
    let yaml = format!("{BASE}listener: []\n");
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:7:1: listener: unknown field 'listener', expected one of: admin, runtime, access_log, limits, listeners, clusters (did you mean 'listeners'?)"
        ]
    );
}

#[test]
fn wrong_types() {
    let yaml = "\
runtime: {workers: many}
access_log: {enabled: yes}
listeners: {}
clusters: [{name: api, endpoints: [{address: 127.0.0.1:1, weight: -2}]}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:1:20: runtime.workers: expected a whole number from 0 to 18446744073709551615, found 'many'",
            "t.yaml:2:23: access_log.enabled: expected true or false, found 'yes'",
            "t.yaml:3:12: listeners: expected a list, found a mapping",
            "t.yaml:4:67: clusters[0].endpoints[0].weight: -2 is out of range; expected 0 to 4294967295",
        ]
    );
}

#[test]
fn scalar_where_a_list_belongs_gets_a_hint() {
    let yaml = BASE.replace(
        "      - cluster: api\n",
        "      - cluster: api\n        match: {hosts: \"*\"}\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:5:24: listeners[0].routes[0].match.hosts: expected a list, found '*'; a list of one is written ['*']"
        ]
    );
}

#[test]
fn strings_take_numbers_as_written() {
    // `1.10` is a float to YAML; a header value is a string, and keeps its text.
    let yaml = BASE.replace(
        "      - cluster: api\n",
        "      - cluster: api\n        match: {headers: [{name: x-version, exact: 1.10}]}\n",
    );
    let config = load_str("t.yaml", &yaml).unwrap();
    let yaml = remora_config::to_yaml(&config);
    assert!(
        yaml.contains("exact: \"1.10\"") || yaml.contains("exact: '1.10'"),
        "{yaml}"
    );
}

#[test]
fn invalid_enum_value() {
    let yaml = BASE.replace(
        "    routes:",
        "    protocol: HTTP\n    direction: sideways\n    routes:",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:3:15: listeners[0].protocol: unknown value 'HTTP', expected one of: http, tcp, auto (did you mean 'http'?)",
            "t.yaml:4:16: listeners[0].direction: unknown value 'sideways', expected one of: inbound, outbound",
        ]
    );
}

#[test]
fn missing_required_fields_point_at_the_mapping() {
    let yaml = "\
admin: {}
listeners:
  - routes: [{cluster: api}]
clusters:
  - endpoints: []
  - name: api
    endpoints: [{weight: 1}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:1:8: admin: missing required field 'address'",
            "t.yaml:3:5: listeners[0]: missing required field 'address'",
            "t.yaml:5:5: clusters[0]: missing required field 'name'",
            "t.yaml:7:17: clusters[1].endpoints[0]: missing required field 'address'",
        ]
    );
}

#[test]
fn duplicate_keys() {
    let yaml = BASE.replace("  - name: api\n", "  - name: api\n    name: api2\n");
    assert_eq!(
        errors(&yaml),
        ["t.yaml:7:5: clusters[0].name: duplicate key 'name' (first written on line 6)"]
    );
}

#[test]
fn duplicate_names() {
    let yaml = "\
listeners:
  - name: web
    address: 127.0.0.1:8080
    routes:
      - name: a
        cluster: api
      - name: a
        cluster: api
      - cluster: api
      - name: route-2
        cluster: api
  - name: web
    address: 127.0.0.1:8081
    routes: [{cluster: api}]
clusters:
  - name: api
  - name: api
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:7:15: listeners[0].routes[1].name: duplicate route name 'a' (already used by listeners[0].routes[0])",
            "t.yaml:10:15: listeners[0].routes[3].name: duplicate route name 'route-2' (already used by listeners[0].routes[2])",
            "t.yaml:12:11: listeners[1].name: duplicate listener name 'web' (already used by listeners[0])",
            "t.yaml:17:11: clusters[1].name: duplicate cluster name 'api' (already used by clusters[0])",
        ]
    );
}

#[test]
fn address_collisions() {
    let yaml = "\
admin: {address: 127.0.0.1:9901}
listeners:
  - {address: 127.0.0.1:9901, routes: [{cluster: api}]}
  - {address: 0.0.0.0:8080, routes: [{cluster: api}]}
  - {address: 127.0.0.1:8080, routes: [{cluster: api}]}
  - {address: 127.0.0.1:0, routes: [{cluster: api}]}
  - {address: 127.0.0.1:0, routes: [{cluster: api}], name: second-port-zero}
  - {address: '[::1]:8080', routes: [{cluster: api}]}
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:3:15: listeners[0].address: address 127.0.0.1:9901 is already used by the admin listener",
            "t.yaml:5:15: listeners[2].address: address 127.0.0.1:8080 overlaps 0.0.0.0:8080 of listeners[1]: a wildcard address takes the port on every interface",
        ]
    );
}

#[test]
fn bad_addresses() {
    let yaml = "\
listeners:
  - {address: localhost:8080, routes: [{cluster: api}]}
  - {address: 127.0.0.1, routes: [{cluster: api}]}
clusters:
  - name: api
    endpoints:
      - address: api.internal:8080
      - address: 10.0.0.1:0
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:2:15: listeners[0].address: 'localhost:8080' is a hostname; a listener binds an IP address, e.g. 127.0.0.1:8080 (this machine only) or 0.0.0.0:8080 (every interface)",
            "t.yaml:3:15: listeners[1].address: '127.0.0.1' has no port; write IP:port, e.g. 127.0.0.1:8080",
            "t.yaml:7:18: clusters[0].endpoints[0].address: 'api.internal:8080' is a hostname; write IP:port, or resolve the name with `type: dns` and `dns: {name: ..., port: ...}` on the cluster",
            "t.yaml:8:18: clusters[0].endpoints[1].address: '10.0.0.1:0': port 0 cannot be connected to",
        ]
    );
}

#[test]
fn cluster_or_backends() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - name: both
        cluster: api
        backends: [{cluster: api}]
      - name: neither
        timeout: 1s
      - name: empty
        backends: []
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:6:19: listeners[0].routes[0].backends: set either 'cluster' or 'backends', not both",
            "t.yaml:7:9: listeners[0].routes[1]: missing 'cluster' or 'backends': where should matching requests go?",
            "t.yaml:10:19: listeners[0].routes[2].backends: empty backends list; add a backend, or send everything to one 'cluster'",
        ]
    );
}

#[test]
fn protocol_specific_fields() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    cluster: api
  - address: 127.0.0.1:8081
    routes: []
  - address: 127.0.0.1:5432
    protocol: tcp
    routes: [{cluster: api}]
  - address: 127.0.0.1:5433
    protocol: tcp
    cluster: missing
  - address: 127.0.0.1:8082
    routes: [{cluster: api}]
    cluster: api
    detect_timeout: 1s
  - address: 127.0.0.1:5434
    protocol: tcp
    cluster: api
    detect_timeout: 1s
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:2:5: listeners[0]: missing required field 'routes' (an http listener needs at least one route, unless it is transparent)",
            "t.yaml:3:14: listeners[0].cluster: 'cluster' is for tcp and auto listeners; an http listener sends requests through its routes (or set protocol: tcp)",
            "t.yaml:5:13: listeners[1].routes: an http listener needs at least one route",
            "t.yaml:6:5: listeners[2]: missing required field 'cluster' (a tcp listener forwards connections to one cluster)",
            "t.yaml:8:13: listeners[2].routes: routes are for http and auto listeners; a tcp listener forwards every connection to its 'cluster' (or set protocol: auto to route HTTP and forward the rest)",
            "t.yaml:11:14: listeners[3].cluster: no cluster named 'missing' (clusters: api)",
            "t.yaml:14:14: listeners[4].cluster: 'cluster' is for tcp and auto listeners; an http listener sends requests through its routes (or set protocol: auto to forward connections that are not HTTP to this cluster)",
            "t.yaml:15:21: listeners[4].detect_timeout: 'detect_timeout' only applies to protocol: auto; an http listener knows its protocol without waiting for the first bytes",
            "t.yaml:19:21: listeners[5].detect_timeout: 'detect_timeout' only applies to protocol: auto; a tcp listener knows its protocol without waiting for the first bytes",
        ]
    );
}

#[test]
fn opaque_ports_need_somewhere_to_go_and_real_ports() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes: [{cluster: api}]
    opaque_ports: [5432]
  - address: 127.0.0.1:8081
    protocol: auto
    routes: [{cluster: api}]
    opaque_ports: [5432]
  - address: 127.0.0.1:5432
    protocol: tcp
    cluster: api
    opaque_ports: [5432]
  - address: 127.0.0.1:8082
    protocol: auto
    routes: [{cluster: api}]
    cluster: api
    opaque_ports: [0, 5432, 70000, 5432]
  - address: 127.0.0.1:8083
    protocol: auto
    routes: [{cluster: api}]
    cluster: api
    opaque_ports: [3306, 25]
  - address: 127.0.0.1:8084
    routes: [{cluster: api}]
    transparent: true
    opaque_ports: [6379]
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:4:19: listeners[0].opaque_ports: an http listener has no cluster for opaque connections: set protocol: auto with a 'cluster', or transparent: true to send each to its destination's cluster",
            "t.yaml:8:19: listeners[1].opaque_ports: opaque connections go to the listener's 'cluster', and it has none; add one",
            "t.yaml:12:19: listeners[2].opaque_ports: a tcp listener forwards every connection as opaque TCP already; leave 'opaque_ports' out",
            "t.yaml:17:20: listeners[3].opaque_ports[0]: 0 is not a TCP port; expected 1 to 65535",
            "t.yaml:17:29: listeners[3].opaque_ports[2]: 70000 is not a TCP port; expected 1 to 65535",
            "t.yaml:17:36: listeners[3].opaque_ports[3]: port 5432 is listed twice",
        ]
    );
    // The valid ones, sorted.
    let valid = "\
listeners:
  - address: 127.0.0.1:8083
    protocol: auto
    routes: [{cluster: api}]
    cluster: api
    opaque_ports: [3306, 25]
  - address: 127.0.0.1:8084
    routes: [{cluster: api}]
    transparent: true
    opaque_ports: [6379]
clusters: [{name: api}]
";
    let config = remora_config::load_str("t.yaml", valid).unwrap();
    let ports: Vec<&[u16]> = config
        .listeners
        .iter()
        .map(|l| &l.opaque_ports[..])
        .collect();
    assert_eq!(ports, [&[25, 3306][..], &[6379][..]]);
}

#[test]
fn follow_original_port_needs_the_listeners_cluster() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes: [{cluster: api}]
    follow_original_port: true
  - address: 127.0.0.1:8081
    protocol: auto
    routes: [{cluster: api}]
    follow_original_port: true
  - address: 127.0.0.1:8082
    protocol: auto
    routes: [{cluster: api}]
    cluster: api
    follow_original_port: true
clusters: [{name: api}]
";
    let msg = "'follow_original_port' sends other ports to the host of the listener's 'cluster', \
               and it has none: use it on a tcp listener or an auto listener with a cluster";
    assert_eq!(
        errors(yaml),
        [
            format!("t.yaml:4:27: listeners[0].follow_original_port: {msg}"),
            format!("t.yaml:8:27: listeners[1].follow_original_port: {msg}"),
        ]
    );
}

#[test]
fn the_admin_status_listener_collides_with_nothing_and_round_trips() {
    let yaml = "\
admin: {address: 127.0.0.1:15000, status_address: 0.0.0.0:15000}
listeners:
  - {address: 0.0.0.0:15000, routes: [{cluster: api}]}
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:1:51: admin.status_address: address 0.0.0.0:15000 overlaps 127.0.0.1:15000 of the admin listener: a wildcard address takes the port on every interface",
            "t.yaml:3:15: listeners[0].address: address 0.0.0.0:15000 overlaps 127.0.0.1:15000 of the admin listener: a wildcard address takes the port on every interface",
        ]
    );
    let yaml = "\
admin: {address: 127.0.0.1:15000, status_address: 0.0.0.0:15020}
listeners:
  - {address: 127.0.0.1:15020, routes: [{cluster: api}]}
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:3:15: listeners[0].address: address 127.0.0.1:15020 overlaps 0.0.0.0:15020 of the admin status listener: a wildcard address takes the port on every interface"
        ]
    );
    let valid = "admin: {address: 127.0.0.1:15000, status_address: 0.0.0.0:15020}\n";
    let config = load_str("t.yaml", valid).unwrap();
    let admin = config.admin.as_ref().unwrap();
    assert_eq!(admin.status_address, Some("0.0.0.0:15020".parse().unwrap()));
    let again = load_str("emitted", &remora_config::to_yaml(&config)).unwrap();
    assert_eq!(
        again.admin, config.admin,
        "what /config shows loads back the same"
    );
}

#[test]
fn passthrough_is_for_transparent_listeners() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes: [{cluster: api}]
    passthrough: http
  - address: 127.0.0.1:8081
    routes: [{cluster: api}]
    transparent: true
    passthrough: ftp
clusters: [{name: api}]
";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "t.yaml:4:18: listeners[0].passthrough: 'passthrough' is for transparent listeners (transparent: true), whose connections to destinations outside the mesh it passes on"
    );
    assert!(
        errors[1].starts_with("t.yaml:8:18: listeners[1].passthrough: "),
        "{errors:?}"
    );
    let valid = "\
listeners:
  - address: 127.0.0.1:8081
    routes: [{cluster: api}]
    transparent: true
    passthrough: http
clusters: [{name: api}]
";
    let config = load_str("t.yaml", valid).unwrap();
    let remora_config::model::Passthrough::Http(template) = &config.listeners[0].passthrough else {
        panic!("{:?}", config.listeners[0].passthrough)
    };
    assert_eq!(template.name, "passthrough");
    assert!(template.endpoints.is_empty());
    let again = load_str("emitted", &remora_config::to_yaml(&config)).unwrap();
    assert_eq!(
        again.listeners[0].passthrough,
        config.listeners[0].passthrough
    );
}

#[test]
fn match_conditions() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: api
        match:
          hosts: [api.local:8080, 'a.*.com', '*', x.local]
          path: {prefix: api, exact: /x}
          method: 'NOT A METHOD'
          headers:
            - {name: 'x y', exact: a}
            - {name: x-a}
            - {name: x-b, present: false}
            - {name: x-c, regex: '(', exact: a}
            - {name: x-d, regex: '('}
      - cluster: api
        match: {hosts: [], path: {}}
      - cluster: api
        match: {path: {exact: no-slash}}
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:6:19: listeners[0].routes[0].match.hosts[0]: 'api.local:8080' has a port; host patterns match the host name only (the request's port is ignored), so remove the port",
            "t.yaml:6:35: listeners[0].routes[0].match.hosts[1]: 'a.*.com': a wildcard is only allowed as a leading '*.' (e.g. '*.example.com'), or '*' alone for any host",
            "t.yaml:6:46: listeners[0].routes[0].match.hosts: '*' matches every host, so the other patterns here have no effect; use '*' alone",
            "t.yaml:7:38: listeners[0].routes[0].match.path.exact: set only one of exact, prefix or regex",
            "t.yaml:8:19: listeners[0].routes[0].match.method: 'NOT A METHOD' is not an HTTP method",
            "t.yaml:10:22: listeners[0].routes[0].match.headers[0].name: 'x y' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            "t.yaml:11:15: listeners[0].routes[0].match.headers[1]: set one of exact, regex or present: true",
            "t.yaml:12:36: listeners[0].routes[0].match.headers[2].present: 'present: false' is not supported; a header condition matches when the header is there (write present: true)",
            "t.yaml:13:46: listeners[0].routes[0].match.headers[3].exact: set only one of exact, regex or present: true",
            "t.yaml:14:34: listeners[0].routes[0].match.headers[4].regex: invalid regex: unclosed group",
            "t.yaml:16:24: listeners[0].routes[1].match.hosts: an empty hosts list matches no request; use ['*'] for any host, or leave 'hosts' out",
            "t.yaml:16:34: listeners[0].routes[1].match.path: set one of exact, prefix or regex",
            "t.yaml:18:31: listeners[0].routes[2].match.path.exact: 'no-slash' must start with '/'",
        ]
    );
}

#[test]
fn wildcard_host_with_other_patterns() {
    let yaml = BASE.replace(
        "      - cluster: api\n",
        "      - cluster: api\n        match: {hosts: [a.local, '*']}\n",
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:5:34: listeners[0].routes[0].match.hosts: '*' matches every host, so the other patterns here have no effect; use '*' alone"
        ]
    );
}

#[test]
fn header_rewrites() {
    let yaml = "\
listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: api
        request_headers:
          remove: [Transfer-Encoding]
          set: {x-a: '1', X-A: '2', 'bad name': x}
          add: {x-b: \"line\\nbreak\", x-c: '1', x-c: '2'}
clusters: [{name: api}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:6:20: listeners[0].routes[0].request_headers.remove[0]: 'transfer-encoding' is set by the proxy for each connection and cannot be rewritten",
            "t.yaml:7:27: listeners[0].routes[0].request_headers.set.X-A: header 'x-a' is set twice; set it once",
            "t.yaml:7:37: listeners[0].routes[0].request_headers.set.bad name: 'bad name' is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            "t.yaml:8:22: listeners[0].routes[0].request_headers.add.x-b: 'line\\nbreak' is not a valid header value (no control characters or line breaks)",
            "t.yaml:8:47: listeners[0].routes[0].request_headers.add.x-c: duplicate key 'x-c' (first written on line 8)",
        ]
    );
}

#[test]
fn ranges_and_units() {
    let yaml = "\
limits:
  max_request_header_bytes: 1KiB
  max_uri_bytes: 10kbit
  header_read_timeout: 10
  idle_timeout: 1m30
  max_request_body_bytes: lots
listeners:
  - address: 127.0.0.1:8080
    routes: [{cluster: api, timeout: 0s}]
clusters: [{name: api, idle_timeout: 2d}]
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:2:29: limits.max_request_header_bytes: 1KiB is out of range; expected 8KiB to 1MiB",
            "t.yaml:3:18: limits.max_uri_bytes: unknown unit 'kbit' in '10kbit'; use B, KB, MB, GB, KiB, MiB or GiB",
            "t.yaml:4:24: limits.header_read_timeout: '10' has no unit; add one, e.g. '10s' or '10ms'",
            "t.yaml:5:17: limits.idle_timeout: '1m30': the number '30' has no unit; add one, e.g. '30s'",
            "t.yaml:6:27: limits.max_request_body_bytes: 'lots' is not a size; write bytes ('1024') or a number and a unit ('64KiB', '1.5MB')",
            "t.yaml:9:38: listeners[0].routes[0].timeout: 0s is out of range; expected 1ms to 24h",
            "t.yaml:10:38: clusters[0].idle_timeout: unknown unit 'd' in '2d'; use h, m, s, ms, us or ns",
        ]
    );
}

#[test]
fn drain_body_and_stream_ranges() {
    let yaml = format!(
        "\
runtime: {{drain_timeout: 2h}}
limits:
  request_body_timeout: 50ms
  max_concurrent_streams: 0
{BASE}"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:1:26: runtime.drain_timeout: 2h is out of range; expected 0s to 1h",
            "t.yaml:3:25: limits.request_body_timeout: 50ms is out of range; expected 100ms to 1h",
            "t.yaml:4:27: limits.max_concurrent_streams: 0 is out of range; expected 1 to 10000",
        ]
    );
    let yaml = format!(
        "\
runtime: {{drain_timeout: 30}}
limits: {{request_body_timeout: 1h1s, max_concurrent_streams: 10001}}
{BASE}"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:1:26: runtime.drain_timeout: '30' has no unit; add one, e.g. '30s' or '30ms'",
            "t.yaml:2:32: limits.request_body_timeout: 1h1s is out of range; expected 100ms to 1h",
            "t.yaml:2:62: limits.max_concurrent_streams: 10001 is out of range; expected 1 to 10000",
        ]
    );
}

#[test]
fn endpoint_problems() {
    let yaml = "\
listeners: []
clusters:
  - name: a
    endpoints:
      - {address: 10.0.0.1:80, weight: 0}
      - {address: 10.0.0.2:80, weight: 0}
  - name: b
    endpoints:
      - {address: 10.0.0.1:80}
      - {address: 10.0.0.1:80}
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:5:7: clusters[0].endpoints: all endpoint weights are 0, so no request could be sent; give at least one endpoint a positive weight",
            "t.yaml:10:19: clusters[1].endpoints[1].address: endpoint 10.0.0.1:80 is listed twice (also clusters[1].endpoints[0]); list it once with the combined weight",
        ]
    );
}

#[test]
fn unreadable_file() {
    let err =
        remora_config::load_file(std::path::Path::new("/nonexistent/remora.yaml")).unwrap_err();
    let d = &err.0[0];
    assert_eq!((d.line, d.column), (0, 0));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/remora.yaml:0:0: cannot read the config: "),
        "{err}"
    );
}
