//! `remora explain --node NAME METHOD URL [-H header]...`: where a request from that sidecar's
//! workload would go. The route is found by the proxy's own route table over the sidecar's
//! config, so the answer is what the sidecar does; the route's file and line come from the mesh
//! config, and endpoint health from the sidecar's last report.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use remora_config::mesh::{Mesh, host_names};
use remora_config::model::{Config, Discovery, ListenerKind, Route};
use remora_config::protocol::EndpointHealth;
use remora_proxy::route::{RequestView, RouteTable};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What `remora explain` asks the control plane (`POST /explain` on its admin port).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainRequest {
    pub node: String,
    pub method: String,
    pub url: String,
    /// `name: value` each.
    #[serde(default)]
    pub headers: Vec<String>,
}

/// What the control plane knows of the node asked about.
pub struct Node<'a> {
    pub service: &'a str,
    pub namespace: &'a str,
    /// Its last health report, and how long ago it came.
    pub health: Option<(&'a [EndpointHealth], std::time::Duration)>,
}

/// The explanation as JSON, or why there is none (a 4xx for the caller).
pub fn explain(mesh: &Mesh, node: &Node<'_>, req: &ExplainRequest) -> Result<Value, String> {
    let service = mesh.service(node.service).ok_or_else(|| {
        format!(
            "service '{}' is not in the mesh config (version {})",
            node.service, mesh.version
        )
    })?;
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("'{}' is not an HTTP method", req.method))?;
    let uri: Uri = req
        .url
        .parse()
        .map_err(|e| format!("'{}' is not a URL: {e}", req.url))?;
    let mut headers = HeaderMap::new();
    for h in &req.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header '{h}' is not 'name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{name}' is not a header name"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("'{value}' is not a header value"))?;
        headers.append(name, value);
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.host().to_owned()))
        .ok_or_else(|| "the URL has no host, and no Host header was given".to_owned())?;
    let bare = host.split(':').next().unwrap_or(&host).to_ascii_lowercase();
    // A request for the node's own service is inbound traffic; anything else is a call out.
    let listener_name = match host_names(node.service, node.namespace).contains(&bare) {
        true => "inbound",
        false => "outbound",
    };
    let mut out = json!({
        "node_service": service.name,
        "namespace": service.namespace,
        "version": mesh.version,
        "request": { "method": method.as_str(), "host": host, "path": uri.path() },
        "listener": listener_name,
    });
    let Some(listener) = service
        .config
        .listeners
        .iter()
        .find(|l| l.name == listener_name)
    else {
        out["route"] = Value::Null;
        out["why"] = format!(
            "service '{}' calls no services, so its sidecar has no outbound listener",
            service.name
        )
        .into();
        return Ok(out);
    };
    let routes = match &listener.kind {
        ListenerKind::Http { routes } | ListenerKind::Auto { routes, .. } => routes,
        ListenerKind::Tcp { .. } => &Vec::new(),
    };
    let table = RouteTable::new(
        routes
            .iter()
            .map(|r| (r.matches.clone(), Arc::new(r.clone()))),
    );
    let view = RequestView {
        host: Some(&host),
        path: uri.path(),
        method: &method,
        headers: &headers,
    };
    let Some(route) = table.lookup(&view) else {
        out["route"] = Value::Null;
        out["why"] = format!(
            "no route of listener '{listener_name}' matches: the sidecar answers 404 \
             (no-route). '{}' calls: {}",
            service.name,
            service.calls.join(", ")
        )
        .into();
        return Ok(out);
    };
    out["route"] = route_json(service, listener_name, route, &service.config);
    out["backends"] = backends(route, &service.config, node);
    Ok(out)
}

fn route_json(
    service: &remora_config::mesh::Service,
    listener: &str,
    route: &Route,
    config: &Config,
) -> Value {
    let written = remora_config::route_json(route);
    // The route's own retries, or else those of the cluster the request goes to.
    let (retries, retries_from) = match &route.retries {
        Some(_) => (written["retries"].clone(), "route".to_owned()),
        None => {
            let cluster = route
                .backends
                .first()
                .and_then(|b| config.cluster(&b.cluster));
            match cluster {
                Some(c) => (
                    remora_config::cluster_json(c)["retries"].clone(),
                    format!("cluster {}", c.name),
                ),
                None => (Value::Null, String::new()),
            }
        }
    };
    json!({
        "name": route.name,
        "defined_at": service.route_origin(listener, &route.name),
        "match": written["match"],
        "timeout": written["timeout"],
        "retries": retries,
        "retries_from": retries_from,
        "fault": written.get("fault").cloned().unwrap_or(Value::Null),
        "rate_limit": written.get("rate_limit").cloned().unwrap_or(Value::Null),
        "request_headers": written.get("request_headers").cloned().unwrap_or(Value::Null),
        "response_headers": written.get("response_headers").cloned().unwrap_or(Value::Null),
    })
}

fn backends(route: &Route, config: &Config, node: &Node<'_>) -> Value {
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    let list: Vec<Value> = route
        .backends
        .iter()
        .map(|b| {
            let share = match total {
                0 => 0.0,
                t => f64::from(b.weight) / t as f64,
            };
            let Some(cluster) = config.cluster(&b.cluster) else {
                return json!({ "cluster": b.cluster, "weight": b.weight, "share": share });
            };
            let written = remora_config::cluster_json(cluster);
            let reported = |address: &str| {
                node.health.and_then(|(report, _)| {
                    report
                        .iter()
                        .find(|h| h.cluster == cluster.name && h.address == address)
                        .map(|h| h.state.clone())
                })
            };
            let endpoints: Vec<Value> = match &cluster.discovery {
                Discovery::Static => cluster
                    .endpoints
                    .iter()
                    .map(|e| {
                        let address = e.address.to_string();
                        let state = reported(&address);
                        json!({ "address": address, "weight": e.weight, "state": state })
                    })
                    .collect(),
                // Only the sidecar knows what DNS answered: its report lists them.
                Discovery::Dns(_) => node
                    .health
                    .into_iter()
                    .flat_map(|(report, _)| report)
                    .filter(|h| h.cluster == cluster.name)
                    .map(|h| json!({ "address": h.address, "weight": "dns", "state": h.state }))
                    .collect(),
            };
            json!({
                "cluster": cluster.name,
                "weight": b.weight,
                "share": share,
                "protocol": cluster.protocol.as_str(),
                "load_balancer": written["load_balancer"],
                "circuit_breakers": written["circuit_breakers"],
                "retry_budget": written["retry_budget"],
                "health_check": written.get("health_check").cloned().unwrap_or(Value::Null),
                "outlier_detection": written["outlier_detection"],
                "dns": written.get("dns").cloned().unwrap_or(Value::Null),
                "endpoints": endpoints,
                "health_reported_ms_ago": node.health.map(|(_, age)| age.as_millis() as u64),
            })
        })
        .collect();
    Value::Array(list)
}

/// The explanation as text, for the terminal.
pub fn render(node: &str, v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    };
    let mut out = format!(
        "{} {} from {node} (service {}, namespace {}, version {})\n",
        s(&v["request"]["method"]),
        s(&v["request"]["host"]) + &s(&v["request"]["path"]),
        s(&v["node_service"]),
        s(&v["namespace"]),
        s(&v["version"]),
    );
    out.push_str(&format!("listener: {}\n", s(&v["listener"])));
    let route = &v["route"];
    if route.is_null() {
        out.push_str(&format!("route: none. {}\n", s(&v["why"])));
        return out;
    }
    out.push_str(&format!(
        "route: {} (defined at {})\n",
        s(&route["name"]),
        s(&route["defined_at"])
    ));
    out.push_str(&format!("  match: {}\n", s(&route["match"])));
    out.push_str(&format!("  timeout: {}\n", s(&route["timeout"])));
    out.push_str(&format!(
        "  retries (from the {}): {}\n",
        s(&route["retries_from"]),
        s(&route["retries"])
    ));
    for key in ["fault", "rate_limit", "request_headers", "response_headers"] {
        if !route[key].is_null() {
            out.push_str(&format!("  {key}: {}\n", s(&route[key])));
        }
    }
    for b in v["backends"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "cluster: {} ({:.0}% of the route's traffic, {})\n",
            s(&b["cluster"]),
            b["share"].as_f64().unwrap_or(0.0) * 100.0,
            s(&b["protocol"])
        ));
        for key in [
            "load_balancer",
            "circuit_breakers",
            "retry_budget",
            "health_check",
            "outlier_detection",
            "dns",
        ] {
            if !b[key].is_null() {
                out.push_str(&format!("  {key}: {}\n", s(&b[key])));
            }
        }
        let reported = match b["health_reported_ms_ago"].as_u64() {
            Some(ms) => format!(
                "health as {node} reported it {:.1}s ago",
                ms as f64 / 1000.0
            ),
            None => format!("{node} has not reported health"),
        };
        out.push_str(&format!("  endpoints ({reported}):\n"));
        for e in b["endpoints"].as_array().into_iter().flatten() {
            let state = match &e["state"] {
                Value::Null => "unknown".to_owned(),
                other => s(other),
            };
            out.push_str(&format!(
                "    {}  weight {}  {state}\n",
                s(&e["address"]),
                s(&e["weight"])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use remora_config::mesh::{self, Source};

    fn mesh() -> Mesh {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/mesh");
        let sources: Vec<Source> = mesh::read_dir(&dir).unwrap();
        mesh::load(&sources).unwrap()
    }

    fn ask(url: &str, headers: &[&str]) -> ExplainRequest {
        ExplainRequest {
            node: "web-1".into(),
            method: "GET".into(),
            url: url.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
        }
    }

    #[test]
    fn a_call_is_explained_with_its_route_origin_policies_and_endpoint_health() {
        let mesh = mesh();
        let report = vec![EndpointHealth {
            cluster: "orders".into(),
            address: "10.0.2.11:15006".into(),
            state: "ejected".into(),
        }];
        let node = Node {
            service: "web",
            namespace: "shop",
            health: Some((&report, std::time::Duration::from_millis(1500))),
        };
        let v = explain(&mesh, &node, &ask("http://orders.shop/cart", &[])).unwrap();
        assert_eq!(v["listener"], "outbound");
        assert_eq!(v["route"]["name"], "orders/split");
        assert!(
            v["route"]["defined_at"]
                .as_str()
                .unwrap()
                .ends_with("orders.yaml:18"),
            "{v:#}"
        );
        assert_eq!(v["route"]["timeout"], "5s");
        assert_eq!(v["route"]["retries_from"], "cluster orders");
        assert_eq!(v["route"]["retries"]["max_attempts"], 3);
        let backends = v["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0]["cluster"], "orders");
        assert_eq!(backends[0]["share"], 0.9);
        assert_eq!(backends[0]["load_balancer"]["policy"], "least_request");
        assert_eq!(backends[0]["endpoints"][1]["state"], "ejected");
        assert_eq!(backends[0]["endpoints"][0]["state"], Value::Null);
        assert_eq!(backends[1]["cluster"], "orders-canary");

        let text = render("web-1", &v);
        assert!(text.contains("route: orders/split (defined at "), "{text}");
        assert!(
            text.contains("cluster: orders (90% of the route's traffic"),
            "{text}"
        );
        assert!(
            text.contains("10.0.2.11:15006  weight 1  ejected"),
            "{text}"
        );
        assert!(text.contains("reported it 1.5s ago"), "{text}");
    }

    /// Only the sidecar knows what DNS answered: a dns cluster's endpoints are those it reported.
    #[test]
    fn a_dns_clusters_endpoints_come_from_the_sidecars_report() {
        let sources = [Source {
            name: "m.yaml".into(),
            text: "services:\n  - { name: web, app: 127.0.0.1:1, calls: [api] }\n  - name: api\n    app: 127.0.0.1:2\n    cluster:\n      type: dns\n      dns: { name: api.shop.svc.cluster.local, port: 8080 }\n".into(),
        }];
        let mesh = mesh::load(&sources).unwrap();
        let report = vec![
            EndpointHealth {
                cluster: "api".into(),
                address: "10.1.0.7:8080".into(),
                state: "healthy".into(),
            },
            EndpointHealth {
                cluster: "inbound".into(),
                address: "127.0.0.1:1".into(),
                state: "healthy".into(),
            },
        ];
        let node = Node {
            service: "web",
            namespace: "default",
            health: Some((&report, std::time::Duration::ZERO)),
        };
        let v = explain(&mesh, &node, &ask("http://api/", &[])).unwrap();
        let api = &v["backends"][0];
        assert_eq!(api["dns"]["name"], "api.shop.svc.cluster.local");
        assert_eq!(
            api["endpoints"],
            json!([{ "address": "10.1.0.7:8080", "weight": "dns", "state": "healthy" }])
        );
    }

    #[test]
    fn the_nodes_own_service_is_inbound_and_unknown_hosts_have_no_route() {
        let mesh = mesh();
        let node = Node {
            service: "web",
            namespace: "shop",
            health: None,
        };
        let v = explain(
            &mesh,
            &node,
            &ask("http://web.shop.svc.cluster.local/", &[]),
        )
        .unwrap();
        assert_eq!(v["listener"], "inbound");
        assert_eq!(v["backends"][0]["cluster"], "inbound");
        assert_eq!(
            v["backends"][0]["endpoints"][0]["address"],
            "127.0.0.1:8080"
        );

        // The Host header wins over the URL's host, as on the wire.
        let v = explain(&mesh, &node, &ask("http://10.0.0.1/", &["host: payments"])).unwrap();
        assert_eq!(v["route"], Value::Null);
        assert!(v["why"].as_str().unwrap().contains("no route"), "{v:#}");

        let err = explain(&mesh, &node, &ask("/relative", &[])).unwrap_err();
        assert!(err.contains("no host"), "{err}");
    }
}
