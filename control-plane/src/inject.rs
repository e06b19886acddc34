//! Sidecar injection: one function, used by `remora inject` and by the admission webhook.
//!
//! Every pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, and a Pod
//! itself) gets:
//! - `remora-init`, an init container that installs the traffic-capture rules
//!   (`remora-proxy init-iptables`), and needs NET_ADMIN and NET_RAW for that only;
//! - `remora-proxy`, the sidecar as a *native sidecar*: an init container with
//!   `restartPolicy: Always` and a startup probe on `/ready`, so the app's containers start
//!   only once the proxy serves, and a Job completes when its app does;
//! - a projected service-account token (audience `remora`) that the proxy shows the control
//!   plane to prove its identity.
//!
//! Annotations on the pod template tune it (`remora.io/...`, see [`annotations`]). Injection
//! is idempotent: a template that has `remora-proxy` already is left as it is. Everything
//! else in the documents passes through, unknown fields included. Key order is not kept
//! (objects are written with sorted keys), and comments are not either.

use serde_json::{Value, json};

/// The annotations read on a pod template.
pub mod annotations {
    /// `disabled` (or `false`), as an annotation or a label: leave this pod alone.
    pub const INJECT: &str = "remora.io/inject";
    /// Comma-separated inbound ports the proxy does not capture.
    pub const EXCLUDE_INBOUND_PORTS: &str = "remora.io/exclude-inbound-ports";
    /// Comma-separated outbound ports the proxy does not capture.
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "remora.io/exclude-outbound-ports";
    /// Comma-separated CIDRs whose outbound traffic is not captured.
    pub const EXCLUDE_OUTBOUND_CIDRS: &str = "remora.io/exclude-outbound-cidrs";
    /// Comma-separated ports whose connections the proxy forwards as opaque TCP, without
    /// protocol detection, in and out of this pod (still captured, so still mTLS between
    /// sidecars). Callers in other pods learn a service's opaque ports from the mesh config's
    /// `opaque_ports`.
    pub const OPAQUE_PORTS: &str = "remora.io/opaque-ports";
    /// The proxy's log filter (`info`, `debug`, `remora_proxy=trace`...).
    pub const LOG_LEVEL: &str = "remora.io/proxy-log-level";
    /// Set by injection: the injector's version, for `kubectl get -o yaml` readers.
    pub const INJECTED: &str = "remora.io/injected";
}

/// Where the sidecar's pieces come from and go.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image holding `remora-proxy` (runs both containers).
    pub proxy_image: String,
    /// The control plane, as sidecars reach it.
    pub control_plane: String,
    /// For an https:// control plane: the roots its certificate chains to (PEM), given to
    /// the sidecar as `$REMORA_CONTROL_PLANE_CA`.
    pub control_plane_ca: Option<String>,
    /// The proxy's UID: the capture rules let its own traffic out unredirected.
    pub proxy_uid: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proxy_image: "ghcr.io/remora-mesh/remora-proxy:0.1.0".into(),
            control_plane: "https://remora-control-plane.remora-system.svc:15012".into(),
            control_plane_ca: None,
            proxy_uid: PROXY_UID,
        }
    }
}

/// The proxy runs as this UID, which the capture rules exempt (so its own connections to
/// upstreams are not redirected back to itself). Istio uses 1337 and Linkerd 2102; any fixed,
/// non-root UID works.
pub const PROXY_UID: u64 = 2102;

/// Where the sidecar reads the control plane's CA (PEM) for an https:// control plane; the
/// proxy's `remora_proxy::cli::CONTROL_PLANE_CA_ENV`.
pub const CONTROL_PLANE_CA_ENV: &str = "REMORA_CONTROL_PLANE_CA";

pub const INBOUND_PORT: u16 = 15006;
pub const OUTBOUND_PORT: u16 = 15001;
/// The proxy's admin endpoints, on loopback only: they show the config and can drain it.
pub const ADMIN_PORT: u16 = 15000;
/// `/live`, `/ready` and `/metrics` only, on the pod's address: the kubelet probes them and
/// Prometheus scrapes them (Istio's status port is 15020 as well).
pub const STATUS_PORT: u16 = 15020;

/// What injection did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// It has the sidecar already.
    AlreadyInjected,
    /// Not a workload, or opted out; why.
    Skipped(String),
}

/// Injects every workload in a stream of YAML documents; returns the documents written back,
/// and for each document, its kind/name and what was done.
pub fn inject_yaml(
    text: &str,
    options: &Options,
) -> Result<(String, Vec<(String, Outcome)>), String> {
    let mut docs: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| format!("not YAML: {e}"))?;
    let mut report = Vec::new();
    for doc in &mut docs {
        if doc.is_null() {
            continue;
        }
        let label = format!(
            "{}/{}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        report.push((label, inject_object(doc, options)));
    }
    docs.retain(|d| !d.is_null());
    let out =
        serde_saphyr::to_string_multiple(&docs).map_err(|e| format!("cannot write YAML: {e}"))?;
    Ok((out, report))
}

/// Injects one object, in place.
pub fn inject_object(object: &mut Value, options: &Options) -> Outcome {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let template = match kind.as_str() {
        "Pod" => Some(&mut *object),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            object.pointer_mut("/spec/template")
        }
        "CronJob" => object.pointer_mut("/spec/jobTemplate/spec/template"),
        // A List holds objects of its own.
        "List" => {
            let items = object.pointer_mut("/items").and_then(Value::as_array_mut);
            let mut any = false;
            for item in items.into_iter().flatten() {
                any |= inject_object(item, options) == Outcome::Injected;
            }
            return match any {
                true => Outcome::Injected,
                false => Outcome::Skipped("nothing to inject in the list".into()),
            };
        }
        _ => return Outcome::Skipped(format!("a {kind} has no pod template")),
    };
    let Some(template) = template.filter(|t| t.is_object()) else {
        return Outcome::Skipped(format!("{kind} {name} has no pod template"));
    };
    inject_template(template, &name, options)
}

/// Injects a pod or pod template (`metadata` and `spec`); `owner` names the workload.
pub fn inject_template(template: &mut Value, owner: &str, options: &Options) -> Outcome {
    let annotations = template["metadata"]["annotations"].clone();
    let annotation = |key: &str| {
        annotations[key]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    // The webhook's objectSelector reads it as a label; either opts a pod out.
    let label = template["metadata"]["labels"][annotations::INJECT].as_str();
    let opt_out = |v: Option<&str>| matches!(v, Some("disabled" | "false"));
    if opt_out(annotation(annotations::INJECT)) || opt_out(label) {
        return Outcome::Skipped(format!("{} is '{}'", annotations::INJECT, "disabled"));
    }
    if template["spec"].is_null() {
        return Outcome::Skipped("no pod spec".into());
    }
    if template["spec"]["hostNetwork"] == json!(true) {
        // Capture rules would rewrite the node's own traffic.
        return Outcome::Skipped("hostNetwork pods are not injected".into());
    }
    let has_proxy = |list: &Value| {
        list.as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == "remora-proxy"))
    };
    if has_proxy(&template["spec"]["initContainers"]) || has_proxy(&template["spec"]["containers"])
    {
        return Outcome::AlreadyInjected;
    }
    let labels = &template["metadata"]["labels"];
    let service = labels["app.kubernetes.io/name"]
        .as_str()
        .or_else(|| labels["app"].as_str())
        .unwrap_or(owner)
        .to_owned();
    let log_level = annotation(annotations::LOG_LEVEL)
        .unwrap_or("info")
        .to_owned();
    let mut init_args = vec![
        "init-iptables".to_owned(),
        "--proxy-uid".to_owned(),
        options.proxy_uid.to_string(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
        // The proxy's own ports are never redirected to itself.
        "--exclude-inbound-ports".to_owned(),
        join_ports(
            &[ADMIN_PORT, STATUS_PORT],
            annotation(annotations::EXCLUDE_INBOUND_PORTS),
        ),
    ];
    for (flag, key) in [
        (
            "--exclude-outbound-ports",
            annotations::EXCLUDE_OUTBOUND_PORTS,
        ),
        (
            "--exclude-outbound-cidrs",
            annotations::EXCLUDE_OUTBOUND_CIDRS,
        ),
    ] {
        if let Some(v) = annotation(key) {
            init_args.push(flag.to_owned());
            init_args.push(v.to_owned());
        }
    }
    let init = json!({
        "name": "remora-init",
        "image": options.proxy_image,
        "args": init_args,
        "securityContext": {
            // Installing rules needs these capabilities, as root, and nothing more.
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "10Mi" },
            "limits": { "memory": "50Mi" },
        },
    });
    let mut proxy_args: Vec<String> = [
        "--control-plane",
        &options.control_plane,
        "--node",
        "$(POD_NAME)",
        "--service",
        &service,
        "--namespace",
        "$(POD_NAMESPACE)",
        "--service-account",
        "$(SERVICE_ACCOUNT)",
        "--identity-token-file",
        "/var/run/secrets/remora/token",
        "--inbound",
        &format!("0.0.0.0:{INBOUND_PORT}"),
        "--outbound",
        &format!("127.0.0.1:{OUTBOUND_PORT}"),
        "--admin",
        &format!("127.0.0.1:{ADMIN_PORT}"),
        "--status",
        &format!("0.0.0.0:{STATUS_PORT}"),
        "--log-level",
        &log_level,
    ]
    .map(str::to_owned)
    .to_vec();
    // Only real port numbers: anything else would stop the proxy from starting at all.
    let opaque: Vec<String> = annotation(annotations::OPAQUE_PORTS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.trim().parse::<u16>().ok().filter(|&p| p != 0))
        .map(|p| p.to_string())
        .collect();
    if !opaque.is_empty() {
        proxy_args.push("--opaque-ports".to_owned());
        proxy_args.push(opaque.join(","));
    }
    let mut env = json!([
        { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
        { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        { "name": "SERVICE_ACCOUNT", "valueFrom": { "fieldRef": { "fieldPath": "spec.serviceAccountName" } } },
    ]);
    if let (Some(ca), Some(list)) = (&options.control_plane_ca, env.as_array_mut()) {
        // The sidecar trusts the control plane's certificate by this (`--control-plane https://`).
        list.push(json!({ "name": CONTROL_PLANE_CA_ENV, "value": ca }));
    }
    let proxy = json!({
        "name": "remora-proxy",
        "image": options.proxy_image,
        // A native sidecar (Kubernetes 1.29+): started before the app, kept running, and not
        // waited for when a Job's containers finish.
        "restartPolicy": "Always",
        "args": proxy_args,
        "env": env,
        "ports": [ { "name": "remora-status", "containerPort": STATUS_PORT } ],
        // The app's containers start once this passes: the proxy has its config.
        "startupProbe": {
            "httpGet": { "path": "/ready", "port": STATUS_PORT },
            "periodSeconds": 1,
            "failureThreshold": 300,
        },
        "readinessProbe": {
            "httpGet": { "path": "/ready", "port": STATUS_PORT },
            "periodSeconds": 5,
        },
        "livenessProbe": {
            "httpGet": { "path": "/live", "port": STATUS_PORT },
            "periodSeconds": 10,
        },
        "resources": {
            "requests": { "cpu": "100m", "memory": "32Mi" },
            "limits": { "memory": "256Mi" },
        },
        "securityContext": {
            "runAsUser": options.proxy_uid,
            "runAsGroup": options.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": "remora-token", "mountPath": "/var/run/secrets/remora", "readOnly": true },
        ],
    });
    let token = json!({
        "name": "remora-token",
        "projected": {
            "sources": [{
                "serviceAccountToken": {
                    "audience": "remora",
                    "expirationSeconds": 3600,
                    "path": "token",
                }
            }]
        }
    });
    let spec = &mut template["spec"];
    let inits = spec["initContainers"].take();
    let mut list = vec![init, proxy];
    // The capture rules and the proxy go first: other init containers may need the network.
    list.extend(inits.as_array().cloned().unwrap_or_default());
    spec["initContainers"] = Value::Array(list);
    let mut volumes = spec["volumes"]
        .take()
        .as_array()
        .cloned()
        .unwrap_or_default();
    volumes.push(token);
    spec["volumes"] = Value::Array(volumes);
    let metadata = &mut template["metadata"];
    if !metadata.is_object() {
        *metadata = json!({});
    }
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = json!({});
    }
    metadata["annotations"][annotations::INJECTED] = json!(env!("CARGO_PKG_VERSION"));
    Outcome::Injected
}

fn join_ports(always: &[u16], extra: Option<&str>) -> String {
    let mut out: Vec<String> = always.iter().map(u16::to_string).collect();
    if let Some(extra) = extra {
        out.extend(
            extra
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
        );
    }
    out.join(",")
}

/// The webhook's answer to an AdmissionReview v1 for a Pod: allowed, with a JSON Patch that
/// injects it (none when nothing changes). Never refuses a pod: a webhook problem must not
/// stop workloads from starting.
pub fn admission_response(review: &Value, options: &Options) -> Value {
    let uid = review["request"]["uid"].clone();
    let mut response = json!({ "uid": uid, "allowed": true });
    let object = &review["request"]["object"];
    if review["request"]["kind"]["kind"] == "Pod" && object.is_object() {
        let mut injected = object.clone();
        let owner = object["metadata"]["generateName"]
            .as_str()
            .map(|g| g.trim_end_matches('-'))
            .or_else(|| object["metadata"]["name"].as_str())
            .unwrap_or("pod")
            .to_owned();
        if inject_template(&mut injected, &owner, options) == Outcome::Injected {
            let patch = patch(object, &injected);
            let text = serde_json::to_vec(&patch).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64(&text));
        }
    }
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// The JSON Patch (RFC 6902) from `before` to `after`, for what injection changes: the init
/// containers, the volumes and the annotations, each replaced whole.
fn patch(before: &Value, after: &Value) -> Value {
    let mut ops = Vec::new();
    for path in ["/spec/initContainers", "/spec/volumes"] {
        let op = match before.pointer(path) {
            Some(_) => "replace",
            None => "add",
        };
        ops.push(json!({ "op": op, "path": path, "value": after.pointer(path) }));
    }
    let annotations = after
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_default();
    let op = match before.pointer("/metadata/annotations") {
        Some(_) => "replace",
        None => "add",
    };
    ops.push(json!({ "op": op, "path": "/metadata/annotations", "value": annotations }));
    Value::Array(ops)
}

/// Standard base64 with padding (the `patch` field's encoding).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod real_world;
#[cfg(test)]
mod tests;
