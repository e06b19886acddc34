//! Injection on manifests nobody here wrote: Airflow's pod templates, kopf's operator
//! deployment and RBAC, a kr8s test pod with its Service, and Dask's custom resources that
//! embed pod specs. They are vendored byte for byte under k8s/testdata/real-world, whose
//! README.md names each one's package, version and license; `scripts/validate-k8s.sh` checks
//! that they are valid Kubernetes before and after `remora inject`.

use super::*;
use std::path::{Path, PathBuf};

/// One vendored file, and what injection must make of it.
struct Manifest {
    /// Under k8s/testdata/real-world/.
    path: &'static str,
    text: &'static str,
    /// Each object, in order, as `kind/name`, with the service name its sidecar gets;
    /// `None` for an object that must come out exactly as it went in.
    objects: &'static [(&'static str, Option<&'static str>)],
}

macro_rules! manifest {
    ($path:literal, $objects:expr) => {
        Manifest {
            path: $path,
            text: include_str!(concat!("../../../k8s/testdata/real-world/", $path)),
            objects: $objects,
        }
    };
}

const MANIFESTS: &[Manifest] = &[
    // A pod template with only a label of its own (`mylabel: foo`): named after the pod.
    manifest!(
        "apache-airflow-providers-cncf-kubernetes/basic_template.yaml",
        &[(
            "Pod/placeholder-name-dont-delete",
            Some("placeholder-name-dont-delete"),
        )]
    ),
    manifest!(
        "apache-airflow-providers-cncf-kubernetes/dags_in_image_template.yaml",
        &[("Pod/placeholder-name", Some("placeholder-name"))]
    ),
    manifest!(
        "apache-airflow-providers-cncf-kubernetes/dags_in_volume_template.yaml",
        &[("Pod/placeholder-name", Some("placeholder-name"))]
    ),
    manifest!(
        "apache-airflow-providers-cncf-kubernetes/git_sync_template.yaml",
        &[("Pod/dummy-name", Some("dummy-name"))]
    ),
    manifest!(
        "dask-kubernetes/simplecluster.yaml",
        &[("DaskCluster/simple", None)]
    ),
    manifest!(
        "dask-kubernetes/simplejob.yaml",
        &[("DaskJob/simple-job", None)]
    ),
    // Labelled `application: kopfexample-operator`, a convention the injector does not read:
    // the name comes from the Deployment (the same word here).
    manifest!(
        "kopf/deployment-depl.yaml",
        &[(
            "Deployment/kopfexample-operator",
            Some("kopfexample-operator"),
        )]
    ),
    manifest!(
        "kopf/deployment-rbac.yaml",
        &[
            ("ServiceAccount/kopfexample-account", None),
            ("ClusterRole/kopfexample-role-cluster", None),
            ("Role/kopfexample-role-namespaced", None),
            ("ClusterRoleBinding/kopfexample-rolebinding-cluster", None),
            ("RoleBinding/kopfexample-rolebinding-namespaced", None),
        ]
    ),
    // The pod is `nginx`, but labelled `app.kubernetes.io/name: proxy`, which its Service
    // selects: the label wins.
    manifest!(
        "kr8s/nginx_pod_service.yaml",
        &[
            ("Pod/nginx", Some("proxy")),
            ("Service/nginx-service", None)
        ]
    ),
];

/// The documents of a YAML stream, empty ones (a comment header before `---`) left out, as
/// `inject_yaml` leaves them out.
fn docs(text: &str) -> Vec<Value> {
    let all: Vec<Value> = serde_saphyr::from_str_multiple(text).unwrap();
    all.into_iter().filter(|d| !d.is_null()).collect()
}

/// Where the pod template is in an object of this kind (`""`: the object is the pod).
fn template_pointer(label: &str) -> &'static str {
    match label.split('/').next().unwrap() {
        "Pod" => "",
        "Deployment" => "/spec/template",
        other => panic!("{other}: no workload of this kind among the vendored files"),
    }
}

/// Injects one vendored file: its documents before and after, and the report.
fn inject(m: &Manifest) -> (Vec<Value>, Vec<Value>, Vec<(String, Outcome)>) {
    let (out, report) =
        inject_yaml(m.text, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", m.path));
    let (before, after) = (docs(m.text), docs(&out));
    assert_eq!(before.len(), m.objects.len(), "{}", m.path);
    assert_eq!(
        after.len(),
        before.len(),
        "{}: objects lost or added",
        m.path
    );
    (before, after, report)
}

/// Every injected pod template in the vendored files: file, label, before, after.
fn injected_templates() -> Vec<(&'static str, &'static str, Value, Value)> {
    let mut out = Vec::new();
    for m in MANIFESTS {
        let (before, after, _) = inject(m);
        for (i, (label, service)) in m.objects.iter().enumerate() {
            if service.is_some() {
                let at = template_pointer(label);
                out.push((
                    m.path,
                    *label,
                    before[i].pointer(at).unwrap().clone(),
                    after[i].pointer(at).unwrap().clone(),
                ));
            }
        }
    }
    // Four Airflow pods, kopf's Deployment, kr8s's pod.
    assert_eq!(out.len(), 6);
    out
}

fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

/// The value after `flag` in an argument list.
fn arg<'a>(args: &'a Value, flag: &str) -> &'a str {
    let args = strings(args);
    let at = args.iter().position(|a| *a == flag).unwrap();
    args[at + 1]
}

#[test]
fn each_real_world_file_gets_one_outcome_per_object_and_only_workloads_are_injected() {
    for m in MANIFESTS {
        let (_, _, report) = inject(m);
        let labels: Vec<&str> = report.iter().map(|(l, _)| l.as_str()).collect();
        let expected: Vec<&str> = m.objects.iter().map(|(l, _)| *l).collect();
        assert_eq!(labels, expected, "{}", m.path);
        for ((label, outcome), (_, service)) in report.iter().zip(m.objects) {
            match service {
                Some(_) => assert_eq!(*outcome, Outcome::Injected, "{}: {label}", m.path),
                None => assert!(
                    matches!(outcome, Outcome::Skipped(why) if why.contains("has no pod template")),
                    "{}: {label}: {outcome:?}",
                    m.path
                ),
            }
        }
    }
}

#[test]
fn every_real_world_pod_gets_remora_init_then_remora_proxy_before_its_own_init_containers() {
    for (path, label, before, after) in injected_templates() {
        let (b, a) = (&before["spec"], &after["spec"]);
        let own_inits = b["initContainers"].as_array().cloned().unwrap_or_default();
        let inits = a["initContainers"].as_array().unwrap();
        let mut expected = vec!["remora-init", "remora-proxy"];
        expected.extend(own_inits.iter().map(|c| c["name"].as_str().unwrap()));
        assert_eq!(names(&a["initContainers"]), expected, "{path}: {label}");
        assert_eq!(
            inits[2..],
            own_inits[..],
            "{path}: {label}: the pod's own init containers, unchanged and in order"
        );
        // The proxy is a native sidecar that must be ready before the next init container
        // starts: git-sync's clone goes through it.
        assert_eq!(inits[1]["restartPolicy"], "Always", "{path}: {label}");
        assert_eq!(
            inits[1]["startupProbe"]["httpGet"]["path"], "/ready",
            "{path}: {label}"
        );
        assert_eq!(a["containers"], b["containers"], "{path}: {label}");

        let mut volumes = b["volumes"].as_array().cloned().unwrap_or_default();
        assert!(!volumes.iter().any(|v| v["name"] == "remora-token"));
        let token = a["volumes"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(token["name"], "remora-token", "{path}: {label}");
        assert_eq!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "remora"
        );
        volumes.push(token);
        assert_eq!(
            a["volumes"],
            Value::Array(volumes),
            "{path}: {label}: the pod's volumes are all kept, the token added after them"
        );
        assert_eq!(
            after["metadata"]["annotations"][annotations::INJECTED],
            env!("CARGO_PKG_VERSION")
        );

        // Nothing else changes: with what injection adds taken out, the template is as it was.
        let mut stripped = after.clone();
        let spec = stripped["spec"].as_object_mut().unwrap();
        let list = spec["initContainers"].as_array_mut().unwrap();
        list.drain(..2);
        if list.is_empty() {
            spec.remove("initContainers");
        }
        let list = spec["volumes"].as_array_mut().unwrap();
        list.pop();
        if list.is_empty() {
            spec.remove("volumes");
        }
        let metadata = stripped["metadata"].as_object_mut().unwrap();
        let notes = metadata["annotations"].as_object_mut().unwrap();
        notes.remove(annotations::INJECTED);
        if notes.is_empty() {
            metadata.remove("annotations");
        }
        assert_eq!(
            stripped, before,
            "{path}: {label}: only the injection changed"
        );
    }

    // Airflow's git-sync is the one pod with init containers of its own.
    let (_, _, _, git_sync) = injected_templates()
        .into_iter()
        .find(|(path, ..)| path.ends_with("git_sync_template.yaml"))
        .unwrap();
    assert_eq!(
        names(&git_sync["spec"]["initContainers"]),
        ["remora-init", "remora-proxy", "git-sync"]
    );
}

#[test]
fn the_whole_workload_object_around_the_template_is_unchanged() {
    for m in MANIFESTS {
        let (before, after, _) = inject(m);
        for (i, (label, service)) in m.objects.iter().enumerate() {
            if service.is_none() {
                continue;
            }
            let at = template_pointer(label);
            if at.is_empty() {
                continue; // a Pod: its template is the object, checked above
            }
            let mut outside = after[i].clone();
            *outside.pointer_mut(at).unwrap() = before[i].pointer(at).unwrap().clone();
            assert_eq!(outside, before[i], "{}: {label}", m.path);
        }
    }
}

#[test]
fn services_rbac_and_custom_resources_with_pod_specs_inside_come_out_identical() {
    let mut seen = 0;
    for m in MANIFESTS {
        let (before, after, _) = inject(m);
        for (i, (label, service)) in m.objects.iter().enumerate() {
            if service.is_none() {
                assert_eq!(after[i], before[i], "{}: {label}", m.path);
                seen += 1;
            }
        }
    }
    // kr8s's Service, kopf's five RBAC objects, two Dask custom resources.
    assert_eq!(seen, 8);

    // The Dask resources do hold pod specs, which a careless injector would find.
    for (path, pointers) in [
        (
            "dask-kubernetes/simplecluster.yaml",
            &["/spec/worker/spec", "/spec/scheduler/spec"][..],
        ),
        (
            "dask-kubernetes/simplejob.yaml",
            &[
                "/spec/job/spec",
                "/spec/cluster/spec/worker/spec",
                "/spec/cluster/spec/scheduler/spec",
            ][..],
        ),
    ] {
        let m = MANIFESTS.iter().find(|m| m.path == path).unwrap();
        let (out, _) = inject_yaml(m.text, &Options::default()).unwrap();
        let object = &docs(&out)[0];
        for pointer in pointers {
            let spec = object.pointer(pointer).unwrap();
            assert!(spec["containers"].is_array(), "{path}: {pointer}");
            assert!(spec["initContainers"].is_null(), "{path}: {pointer}");
            assert!(spec["volumes"].is_null(), "{path}: {pointer}");
        }
        assert!(!out.contains("remora"), "{path}: {out}");
    }
}

#[test]
fn injecting_a_real_world_file_again_changes_nothing() {
    for m in MANIFESTS {
        let (once, first) = inject_yaml(m.text, &Options::default()).unwrap();
        let (twice, second) = inject_yaml(&once, &Options::default()).unwrap();
        assert_eq!(docs(&twice), docs(&once), "{}", m.path);
        assert_eq!(second.len(), m.objects.len(), "{}", m.path);
        for (((label, outcome), (_, before)), (_, service)) in
            second.iter().zip(&first).zip(m.objects)
        {
            match service {
                Some(_) => assert_eq!(*outcome, Outcome::AlreadyInjected, "{}: {label}", m.path),
                None => assert_eq!(outcome, before, "{}: {label}", m.path),
            }
        }
    }
}

#[test]
fn airflows_pod_security_context_does_not_reach_the_sidecar() {
    let mut airflow = 0;
    for (path, label, before, after) in injected_templates() {
        let spec = &after["spec"];
        assert_eq!(
            spec["securityContext"], before["spec"]["securityContext"],
            "{path}: {label}: the pod's own, unchanged"
        );
        if path.starts_with("apache-airflow") {
            airflow += 1;
            assert_eq!(spec["securityContext"]["runAsUser"], 50000, "{path}");
            // The app's containers and git-sync set no user of their own: they run as 50000,
            // whose traffic the rules capture.
            for c in spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(&spec["initContainers"].as_array().unwrap()[2..])
            {
                assert!(c["securityContext"]["runAsUser"].is_null(), "{path}: {c}");
            }
        }
        let init = &spec["initContainers"][0];
        let proxy = &spec["initContainers"][1];

        // The proxy runs as PROXY_UID, set on the container: the pod's runAsUser would apply
        // otherwise, and the capture rules would redirect the proxy's own connections.
        let sc = &proxy["securityContext"];
        assert_eq!(sc["runAsUser"], PROXY_UID, "{path}: {label}");
        assert_eq!(sc["runAsGroup"], PROXY_UID, "{path}: {label}");
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"], json!({ "drop": ["ALL"] }));
        assert_eq!(arg(&init["args"], "--proxy-uid"), PROXY_UID.to_string());

        // The rules are installed as root, with the two network capabilities and nothing else.
        let sc = &init["securityContext"];
        assert_eq!(sc["runAsUser"], 0, "{path}: {label}");
        assert_eq!(sc["runAsNonRoot"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(
            sc["capabilities"],
            json!({ "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] })
        );
    }
    assert_eq!(airflow, 4);
}

/// `--service` is the pod's `app.kubernetes.io/name` label, else its `app` label, else the
/// workload's name (the Pod's own, for a Pod).
#[test]
fn the_sidecar_service_name_is_app_kubernetes_io_name_or_app_or_else_the_workload_name() {
    for m in MANIFESTS {
        let (_, after, _) = inject(m);
        for (i, (label, service)) in m.objects.iter().enumerate() {
            let Some(service) = service else { continue };
            let template = after[i].pointer(template_pointer(label)).unwrap();
            let proxy = &template["spec"]["initContainers"][1];
            assert_eq!(proxy["name"], "remora-proxy");
            assert_eq!(
                arg(&proxy["args"], "--service"),
                *service,
                "{}: {label}",
                m.path
            );
        }
    }
}

#[test]
fn every_vendored_manifest_is_tested_here_and_named_in_the_readme_with_its_license() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/testdata/real-world");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut on_disk: Vec<String> = files
        .iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .map(|p| p.strip_prefix(&root).unwrap().to_str().unwrap().to_owned())
        .collect();
    on_disk.sort();
    let mut tested: Vec<String> = MANIFESTS.iter().map(|m| m.path.to_owned()).collect();
    tested.sort();
    assert_eq!(on_disk, tested, "every vendored manifest is in MANIFESTS");

    for m in MANIFESTS {
        let (package, _) = m.path.split_once('/').unwrap();
        assert!(
            readme.contains(&format!("| `{}` |", m.path)),
            "README.md has no row for {}",
            m.path
        );
        assert!(
            root.join(package).join("LICENSE").is_file(),
            "{package}/LICENSE"
        );
        // The package's section names the version, the archive's digest and the license.
        let section = readme
            .split("\n### ")
            .find(|s| s.starts_with(&format!("{package}/\n")))
            .unwrap_or_else(|| panic!("README.md has no section for {package}/"));
        assert!(
            section.contains(&format!("PyPI package {package} version ")),
            "{package}"
        );
        assert!(section.contains("License: "), "{package}");
        let digest = section
            .split('`')
            .any(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(digest, "{package}: no sha256 in README.md");
    }
    // Apache-2.0 asks for the NOTICE to travel with the files.
    assert!(
        root.join("apache-airflow-providers-cncf-kubernetes/NOTICE")
            .is_file()
    );
}
