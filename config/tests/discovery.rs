//! A cluster's `type: dns` and `dns:` section: DNS service discovery.

mod common;

use std::time::Duration;

use common::{BASE, errors, load};
use remora_config::model::{Discovery, DnsDiscovery, DnsRecord};
use remora_config::{defaults, load_str, to_yaml};

fn dns_of(yaml: &str, cluster: &str) -> DnsDiscovery {
    match &load(yaml).cluster(cluster).unwrap().discovery {
        Discovery::Dns(dns) => dns.clone(),
        Discovery::Static => panic!("{cluster} is static"),
    }
}

#[test]
fn dns_clusters_map_to_the_model() {
    let yaml = "\
listeners: []
clusters:
  - name: api
    type: dns
    dns: {name: api.shop.svc.cluster.local, port: 8080}
  - name: web
    type: dns
    dns:
      name: _http._tcp.web.local.
      record: srv
      min_ttl: 1s
      max_ttl: 10s
      servers: [127.0.0.1:5353, 10.96.0.10, '[::1]']
  - name: plain
    type: static
    endpoints: [{address: 10.0.0.1:80}]
";
    assert_eq!(
        dns_of(yaml, "api"),
        DnsDiscovery {
            name: "api.shop.svc.cluster.local".into(),
            record: DnsRecord::Ip { port: 8080 },
            min_ttl: defaults::DNS_MIN_TTL,
            max_ttl: defaults::DNS_MAX_TTL,
            servers: vec![],
        }
    );
    assert_eq!(
        dns_of(yaml, "web"),
        DnsDiscovery {
            name: "_http._tcp.web.local.".into(),
            record: DnsRecord::Srv,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(10),
            servers: vec![
                "127.0.0.1:5353".parse().unwrap(),
                "10.96.0.10:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
            ],
        }
    );
    let config = load(yaml);
    assert!(config.cluster("api").unwrap().endpoints.is_empty());
    assert_eq!(
        config.cluster("plain").unwrap().discovery,
        Discovery::Static
    );
    // Left out, a cluster is static.
    assert_eq!(
        load(BASE).cluster("api").unwrap().discovery,
        Discovery::Static
    );
    // And back: the dns section with every default, no endpoints, no port for SRV.
    let written = to_yaml(&config);
    assert!(written.contains("type: dns"), "{written}");
    assert!(written.contains("min_ttl: 5s"), "{written}");
    let again = load_str("to_yaml", &written).unwrap_or_else(|d| panic!("{d}\n{written}"));
    assert_eq!(to_yaml(&again), written);
    assert_eq!(again.clusters, config.clusters);
}

#[test]
fn type_and_dns_go_together() {
    let yaml = format!(
        "{BASE}    type: dns
  - name: b
    dns: {{name: b.local, port: 80}}
  - name: c
    type: dns
    dns: {{name: c.local, port: 80}}
    endpoints: [{{address: 10.0.0.1:80}}]
  - name: d
    type: dnss
"
    );
    assert_eq!(
        errors(&yaml),
        [
            "t.yaml:6:5: clusters[0]: missing required field 'dns' (type is dns: the name to resolve, e.g. {name: api.internal, port: 8080})",
            "t.yaml:9:10: clusters[1].dns: dns is only used with `type: dns`; add it, or remove dns",
            "t.yaml:13:16: clusters[2].endpoints: endpoints are not used with `type: dns`: DNS gives them; remove endpoints, or use `type: static`",
            "t.yaml:15:11: clusters[3].type: unknown value 'dnss', expected one of: static, dns (did you mean 'dns'?)",
        ]
    );
}

#[test]
fn bad_dns_sections() {
    let yaml = "\
listeners: []
clusters:
  - name: no-port
    type: dns
    dns: {name: a.local}
  - name: port-out-of-range
    type: dns
    dns: {name: a.local, port: 70000}
  - name: port-zero
    type: dns
    dns: {name: a.local, port: 0}
  - name: srv-with-port
    type: dns
    dns: {name: _x._tcp.a.local, record: srv, port: 80}
  - name: bad-names
    type: dns
    dns: {name: 'a.local:80', port: 80}
  - name: empty-label
    type: dns
    dns: {name: a..local, port: 80}
  - name: no-name
    type: dns
    dns: {port: 80}
  - name: ttls
    type: dns
    dns: {name: a.local, port: 80, min_ttl: 30s, max_ttl: 10s}
  - name: min-over-default-max
    type: dns
    dns: {name: a.local, port: 80, min_ttl: 2m}
  - name: ttl-range
    type: dns
    dns: {name: a.local, port: 80, min_ttl: 1ms}
  - name: servers
    type: dns
    dns: {name: a.local, port: 80, servers: [dns.local, '10.0.0.1:0', '1.2.3']}
";
    assert_eq!(
        errors(yaml),
        [
            "t.yaml:5:10: clusters[0].dns: missing required field 'port' (record a: the port the resolved addresses serve on, e.g. 8080)",
            "t.yaml:8:32: clusters[1].dns.port: 70000 is out of range; expected 1 to 65535",
            "t.yaml:11:32: clusters[2].dns.port: 0 is out of range; expected 1 to 65535",
            "t.yaml:14:53: clusters[3].dns.port: port is not used with `record: srv`: each SRV record carries its own; remove port",
            "t.yaml:17:17: clusters[4].dns.name: 'a.local:80' is not a DNS name: ':' is not allowed (the port goes in `port`)",
            "t.yaml:20:17: clusters[5].dns.name: 'a..local' is not a DNS name: labels between dots are 1 to 63 characters",
            "t.yaml:23:10: clusters[6].dns: missing required field 'name'",
            "t.yaml:26:59: clusters[7].dns.max_ttl: 10s is shorter than min_ttl (30s)",
            "t.yaml:29:45: clusters[8].dns.min_ttl: 2m is longer than max_ttl (1m, the default); raise max_ttl too",
            "t.yaml:32:45: clusters[9].dns.min_ttl: 1ms is out of range; expected 100ms to 24h",
            "t.yaml:35:46: clusters[10].dns.servers[0]: 'dns.local' is a hostname; a nameserver is an IP address (resolving its name would need a nameserver)",
            "t.yaml:35:57: clusters[10].dns.servers[1]: '10.0.0.1:0': port 0 cannot be queried",
            "t.yaml:35:71: clusters[10].dns.servers[2]: '1.2.3' is not IP or IP:port, e.g. 10.96.0.10:53",
        ]
    );
}
