//! Model -> YAML: the effective config, with every default written out.
//!
//! What `remora-proxy --print-config` and the admin `/config` page show, so that what a user
//! reads is what runs. Loading the output gives the same model back.

use crate::model::{
    self, HashKey, HeaderValueMatch, HostMatch, LbPolicy, LogTarget, PathMatch, RetryOn,
};
use crate::raw::{
    self, ByteSize, DurationValue, Field, HeaderMap, Item, OneOrMany, Percent, Rate, SizeLimit,
    StatusRange, Timestamp, Toggle,
};

/// The config as YAML. Values that have a default are always written; optional features that
/// are off (no admin listener, no header rewrites, no match conditions beyond `hosts`, no
/// health check, no fault or rate limit, a route without retries of its own) are left out,
/// because there is no value to show for them. Features that are on by default say so when
/// turned off (`outlier_detection: {enabled: false}`).
pub(crate) fn to_yaml(config: &model::Config) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    // Indent list items under their key, as in the examples users copy from.
    options.compact_list_indent = false;
    // The raw types hold only strings, numbers, booleans, lists and string-keyed maps, which
    // YAML can always represent.
    serde_saphyr::to_string_with_options(&config_to_raw(config), options)
        .expect("raw config always serializes")
}

pub(crate) fn config_to_raw(c: &model::Config) -> raw::Config {
    raw::Config {
        admin: c.admin.as_ref().map(|a| {
            Item::new(raw::Admin {
                address: some(a.address.to_string()),
                status_address: a.status_address.map(|s| Item::new(s.to_string())),
            })
        }),
        runtime: some(runtime(&c.runtime)),
        access_log: some(access_log(&c.access_log)),
        limits: some(limits(&c.limits)),
        listeners: Some(list(&c.listeners, listener)),
        clusters: Some(list(&c.clusters, cluster)),
    }
}

fn some<T>(value: T) -> Field<T> {
    Some(Item::new(value))
}

fn list<M, R>(items: &[M], convert: impl Fn(&M) -> R) -> raw::List<R> {
    Item::new(items.iter().map(|m| Item::new(convert(m))).collect())
}

pub(crate) fn runtime(r: &model::Runtime) -> raw::Runtime {
    raw::Runtime {
        workers: some(r.workers),
        drain_timeout: some(DurationValue(r.drain_timeout)),
    }
}

pub(crate) fn access_log(a: &model::AccessLog) -> raw::AccessLog {
    let path = match &a.target {
        LogTarget::Stdout => "stdout".to_owned(),
        LogTarget::Stderr => "stderr".to_owned(),
        // A file literally named `stdout` must not read back as standard output.
        LogTarget::File(p) if p.as_os_str() == "stdout" || p.as_os_str() == "stderr" => {
            format!("./{}", p.display())
        }
        LogTarget::File(p) => p.display().to_string(),
    };
    raw::AccessLog {
        enabled: some(a.enabled),
        path: some(path),
    }
}

pub(crate) fn limits(l: &model::Limits) -> raw::Limits {
    raw::Limits {
        max_request_header_bytes: some(ByteSize(l.max_request_header_bytes as u64)),
        max_request_headers: some(l.max_request_headers),
        max_uri_bytes: some(ByteSize(l.max_uri_bytes as u64)),
        max_request_body_bytes: some(match l.max_request_body_bytes {
            None => SizeLimit::Unlimited,
            Some(n) => SizeLimit::Bytes(n),
        }),
        header_read_timeout: some(DurationValue(l.header_read_timeout)),
        idle_timeout: some(DurationValue(l.idle_timeout)),
        request_body_timeout: some(DurationValue(l.request_body_timeout)),
        max_concurrent_streams: some(l.max_concurrent_streams),
    }
}

fn listener(l: &model::Listener) -> raw::Listener {
    let (protocol, routes, cluster, detect_timeout) = match &l.kind {
        model::ListenerKind::Http { routes } => (
            raw::ListenerProtocol::Http,
            Some(list(routes, route)),
            None,
            None,
        ),
        model::ListenerKind::Tcp { cluster } => (
            raw::ListenerProtocol::Tcp,
            None,
            some(cluster.clone()),
            None,
        ),
        model::ListenerKind::Auto {
            routes,
            cluster,
            detect_timeout,
        } => (
            raw::ListenerProtocol::Auto,
            Some(list(routes, route)),
            // No cluster: connections that are not HTTP are closed; nothing to write.
            cluster.clone().map(Item::new),
            some(DurationValue(*detect_timeout)),
        ),
    };
    raw::Listener {
        name: some(l.name.clone()),
        address: some(l.address.to_string()),
        protocol: some(protocol),
        direction: some(match l.direction {
            model::Direction::Inbound => raw::Direction::Inbound,
            model::Direction::Outbound => raw::Direction::Outbound,
        }),
        routes,
        cluster,
        detect_timeout,
        rate_limit: l.rate_limit.as_ref().map(|r| Item::new(rate_limit(r))),
        mtls: match l.mtls {
            model::MtlsMode::Disabled => None,
            model::MtlsMode::Strict => some(raw::MtlsMode::Strict),
            model::MtlsMode::Permissive => some(raw::MtlsMode::Permissive),
        },
        authorization: l
            .authorization
            .as_ref()
            .map(|a| Item::new(authorization(a))),
        transparent: l.transparent.then(|| Item::new(true)),
        follow_original_port: l.follow_original_port.then(|| Item::new(true)),
        passthrough: match l.passthrough {
            model::Passthrough::Tcp => None,
            model::Passthrough::Http(_) => some(raw::Passthrough::Http),
        },
        opaque_ports: (!l.opaque_ports.is_empty()).then(|| {
            Item::new(
                l.opaque_ports
                    .iter()
                    .map(|&p| Item::new(u32::from(p)))
                    .collect(),
            )
        }),
    }
}

pub(crate) fn route(r: &model::Route) -> raw::Route {
    let rewrite = |h: &model::HeaderRewrite| (!h.is_empty()).then(|| Item::new(header_rewrite(h)));
    raw::Route {
        name: some(r.name.clone()),
        matches: some(route_match(&r.matches)),
        cluster: None,
        backends: Some(list(&r.backends, |b| raw::Backend {
            cluster: some(b.cluster.clone()),
            weight: some(b.weight),
        })),
        timeout: some(DurationValue(r.timeout)),
        request_headers: rewrite(&r.request_headers),
        response_headers: rewrite(&r.response_headers),
        retries: r.retries.as_ref().map(|p| Item::new(retry_policy(p))),
        fault: r.fault.as_ref().map(|f| Item::new(fault(f))),
        rate_limit: r.rate_limit.as_ref().map(|l| Item::new(rate_limit(l))),
        authorization: r
            .authorization
            .as_ref()
            .map(|a| Item::new(authorization(a))),
    }
}

fn route_match(m: &model::RouteMatch) -> raw::RouteMatch {
    let hosts: Vec<String> = if m.hosts.is_empty() {
        vec!["*".to_owned()]
    } else {
        m.hosts
            .iter()
            .map(|h| match h {
                HostMatch::Exact(host) => host.clone(),
                HostMatch::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect()
    };
    raw::RouteMatch {
        hosts: Some(list(&hosts, String::clone)),
        path: m.path.as_ref().map(|p| Item::new(path_match(p))),
        method: m
            .method
            .as_ref()
            .map(|method| Item::new(method.to_string())),
        headers: (!m.headers.is_empty()).then(|| list(&m.headers, header_match)),
    }
}

fn path_match(p: &PathMatch) -> raw::PathMatch {
    let mut raw = raw::PathMatch {
        exact: None,
        prefix: None,
        regex: None,
    };
    match p {
        PathMatch::Exact(s) => raw.exact = some(s.clone()),
        PathMatch::Prefix(s) => raw.prefix = some(s.clone()),
        PathMatch::Regex(re) => raw.regex = some(unanchored(re)),
    }
    raw
}

fn header_match(h: &model::HeaderMatch) -> raw::HeaderMatch {
    let mut raw = raw::HeaderMatch {
        name: some(h.name.to_string()),
        exact: None,
        regex: None,
        present: None,
    };
    match &h.value {
        HeaderValueMatch::Exact(v) => raw.exact = some(value_text(v)),
        HeaderValueMatch::Regex(re) => raw.regex = some(unanchored(re)),
        HeaderValueMatch::Present => raw.present = some(true),
    }
    raw
}

/// The pattern as the user wrote it: validation wraps it in `^(?:...)$`.
fn unanchored(re: &regex::Regex) -> String {
    let s = re.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
        .to_owned()
}

/// Header values come from YAML strings, so they are UTF-8.
fn value_text(v: &http::HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn header_rewrite(h: &model::HeaderRewrite) -> raw::HeaderRewrite {
    let set = h
        .set
        .iter()
        .map(|(n, v)| (Item::new(n.to_string()), Item::new(value_text(v))));
    // Values added to one header are written as one list, in order.
    let mut add: Vec<(String, Vec<Item<String>>)> = Vec::new();
    for (name, value) in &h.add {
        let value = Item::new(value_text(value));
        match add.iter_mut().find(|(n, _)| n == name.as_str()) {
            Some((_, values)) => values.push(value),
            None => add.push((name.to_string(), vec![value])),
        }
    }
    let add = add
        .into_iter()
        .map(|(n, values)| (Item::new(n), Item::new(OneOrMany(values))));
    raw::HeaderRewrite {
        remove: (!h.remove.is_empty()).then(|| list(&h.remove, |n| n.to_string())),
        set: (!h.set.is_empty()).then(|| Item::new(HeaderMap(set.collect()))),
        add: (!h.add.is_empty()).then(|| Item::new(HeaderMap(add.collect()))),
    }
}

pub(crate) fn cluster(c: &model::Cluster) -> raw::Cluster {
    raw::Cluster {
        name: some(c.name.clone()),
        protocol: some(match c.protocol {
            model::UpstreamProtocol::Http1 => raw::UpstreamProtocol::Http1,
            model::UpstreamProtocol::Http2 => raw::UpstreamProtocol::Http2,
        }),
        connect_timeout: some(DurationValue(c.connect_timeout)),
        idle_timeout: some(DurationValue(c.idle_timeout)),
        kind: some(match c.discovery {
            model::Discovery::Static => raw::ClusterType::Static,
            model::Discovery::Dns(_) => raw::ClusterType::Dns,
        }),
        // A dns cluster's endpoints come from DNS, and `endpoints` would not load back.
        endpoints: matches!(c.discovery, model::Discovery::Static).then(|| {
            list(&c.endpoints, |e| raw::Endpoint {
                address: some(e.address.to_string()),
                weight: some(e.weight),
            })
        }),
        dns: match &c.discovery {
            model::Discovery::Static => None,
            model::Discovery::Dns(d) => some(dns_discovery(d)),
        },
        load_balancer: some(load_balancer(&c.load_balancer)),
        health_check: c.health_check.as_ref().map(|h| Item::new(health_check(h))),
        outlier_detection: some(outlier_detection(c.outlier_detection.as_ref())),
        retries: some(retry_policy(&c.retries)),
        retry_budget: some(retry_budget(&c.retry_budget)),
        circuit_breakers: some(circuit_breakers(&c.circuit_breakers)),
        mtls: c.mtls.as_ref().map(|m| {
            Item::new(raw::ClusterMtls {
                identity: some(m.identity.to_string()),
            })
        }),
    }
}

/// The port only with A/AAAA records: SRV records carry theirs, and a port would not load back.
pub(crate) fn dns_discovery(d: &model::DnsDiscovery) -> raw::DnsDiscovery {
    let (record, port) = match d.record {
        model::DnsRecord::Ip { port } => (raw::DnsRecordType::A, some(u32::from(port))),
        model::DnsRecord::Srv => (raw::DnsRecordType::Srv, None),
    };
    raw::DnsDiscovery {
        name: some(d.name.clone()),
        port,
        record: some(record),
        min_ttl: some(DurationValue(d.min_ttl)),
        max_ttl: some(DurationValue(d.max_ttl)),
        servers: Some(list(&d.servers, ToString::to_string)),
    }
}

impl From<&LbPolicy> for raw::LbPolicy {
    fn from(policy: &LbPolicy) -> Self {
        match policy {
            LbPolicy::RoundRobin => raw::LbPolicy::RoundRobin,
            LbPolicy::LeastRequest { .. } => raw::LbPolicy::LeastRequest,
            LbPolicy::RingHash { .. } => raw::LbPolicy::RingHash,
            LbPolicy::Maglev { .. } => raw::LbPolicy::Maglev,
        }
    }
}

/// Only the settings of the policy in use: the others would not load back.
pub(crate) fn load_balancer(lb: &model::LoadBalancer) -> raw::LoadBalancer {
    let mut raw = raw::LoadBalancer {
        policy: some(raw::LbPolicy::from(&lb.policy)),
        choice_count: None,
        peak_ewma: None,
        minimum_ring_size: None,
        table_size: None,
        hash_on: None,
        panic_threshold: some(Percent(lb.panic_threshold)),
    };
    match &lb.policy {
        LbPolicy::RoundRobin => {}
        LbPolicy::LeastRequest {
            choice_count,
            peak_ewma,
        } => {
            raw.choice_count = some(*choice_count);
            raw.peak_ewma = some(match peak_ewma {
                None => Toggle::Flag(false),
                Some(p) => Toggle::Settings(raw::PeakEwma {
                    decay: some(DurationValue(p.decay)),
                    default_rtt: some(DurationValue(p.default_rtt)),
                }),
            });
        }
        LbPolicy::RingHash {
            minimum_ring_size,
            hash_on,
        } => {
            raw.minimum_ring_size = some(*minimum_ring_size);
            raw.hash_on = Some(list(hash_on, hash_key));
        }
        LbPolicy::Maglev {
            table_size,
            hash_on,
        } => {
            raw.table_size = some(*table_size);
            raw.hash_on = Some(list(hash_on, hash_key));
        }
    }
    raw
}

fn hash_key(key: &HashKey) -> raw::HashKey {
    let mut raw = raw::HashKey {
        header: None,
        cookie: None,
        source_ip: None,
        path: None,
        query_parameter: None,
    };
    match key {
        HashKey::Header(name) => raw.header = some(name.to_string()),
        HashKey::Cookie { name, ttl, path } => {
            raw.cookie = some(raw::HashCookie {
                name: some(name.clone()),
                ttl: ttl.map(|t| Item::new(DurationValue(t))),
                path: path.clone().map(Item::new),
            });
        }
        HashKey::SourceIp => raw.source_ip = some(true),
        HashKey::Path => raw.path = some(true),
        HashKey::QueryParameter(name) => raw.query_parameter = some(name.clone()),
    }
    raw
}

pub(crate) fn health_check(h: &model::HealthCheck) -> raw::HealthCheck {
    let mut raw = raw::HealthCheck {
        http: None,
        tcp: None,
        grpc: None,
        interval: some(DurationValue(h.interval)),
        jitter: some(Percent(h.jitter)),
        timeout: some(DurationValue(h.timeout)),
        unhealthy_threshold: some(h.unhealthy_threshold),
        healthy_threshold: some(h.healthy_threshold),
        initial_state: some(if h.initially_healthy {
            raw::InitialState::Healthy
        } else {
            raw::InitialState::Unhealthy
        }),
    };
    match &h.kind {
        model::HealthCheckKind::Http {
            path,
            host,
            statuses,
        } => raw.http = some(http_health_check(path, host.as_deref(), statuses)),
        model::HealthCheckKind::Tcp { send, expect } => {
            // Bytes to send and expect come from YAML strings, so they are UTF-8.
            let text = |b: &Option<Vec<u8>>| {
                b.as_ref()
                    .map(|b| Item::new(String::from_utf8_lossy(b).into_owned()))
            };
            raw.tcp = some(raw::TcpHealthCheck {
                send: text(send),
                expect: text(expect),
            });
        }
        model::HealthCheckKind::Grpc { service } => {
            raw.grpc = some(raw::GrpcHealthCheck {
                service: some(service.clone()),
            });
        }
    }
    raw
}

pub(crate) fn http_health_check(
    path: &str,
    host: Option<&str>,
    statuses: &[(u16, u16)],
) -> raw::HttpHealthCheck {
    raw::HttpHealthCheck {
        path: some(path.to_owned()),
        host: host.map(|h| Item::new(h.to_owned())),
        expected_statuses: Some(list(statuses, |(first, last)| StatusRange {
            first: u32::from(*first),
            last: u32::from(*last),
        })),
    }
}

/// Off is written as `enabled: false` alone: detection is on when the section is left out.
pub(crate) fn outlier_detection(o: Option<&model::OutlierDetection>) -> raw::OutlierDetection {
    match o {
        None => raw::OutlierDetection {
            enabled: some(false),
            consecutive_5xx: None,
            consecutive_gateway_failure: None,
            base_ejection_time: None,
            max_ejection_time: None,
            max_ejection_percent: None,
            require_health_check_to_return: None,
        },
        Some(o) => raw::OutlierDetection {
            enabled: some(true),
            consecutive_5xx: some(o.consecutive_5xx),
            consecutive_gateway_failure: some(o.consecutive_gateway_failure),
            base_ejection_time: some(DurationValue(o.base_ejection_time)),
            max_ejection_time: some(DurationValue(o.max_ejection_time)),
            max_ejection_percent: some(Percent(o.max_ejection_percent)),
            require_health_check_to_return: some(o.require_health_check_to_return),
        },
    }
}

impl From<RetryOn> for raw::RetryOn {
    fn from(condition: RetryOn) -> Self {
        match condition {
            RetryOn::ConnectFailure => raw::RetryOn::ConnectFailure,
            RetryOn::RefusedStream => raw::RetryOn::RefusedStream,
            RetryOn::Reset => raw::RetryOn::Reset,
            RetryOn::FiveXx => raw::RetryOn::FiveXx,
            RetryOn::GatewayError => raw::RetryOn::GatewayError,
            RetryOn::RetriableStatusCodes => raw::RetryOn::RetriableStatusCodes,
            RetryOn::Cancelled => raw::RetryOn::Cancelled,
            RetryOn::DeadlineExceeded => raw::RetryOn::DeadlineExceeded,
            RetryOn::ResourceExhausted => raw::RetryOn::ResourceExhausted,
            RetryOn::Unavailable => raw::RetryOn::Unavailable,
        }
    }
}

/// Status codes only when there are some (an empty list would not load back); the per-try
/// timeout and hedging only when on, because there is no value that writes "none".
pub(crate) fn retry_policy(p: &model::RetryPolicy) -> raw::RetryPolicy {
    raw::RetryPolicy {
        max_attempts: some(p.max_attempts),
        retry_on: Some(list(&p.retry_on, |c| raw::RetryOn::from(*c))),
        retriable_status_codes: (!p.retriable_status_codes.is_empty())
            .then(|| list(&p.retriable_status_codes, |c| u32::from(*c))),
        per_try_timeout: p.per_try_timeout.map(|d| Item::new(DurationValue(d))),
        backoff: some(raw::Backoff {
            base_interval: some(DurationValue(p.base_interval)),
            max_interval: some(DurationValue(p.max_interval)),
        }),
        max_retry_after: some(DurationValue(p.max_retry_after)),
        buffer_limit: some(ByteSize(p.buffer_limit)),
        retry_non_idempotent: some(p.retry_non_idempotent),
        hedge_after: p.hedge_after.map(|d| Item::new(DurationValue(d))),
    }
}

pub(crate) fn retry_budget(b: &model::RetryBudget) -> raw::RetryBudget {
    raw::RetryBudget {
        ratio: some(Percent(b.ratio)),
        min_per_second: some(b.min_per_second),
        window: some(DurationValue(b.window)),
    }
}

/// The consecutive-failure breaker is written `false` when off: it has settings to show only
/// when on.
pub(crate) fn circuit_breakers(c: &model::CircuitBreakers) -> raw::CircuitBreakers {
    raw::CircuitBreakers {
        max_connections: some(c.max_connections),
        max_pending_requests: some(c.max_pending_requests),
        max_requests: some(c.max_requests),
        max_retries: some(c.max_retries),
        consecutive_failures: some(match &c.consecutive_failures {
            None => Toggle::Flag(false),
            Some(b) => Toggle::Settings(failure_breaker(b)),
        }),
    }
}

pub(crate) fn failure_breaker(b: &model::FailureBreaker) -> raw::FailureBreaker {
    raw::FailureBreaker {
        threshold: some(b.threshold),
        base_open: some(DurationValue(b.base_open)),
        max_open: some(DurationValue(b.max_open)),
    }
}

/// A delay is written `fixed` when it has one length, else as its `min` and `max`.
fn fault(f: &model::Fault) -> raw::Fault {
    let delay = f.delay.as_ref().map(|d| {
        let fixed = d.min == d.max;
        let at = |d| Some(Item::new(DurationValue(d)));
        Item::new(raw::FaultDelay {
            fixed: if fixed { at(d.min) } else { None },
            min: if fixed { None } else { at(d.min) },
            max: if fixed { None } else { at(d.max) },
            percent: some(Percent(d.percent)),
        })
    });
    let abort = f.abort.as_ref().map(|a| {
        Item::new(raw::FaultAbort {
            http_status: some(a.http_status),
            grpc_status: a.grpc_status.map(Item::new),
            percent: some(Percent(a.percent)),
        })
    });
    raw::Fault {
        delay,
        abort,
        headers: (!f.headers.is_empty()).then(|| list(&f.headers, header_match)),
        expires: f.expires_at.map(|t| Item::new(Timestamp(t))),
        header_triggered: some(f.header_triggered),
    }
}

fn rate_limit(r: &model::RateLimit) -> raw::RateLimit {
    raw::RateLimit {
        rate: some(Rate(r.rate)),
        burst: some(r.burst),
    }
}

fn authorization(a: &model::Authorization) -> raw::Authorization {
    raw::Authorization {
        rules: Some(list(&a.rules, |r| {
            let from = r.has_from().then(|| {
                Item::new(raw::AuthzFrom {
                    identities: (!r.identities.is_empty()).then(|| {
                        list(&r.identities, |p| match p {
                            model::IdentityPattern::Exact(e) => e.clone(),
                            model::IdentityPattern::Prefix(p) => format!("{p}*"),
                        })
                    }),
                    unauthenticated: r.unauthenticated.then(|| Item::new(true)),
                })
            });
            let to = (r.has_to() || !r.ports.is_empty()).then(|| {
                Item::new(raw::AuthzTo {
                    paths: (!r.paths.is_empty()).then(|| {
                        list(&r.paths, |p| match p {
                            model::PathPattern::Any => "*".to_owned(),
                            model::PathPattern::Exact(e) => e.clone(),
                            model::PathPattern::Prefix(p) => format!("{p}/*"),
                        })
                    }),
                    methods: (!r.methods.is_empty())
                        .then(|| list(&r.methods, |m| m.as_str().to_owned())),
                    ports: (!r.ports.is_empty()).then(|| list(&r.ports, |p| u32::from(*p))),
                })
            });
            raw::AuthzRule {
                action: some(match r.allow {
                    true => raw::AuthzAction::Allow,
                    false => raw::AuthzAction::Deny,
                }),
                from,
                to,
            }
        })),
    }
}
