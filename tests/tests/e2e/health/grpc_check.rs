//! gRPC health checks against a real grpcio server with grpcio-health-checking: SERVING passes,
//! NOT_SERVING fails, an unknown service fails with its gRPC status, and a server that is not
//! gRPC at all fails as a protocol error.

use remora_tests::python::{self, PyServer};
use remora_tests::{Behaviour, Client, Proto, ProxyProcess, Upstream, eventually};
use serde_json::{Value, json};

use super::{STATE_TIMEOUT, wait_state};
use crate::balancing::endpoint_labels;

fn unary(proxy: &ProxyProcess) -> Value {
    let spec = json!({"kind": "unary", "path": "/remora.test.Echo/Unary", "requests": ["hi"]});
    python::run(
        "grpc_client.py",
        &[&proxy.listener("main").to_string(), &spec.to_string()],
    )
}

fn set_health(server: &mut PyServer, status: &str) {
    let command = json!({"health": {"service": "remora.test.Echo", "status": status}});
    server.send_line(&command.to_string());
    server.wait_event(STATE_TIMEOUT, |e| {
        (e["event"] == "health" && e["status"] == status).then_some(())
    });
}

#[tokio::test]
async fn grpc_checks_follow_the_serving_status() {
    let mut grpc = PyServer::start("grpc_server.py", &[]);
    let plain = Upstream::start_named("plain", Behaviour::name());
    let check = |service: &str| {
        format!(
            "{{ grpc: {{ service: {service} }}, interval: 200ms, jitter: 0%, timeout: 150ms, \
             unhealthy_threshold: 1, healthy_threshold: 1, initial_state: unhealthy }}"
        )
    };
    let proxy = ProxyProcess::start(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
access_log: {{ enabled: false }}
listeners:
  - name: main
    address: 127.0.0.1:0
    routes:
      - {{ name: unknown, match: {{ path: {{ prefix: /unknown }} }}, cluster: unknown }}
      - {{ name: all, cluster: greeter }}
clusters:
  - name: greeter
    protocol: http2
    load_balancer: {{ panic_threshold: 0% }}
    health_check: {}
    endpoints: [{{ address: "{}" }}, {{ address: "{}" }}]
  - name: unknown
    protocol: http2
    health_check: {}
    endpoints: [{{ address: "{}" }}]
"#,
        check("remora.test.Echo"),
        grpc.addr(),
        plain.addr(),
        check("no.such.Service"),
        grpc.addr(),
    ));

    // Starting unhealthy, the gRPC server is brought in by its first check; the others fail
    // theirs (each endpoint is checked on its own schedule).
    wait_state(&proxy, "greeter", grpc.addr(), "healthy").await;
    let page = eventually("the first failed checks", STATE_TIMEOUT, || {
        let page = proxy.clusters();
        let failed = |cluster, addr| page.endpoint(cluster, addr).last_failure_reason().is_some();
        (failed("greeter", plain.addr()) && failed("unknown", grpc.addr())).then_some(page)
    })
    .await;
    let not_grpc = page.endpoint("greeter", plain.addr());
    assert_eq!(not_grpc.state(), "unhealthy");
    assert_eq!(
        not_grpc.last_failure_reason(),
        Some("protocol"),
        "{:#}",
        not_grpc.0
    );
    let unknown = page.endpoint("unknown", grpc.addr());
    assert_eq!(unknown.state(), "unhealthy");
    assert_eq!(
        unknown.last_failure_reason(),
        Some("grpc-status"),
        "{:#}",
        unknown.0
    );
    assert!(
        unknown
            .last_failure_detail()
            .is_some_and(|d| d.starts_with("grpc-status 5")),
        "NOT_FOUND: {:#}",
        unknown.0
    );

    // Calls go to the one healthy endpoint, the gRPC server.
    let ok = unary(&proxy);
    assert_eq!(ok["code"], "OK", "{ok:#}");
    assert_eq!(ok["responses"], json!(["hi"]));
    let calls = plain.heads();
    let calls = calls
        .iter()
        .filter(|h| h.uri.path() != "/grpc.health.v1.Health/Check");
    assert_eq!(calls.count(), 0, "only checks reached the plain server");

    set_health(&mut grpc, "NOT_SERVING");
    wait_state(&proxy, "greeter", grpc.addr(), "unhealthy").await;
    let page = proxy.clusters();
    let ep = page.endpoint("greeter", grpc.addr());
    assert_eq!(ep.last_failure_reason(), Some("status"));
    assert_eq!(ep.last_failure_detail(), Some("serving status NOT_SERVING"));
    let addr = grpc.addr().to_string();
    let labels = endpoint_labels("greeter", &addr);
    assert_eq!(proxy.metric("remora_endpoint_healthy", &labels), Some(0.0));
    let mut by_reason = labels.to_vec();
    by_reason.push(("reason", "status"));
    let failures = proxy.metric("remora_health_check_failures_total", &by_reason);
    assert!(failures.is_some_and(|n| n >= 1.0), "{failures:?}");
    // Nothing is healthy (and panic mode is off): the proxy answers itself.
    let mut client = Client::connect(proxy.listener("main"), Proto::H2c).await;
    let refused = client.get("/remora.test.Echo/Unary").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.remora_error(), Some("no-endpoint"));

    set_health(&mut grpc, "SERVING");
    wait_state(&proxy, "greeter", grpc.addr(), "healthy").await;
    let again = unary(&proxy);
    assert_eq!(again["code"], "OK", "{again:#}");
    assert_eq!(proxy.metric("remora_endpoint_healthy", &labels), Some(1.0));
}
