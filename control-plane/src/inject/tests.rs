use super::*;

const MIXED: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080 }]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: { app: web }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata:
      labels: { app: web, app.kubernetes.io/name: storefront }
      annotations:
        remora.io/exclude-outbound-ports: "5432, 6379"
        remora.io/proxy-log-level: debug
    spec:
      serviceAccountName: web
      initContainers:
        - name: migrate
          image: example/migrate:1
      containers:
        - name: web
          image: example/web:1
          ports: [{ containerPort: 8080 }]
      someFutureField: { kept: true }
---
apiVersion: batch/v1
kind: CronJob
metadata: { name: report }
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{ name: report, image: example/report:1 }]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: agent }
spec:
  selector: { matchLabels: { app: agent } }
  template:
    metadata:
      labels: { app: agent }
      annotations: { remora.io/inject: disabled }
    spec:
      containers: [{ name: agent, image: example/agent:1 }]
---
apiVersion: v1
kind: Pod
metadata: { name: solo }
spec:
  hostNetwork: true
  containers: [{ name: solo, image: example/solo:1 }]
"#;

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_str_multiple(text).unwrap()
}

#[test]
fn every_pod_template_gets_the_init_rules_and_a_native_sidecar() {
    let (out, report) = inject_yaml(MIXED, &Options::default()).unwrap();
    let outcomes: Vec<(&str, &Outcome)> = report.iter().map(|(l, o)| (l.as_str(), o)).collect();
    assert_eq!(
        outcomes[0],
        (
            "Service/web",
            &Outcome::Skipped("a Service has no pod template".into())
        )
    );
    assert_eq!(outcomes[1], ("Deployment/web", &Outcome::Injected));
    assert_eq!(outcomes[2], ("CronJob/report", &Outcome::Injected));
    assert!(matches!(outcomes[3].1, Outcome::Skipped(why) if why.contains("disabled")));
    assert!(matches!(outcomes[4].1, Outcome::Skipped(why) if why.contains("hostNetwork")));

    let d = docs(&out);
    assert_eq!(d.len(), 5);
    assert_eq!(d[0], docs(MIXED)[0], "other objects pass through unchanged");
    let spec = &d[1]["spec"]["template"]["spec"];
    let inits = spec["initContainers"].as_array().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["remora-init", "remora-proxy", "migrate"],
        "capture and proxy first"
    );
    let proxy = &inits[1];
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["securityContext"]["runAsUser"], PROXY_UID);
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(
        after("--service"),
        "storefront",
        "app.kubernetes.io/name first"
    );
    assert_eq!(after("--log-level"), "debug");
    // The admin endpoints stay on loopback; probes (and Prometheus) use the status port.
    assert_eq!(after("--admin"), "127.0.0.1:15000");
    assert_eq!(after("--status"), "0.0.0.0:15020");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(proxy[probe]["httpGet"]["port"], 15020, "{probe}");
    }
    assert_eq!(
        after("--identity-token-file"),
        "/var/run/secrets/remora/token"
    );
    let init_args: Vec<&str> = inits[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let init_after = |flag: &str| init_args[init_args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(init_after("--proxy-uid"), "2102");
    assert_eq!(init_after("--exclude-outbound-ports"), "5432, 6379");
    assert_eq!(init_after("--exclude-inbound-ports"), "15000,15020");
    assert_eq!(
        inits[0]["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(
        spec["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "remora"
    );
    assert_eq!(
        spec["someFutureField"],
        json!({ "kept": true }),
        "unknown fields are kept"
    );
    assert_eq!(
        spec["containers"],
        docs(MIXED)[1]["spec"]["template"]["spec"]["containers"]
    );
    assert!(d[1]["spec"]["template"]["metadata"]["annotations"][annotations::INJECTED].is_string());
    // The CronJob's template, two levels down.
    let cron = &d[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(cron["initContainers"][1]["name"], "remora-proxy");
    assert_eq!(
        cron["restartPolicy"], "OnFailure",
        "the Job still completes: the sidecar is native"
    );
    assert_eq!(d[3], docs(MIXED)[3], "opted out: unchanged");
}

#[test]
fn injecting_twice_changes_nothing() {
    let (once, _) = inject_yaml(MIXED, &Options::default()).unwrap();
    let (twice, report) = inject_yaml(&once, &Options::default()).unwrap();
    assert_eq!(docs(&once), docs(&twice));
    assert!(report.iter().any(|(_, o)| *o == Outcome::AlreadyInjected));
    assert!(!report.iter().any(|(_, o)| *o == Outcome::Injected));
}

#[test]
fn every_workload_kind_and_lists_are_found() {
    for (kind, pointer) in [
        ("Deployment", "/spec/template/spec"),
        ("StatefulSet", "/spec/template/spec"),
        ("DaemonSet", "/spec/template/spec"),
        ("ReplicaSet", "/spec/template/spec"),
        ("Job", "/spec/template/spec"),
        ("CronJob", "/spec/jobTemplate/spec/template/spec"),
        ("Pod", "/spec"),
    ] {
        let spec = json!({ "containers": [{ "name": "app", "image": "x" }] });
        let mut object = json!({ "kind": kind, "metadata": { "name": "x" } });
        let mut at = &mut object;
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at = &mut at[*part];
            if i + 1 == parts.len() {
                *at = spec.clone();
            }
        }
        assert_eq!(
            inject_object(&mut object, &Options::default()),
            Outcome::Injected,
            "{kind}"
        );
        assert_eq!(
            object.pointer(pointer).unwrap()["initContainers"][1]["name"],
            "remora-proxy",
            "{kind}"
        );
    }
    let mut list = json!({
        "kind": "List",
        "items": [{ "kind": "Pod", "metadata": { "name": "p" }, "spec": { "containers": [] } }],
    });
    assert_eq!(
        inject_object(&mut list, &Options::default()),
        Outcome::Injected
    );
}

/// An AdmissionReview as the Kubernetes docs show it, for a Pod created by a ReplicaSet.
#[test]
fn the_webhook_answers_with_a_json_patch_that_injects() {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": { "generateName": "web-7d9f5-", "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "example/web:1" }] },
            },
            "dryRun": false,
        }
    });
    let answer = admission_response(&review, &Options::default());
    assert_eq!(answer["kind"], "AdmissionReview");
    let r = &answer["response"];
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_slice(&decode(r["patch"].as_str().unwrap())).unwrap();
    let ops = patch.as_array().unwrap();
    assert_eq!(ops[0]["op"], "add");
    assert_eq!(ops[0]["path"], "/spec/initContainers");
    assert_eq!(ops[0]["value"][1]["name"], "remora-proxy");
    assert_eq!(
        ops[0]["value"][1]["args"][5], "web",
        "--service from the app label"
    );
    assert_eq!(ops[2]["path"], "/metadata/annotations");

    // Injected already (a pod created from an injected template): allowed, no patch.
    let mut again = review.clone();
    again["request"]["object"]["spec"]["initContainers"] = json!([{ "name": "remora-proxy" }]);
    let answer = admission_response(&again, &Options::default());
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_null());
}

fn decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            _ => 63,
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .filter(|c| **c != b'=')
            .fold(0u32, |n, c| (n << 6) | value(*c))
            << (6 * chunk.iter().filter(|c| **c == b'=').count());
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - chunk.iter().filter(|c| **c == b'=').count()]);
    }
    out
}

#[test]
fn base64_matches_the_standard_alphabet_and_padding() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(
        decode(&base64(b"any bytes \x00\xff")),
        b"any bytes \x00\xff"
    );
}

#[test]
fn opaque_ports_become_a_proxy_flag_and_junk_is_dropped() {
    let pod = |annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  annotations:\n    \
             remora.io/opaque-ports: \"{annotation}\"\nspec:\n  containers:\n    \
             - {{ name: db, image: example/db:1 }}\n"
        )
    };
    let proxy_args = |text: &str| -> Vec<String> {
        let (out, _) = inject_yaml(text, &Options::default()).unwrap();
        let d = docs(&out);
        d[0]["spec"]["initContainers"][1]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let args = proxy_args(&pod("5432, 3306"));
    let at = args.iter().position(|a| a == "--opaque-ports").unwrap();
    assert_eq!(args[at + 1], "5432,3306");
    // A port the proxy could not parse would stop it from starting: left out.
    let args = proxy_args(&pod("5432,mysql,0,70000"));
    let at = args.iter().position(|a| a == "--opaque-ports").unwrap();
    assert_eq!(args[at + 1], "5432");
    let args = proxy_args(&pod("none"));
    assert!(!args.iter().any(|a| a == "--opaque-ports"), "{args:?}");
}

#[test]
fn an_https_control_plane_comes_with_its_ca_for_the_sidecar() {
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let options = Options {
        control_plane_ca: Some(PEM.into()),
        ..Options::default()
    };
    assert!(
        options.control_plane.starts_with("https://"),
        "TLS by default"
    );
    let (out, _) = inject_yaml(MIXED, &options).unwrap();
    let d = docs(&out);
    let proxy = &d[1]["spec"]["template"]["spec"]["initContainers"][1];
    let env = proxy["env"].as_array().unwrap();
    let ca = env
        .iter()
        .find(|e| e["name"] == CONTROL_PLANE_CA_ENV)
        .expect("the CA in the sidecar's environment");
    assert_eq!(ca["value"], PEM);
    let args = proxy["args"].as_array().unwrap();
    let at = args.iter().position(|a| a == "--control-plane").unwrap();
    assert_eq!(args[at + 1], options.control_plane.as_str());
}
