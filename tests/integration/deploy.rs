//! `deploy/` as an operator uses it: every Kustomize overlay renders offline and validates against
//! the Kubernetes schemas; the GPU agent DaemonSet reaches the GPUs, the host's processes and its
//! pods; the collector overlays probe, keep their data and hold only the RBAC the actuators need;
//! the configurations the manifests carry start the built binaries; the systemd units verify;
//! the image recipe lints clean; the Grafana dashboard queries only metrics that exist.
//!
//! The tools (kubectl, kubernetes-validate, systemd-analyze, hadolint) are installed by
//! `.ci/install-deploy-tools.sh`; without one a test prints `skipping: ...`, unless
//! `STOKER_REQUIRE_PEERS=1`, where it fails. The binaries are the workspace's debug builds,
//! which `cargo test --workspace` builds before running any test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use stoker_tests::{peer_available, workspace_root};

const SCRIPT: &str = "install-deploy-tools.sh";
/// The oldest Kubernetes the manifests are validated against (besides the newest schemas the
/// validator ships): nothing in them needs a later one.
const OLDEST_KUBERNETES: &str = "1.30.0";
/// The Secret the manifests refer to and that the operator creates by hand (deploy/README.md).
const TOKENS_SECRET: &str = "stoker-tokens";

fn deploy() -> PathBuf {
    workspace_root().join("deploy")
}

fn runs(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// kubectl whose built-in Kustomize is v5 or later (older ones cannot read these kustomizations).
fn kubectl_available() -> bool {
    let version = runs("kubectl", &["version", "--client"]).unwrap_or_default();
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    peer_available(major.is_some_and(|m| m >= 5), "kubectl with Kustomize v5+", SCRIPT)
}

/// The overlays and bases under deploy/, relative to it: every folder with a kustomization.
fn kustomizations() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if e.file_name() == "kustomization.yaml" {
                let rel = dir.strip_prefix(root).unwrap_or(dir);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&deploy(), &deploy(), &mut out);
    out.sort();
    out
}

/// What `kubectl kustomize deploy/<dir>` prints.
fn render_text(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy().join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

fn render(dir: &str) -> Vec<Value> {
    let text = render_text(dir);
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("deploy/{dir}: rendered YAML does not parse: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| {
        let have: Vec<String> =
            objs.iter().map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect();
        panic!("no {kind} {name} among {have:?}")
    })
}

fn all<'a>(objs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objs.iter().filter(move |o| o["kind"] == kind)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    arr(&pod["containers"])
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod}"))
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    arr(&c["env"]).iter().find(|e| e["name"] == name).and_then(|e| e["value"].as_str())
}

/// The value of `--flag=value` or `--flag value` in a container's args.
fn arg<'a>(c: &'a Value, flag: &str) -> &'a str {
    let args: Vec<&str> = arr(&c["args"]).iter().filter_map(Value::as_str).collect();
    let prefix = format!("{flag}=");
    args.iter()
        .enumerate()
        .find_map(|(i, a)| {
            a.strip_prefix(&prefix)
                .or_else(|| (*a == flag).then(|| args.get(i + 1).copied()).flatten())
        })
        .unwrap_or_else(|| panic!("{flag} not in the args {args:?}"))
}

/// The containerPort a probe's or Service's named (or numbered) port stands for.
fn port_of(c: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    arr(&c["ports"])
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port named {port} in container {}", c["name"]))
}

fn listen(text: &str, what: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("{what}: {text:?} is not an address: {e}"))
}

/// The volume holding `path` in container `c`: the mount at `path` itself or at the deepest
/// folder above it, with that mount's path and subPath.
fn mounted<'a>(pod: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a str, Option<&'a str>) {
    let (m, at) = arr(&c["volumeMounts"])
        .iter()
        .filter_map(|m| {
            let at = m["mountPath"].as_str()?;
            (path == at || path.starts_with(&format!("{at}/"))).then_some((m, at))
        })
        .max_by_key(|(_, at)| at.len())
        .unwrap_or_else(|| panic!("nothing mounted at {path} in container {}", c["name"]));
    let volume = arr(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == m["name"])
        .unwrap_or_else(|| panic!("no volume {} in the pod", m["name"]));
    (volume, at, m["subPath"].as_str())
}

/// The text of a file that a ConfigMap volume provides at `path`.
fn configmap_file(objs: &[Value], pod: &Value, c: &Value, path: &str) -> String {
    let (volume, at, sub) = mounted(pod, c, path);
    let name = volume["configMap"]["name"].as_str().expect("a ConfigMap volume");
    let key = sub.unwrap_or_else(|| path[at.len()..].trim_start_matches('/'));
    find(objs, "ConfigMap", name)["data"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no key {key}"))
        .to_owned()
}

/// Where in the tokens Secret a file path points: the key behind it, checked against the mount.
fn secret_key_at(pod: &Value, c: &Value, path: &str) -> String {
    let (volume, at, _) = mounted(pod, c, path);
    assert_eq!(
        volume["secret"]["secretName"], TOKENS_SECRET,
        "{path} is not from the tokens Secret"
    );
    let rel = path[at.len()..].trim_start_matches('/');
    let items = arr(&volume["secret"]["items"]);
    if items.is_empty() {
        return rel.to_owned();
    }
    items
        .iter()
        .find(|i| i["path"] == rel)
        .and_then(|i| i["key"].as_str())
        .unwrap_or_else(|| panic!("the tokens volume does not project {rel}"))
        .to_owned()
}

fn toml_of(text: &str, what: &str) -> toml::Table {
    text.parse().unwrap_or_else(|e| panic!("{what} is not TOML: {e}"))
}

fn str_at<'a>(t: &'a toml::Table, dotted: &str) -> Option<&'a str> {
    let mut parts = dotted.split('.');
    let first = parts.next()?;
    let mut v = t.get(first)?;
    for p in parts {
        v = v.get(p)?;
    }
    v.as_str()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn every_kustomization_renders_and_validates_against_the_kubernetes_schemas() {
    if !kubectl_available()
        || !peer_available(
            runs("kubernetes-validate", &["--version"]).is_some(),
            "kubernetes-validate",
            SCRIPT,
        )
    {
        return;
    }
    let dirs = kustomizations();
    for overlay in ["single", "ha", "agent-gpu"] {
        let dir = format!("kubernetes/overlays/{overlay}");
        assert!(dirs.contains(&dir), "overlay {dir} missing: {dirs:?}");
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for dir in &dirs {
        let file = tmp.path().join(format!("{}.yaml", dir.replace('/', "_")));
        std::fs::write(&file, render_text(dir)).expect("write rendered YAML");
        files.push(file);
    }
    for version in [Some(OLDEST_KUBERNETES), None] {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.args(["--strict", "--quiet"]);
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let out = cmd.args(&files).output().expect("run kubernetes-validate");
        assert!(
            out.status.success(),
            "deploy/ does not validate against Kubernetes {}:\n{}{}",
            version.unwrap_or("(newest)"),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for dir in &dirs {
        // Everything a pod mounts is shipped, except the tokens Secret made by hand.
        let objs = render(dir);
        for o in &objs {
            let pod = &o["spec"]["template"]["spec"];
            for v in arr(&pod["volumes"]) {
                if let Some(name) = v["configMap"]["name"].as_str() {
                    find(&objs, "ConfigMap", name);
                }
                if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
                    find(&objs, "PersistentVolumeClaim", name);
                }
                if let Some(name) = v["secret"]["secretName"].as_str() {
                    assert_eq!(name, TOKENS_SECRET, "deploy/{dir}: unexpected Secret {name}");
                }
            }
            for c in arr(&pod["containers"]) {
                let image = c["image"].as_str().unwrap_or_default();
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                assert!(
                    !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                    "deploy/{dir}: image {image:?} has no fixed tag"
                );
            }
        }
    }
    let readme = std::fs::read_to_string(deploy().join("README.md")).expect("deploy/README.md");
    assert!(
        readme.contains(&format!("create secret generic {TOKENS_SECRET}")),
        "deploy/README.md must say how to create the {TOKENS_SECRET} Secret"
    );
}

#[test]
fn gpu_agent_daemonset_reaches_gpus_host_processes_and_pods() {
    if !kubectl_available() {
        return;
    }
    let objs = render("kubernetes/overlays/agent-gpu");
    let ds = find(&objs, "DaemonSet", "stoker-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(pod, "agent");

    // GPU access: the NVIDIA runtime injects the devices and the driver's NVML, without the pod
    // taking a GPU from the device plugin.
    assert_eq!(pod["runtimeClassName"], "nvidia");
    assert_eq!(env(c, "NVIDIA_VISIBLE_DEVICES"), Some("all"));
    let caps = env(c, "NVIDIA_DRIVER_CAPABILITIES").expect("NVIDIA_DRIVER_CAPABILITIES");
    assert!(caps.split(',').any(|x| x.trim() == "utility"), "capabilities {caps:?}");
    for section in ["requests", "limits"] {
        let r = &c["resources"][section];
        assert!(r["nvidia.com/gpu"].is_null(), "the agent must not take a GPU: {r}");
        assert!(!r["memory"].is_null(), "resources.{section}.memory missing");
    }
    // On every GPU node, tainted or not.
    let tolerated = arr(&pod["tolerations"]).iter().any(|t| {
        t["key"] == "nvidia.com/gpu"
            && t["operator"] == "Exists"
            && (t["effect"].is_null() || t["effect"] == "NoSchedule")
    });
    assert!(tolerated, "no toleration of the nvidia.com/gpu taint: {}", pod["tolerations"]);

    // The node's processes, with the pids NVML reports.
    assert_eq!(pod["hostPID"], true);
    // host.id from the node.
    let (volume, at, _) = mounted(pod, c, "/etc/machine-id");
    assert_eq!(at, "/etc/machine-id");
    assert_eq!(volume["hostPath"]["path"], "/etc/machine-id");

    // Receivers reachable from pods: on every address of the node, at the declared ports.
    let host_network = pod["hostNetwork"] == true;
    if host_network {
        assert_eq!(
            pod["dnsPolicy"], "ClusterFirstWithHostNet",
            "cluster DNS from the host network"
        );
    }
    for (flag, name) in [("--otlp-grpc-listen", "otlp-grpc"), ("--otlp-http-listen", "otlp-http")] {
        let addr = listen(arg(c, flag), flag);
        assert!(addr.ip().is_unspecified(), "{flag} {addr} is not reachable from pods");
        let port = arr(&c["ports"]).iter().find(|p| p["name"] == name).expect("receiver port");
        assert_eq!(port["containerPort"].as_u64(), Some(u64::from(addr.port())), "{name}");
        assert!(
            host_network || port["hostPort"] == port["containerPort"],
            "{name}: neither hostNetwork nor a hostPort"
        );
    }
    // Either way in: the node-local Service...
    let svc = all(&objs, "Service")
        .find(|s| s["spec"]["internalTrafficPolicy"] == "Local")
        .expect("a node-local Service (internalTrafficPolicy: Local)");
    assert!(
        labels_match(&svc["spec"]["selector"], &ds["spec"]["template"]["metadata"]["labels"]),
        "the node-local Service does not select the agent pods"
    );
    let svc_ports: BTreeSet<u64> =
        arr(&svc["spec"]["ports"]).iter().map(|p| port_of(c, &p["targetPort"])).collect();
    assert_eq!(svc_ports, BTreeSet::from([4317, 4318]));
    // ...and status.hostIP, documented for the services' OTEL_EXPORTER_OTLP_ENDPOINT.
    let readme = std::fs::read_to_string(deploy().join("README.md")).expect("deploy/README.md");
    for needle in ["fieldPath: status.hostIP", "OTEL_EXPORTER_OTLP_ENDPOINT", "$(HOST_IP):4317"] {
        assert!(readme.contains(needle), "deploy/README.md does not show {needle:?}");
    }

    // Probes on the agent's /healthz, on the port it serves it.
    let metrics = listen(arg(c, "--metrics-listen"), "--metrics-listen");
    assert!(metrics.ip().is_unspecified(), "the kubelet probes the pod's IP, not {metrics}");
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], "/healthz", "{probe}");
        assert_eq!(port_of(c, &get["port"]), u64::from(metrics.port()), "{probe} port");
    }

    // The collector it exports to is the collector's Service, and it holds the write token.
    let collector = arg(c, "--collector");
    let svc = find(&render("kubernetes/base/collector"), "Service", "stoker-collector").clone();
    let grpc = arr(&svc["spec"]["ports"]).iter().find(|p| p["name"] == "otlp-grpc").cloned();
    let port = grpc.and_then(|p| p["port"].as_u64()).expect("collector otlp-grpc port");
    assert_eq!(
        collector,
        format!(
            "http://stoker-collector.{}.svc:{port}",
            svc["metadata"]["namespace"].as_str().unwrap_or_default()
        )
    );
    let config = configmap_file(&objs, pod, c, arg(c, "--config"));
    let config = toml_of(&config, "agent.toml");
    let token = str_at(&config, "export.token_file").expect("export.token_file");
    assert_eq!(secret_key_at(pod, c, token), "write");
}

/// What the actuators call (collector/src/actuate/kubernetes.rs): (API group, resource, verb).
/// Leader election goes through etcd, which needs no Kubernetes rights.
fn needed_rbac() -> BTreeSet<(String, String, String)> {
    let mut need = BTreeSet::new();
    for res in ["deployments/scale", "statefulsets/scale"] {
        for verb in ["get", "patch"] {
            need.insert(("apps".to_owned(), res.to_owned(), verb.to_owned()));
        }
    }
    for res in ["deployments", "statefulsets"] {
        need.insert(("apps".to_owned(), res.to_owned(), "get".to_owned()));
    }
    for verb in ["create", "get", "delete"] {
        need.insert(("batch".to_owned(), "jobs".to_owned(), verb.to_owned()));
    }
    need
}

/// Every (group, resource, verb) granted to a service account through (Cluster)RoleBindings.
fn granted(objs: &[Value], namespace: &str, account: &str) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for kind in ["ClusterRoleBinding", "RoleBinding"] {
        for b in all(objs, kind) {
            let bound = arr(&b["subjects"]).iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
            });
            if !bound {
                continue;
            }
            let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
            let role = find(objs, role_kind, b["roleRef"]["name"].as_str().unwrap_or_default());
            for rule in arr(&role["rules"]) {
                for g in arr(&rule["apiGroups"]) {
                    for r in arr(&rule["resources"]) {
                        for v in arr(&rule["verbs"]) {
                            let s = |x: &Value| x.as_str().unwrap_or_default().to_owned();
                            out.insert((s(g), s(r), s(v)));
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn collector_overlays_probe_keep_their_data_and_hold_only_the_rbac_they_need() {
    if !kubectl_available() {
        return;
    }
    for overlay in ["single", "ha"] {
        let objs = render(&format!("kubernetes/overlays/{overlay}"));
        let d = find(&objs, "Deployment", "stoker-collector");
        let namespace = d["metadata"]["namespace"].as_str().expect("namespace");
        let pod = &d["spec"]["template"]["spec"];
        let c = container(pod, "collector");
        let config = toml_of(&configmap_file(&objs, pod, c, arg(c, "--config")), "collector.toml");

        // Tokens configured, so the listeners are not confined to 127.0.0.1 (where neither the
        // kubelet's probes nor the agents would reach them).
        for key in ["read", "write"] {
            let file = str_at(&config, &format!("auth.{key}_token_file"))
                .unwrap_or_else(|| panic!("{overlay}: auth.{key}_token_file"));
            assert_eq!(secret_key_at(pod, c, file), key, "{overlay}: auth.{key}_token_file");
        }
        let mut ports = BTreeMap::new();
        for key in ["api_listen", "otlp_grpc_listen", "otlp_http_listen"] {
            let text = str_at(&config, &format!("server.{key}")).expect("listener");
            let addr = listen(text, key);
            assert!(addr.ip().is_unspecified(), "{overlay}: server.{key} = {addr}");
            ports.insert(key, u64::from(addr.port()));
        }
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe}");
            assert_eq!(port_of(c, &get["port"]), ports["api_listen"], "{overlay}: {probe} port");
        }
        let svc = find(&objs, "Service", "stoker-collector");
        assert!(labels_match(
            &svc["spec"]["selector"],
            &d["spec"]["template"]["metadata"]["labels"]
        ));
        let exposed: BTreeMap<u64, u64> = arr(&svc["spec"]["ports"])
            .iter()
            .map(|p| (p["port"].as_u64().unwrap_or(0), port_of(c, &p["targetPort"])))
            .collect();
        assert_eq!(
            exposed,
            BTreeMap::from([
                (4417, ports["otlp_grpc_listen"]),
                (4418, ports["otlp_http_listen"]),
                (7700, ports["api_listen"])
            ]),
            "{overlay}: Service ports"
        );
        let pdb = find(&objs, "PodDisruptionBudget", "stoker-collector");
        assert!(labels_match(
            &pdb["spec"]["selector"]["matchLabels"],
            &d["spec"]["template"]["metadata"]["labels"]
        ));
        assert!(!c["resources"]["requests"]["memory"].is_null(), "{overlay}: memory request");
        assert!(!c["resources"]["limits"]["memory"].is_null(), "{overlay}: memory limit");

        // Exactly the API calls the actuators make.
        let account = pod["serviceAccountName"].as_str().expect("serviceAccountName");
        let ha = overlay == "ha";
        assert_eq!(granted(&objs, namespace, account), needed_rbac(), "{overlay}: RBAC");

        // The policy set: the repository's policies, read from the ConfigMap's current payload.
        let policies = arg(c, "--policies");
        let (volume, at, _) = mounted(pod, c, policies);
        assert_eq!(policies, format!("{at}/..data"), "{overlay}: --policies");
        let cm = find(&objs, "ConfigMap", volume["configMap"]["name"].as_str().unwrap_or_default());
        assert_eq!(
            configmap_policies(cm),
            repository_policies(),
            "{overlay}: the policy ConfigMap is not policies/*.yaml: copy them (tests aside) to \
             deploy/kubernetes/base/collector/policies/ and list them in its kustomization.yaml"
        );

        let data = &mounted(pod, c, arg(c, "--data-dir")).0;
        if ha {
            assert_eq!(d["spec"]["replicas"], 3);
            assert_eq!(str_at(&config, "store.backend"), Some("remote"));
            assert!(str_at(&config, "store.remote.write_url").is_some());
            assert!(str_at(&config, "store.remote.query_url").is_some());
            assert_eq!(str_at(&config, "cluster.backend"), Some("etcd"));
            // The endpoints are the shipped etcd's members, by their stable names.
            let etcd = find(&objs, "StatefulSet", "stoker-etcd");
            let members = etcd["spec"]["replicas"].as_u64().expect("etcd replicas");
            let service = etcd["spec"]["serviceName"].as_str().expect("etcd serviceName");
            let want: Vec<String> = (0..members)
                .map(|i| format!("http://stoker-etcd-{i}.{service}.{namespace}.svc:2379"))
                .collect();
            let got: Vec<String> = config["cluster"]["etcd_endpoints"]
                .as_array()
                .expect("cluster.etcd_endpoints")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            assert_eq!(got, want, "{overlay}: etcd_endpoints");
            assert!(members >= 3 && members % 2 == 1, "etcd needs an odd quorum of 3 or more");
            let dashboard = all(&objs, "ConfigMap")
                .find(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
                .expect("the Grafana dashboard ConfigMap");
            let json = std::fs::read_to_string(deploy().join("grafana/stoker-fleet.json"))
                .expect("dashboard JSON");
            assert_eq!(dashboard["data"]["stoker-fleet.json"].as_str(), Some(json.as_str()));
        } else {
            assert_eq!(d["spec"]["replicas"], 1);
            assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "one writer of the store");
            let claim = data["persistentVolumeClaim"]["claimName"].as_str().expect("a claim");
            find(&objs, "PersistentVolumeClaim", claim);
        }
    }
}

fn configmap_policies(cm: &Value) -> BTreeMap<String, String> {
    cm["data"]
        .as_object()
        .map(|m| {
            m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect()
        })
        .unwrap_or_default()
}

/// `policies/*.yaml` without the tests, by file name.
fn repository_policies() -> BTreeMap<String, String> {
    let dir = workspace_root().join("policies");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).expect("policies/").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && !name.ends_with(".test.yaml") {
            out.insert(name, std::fs::read_to_string(e.path()).expect("read policy"));
        }
    }
    out
}

// --- the built binaries with the shipped configurations ---------------------------------------

/// target/debug (or the profile these tests were built in), where the workspace's binaries are:
/// `cargo test --workspace` builds them before any test runs.
fn binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join(name);
    if path.is_file() {
        return Some(path);
    }
    let build = format!("cargo build -p {name} --bin {name}, or cargo test --workspace");
    if std::env::var("STOKER_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{} is required (STOKER_REQUIRE_PEERS=1) but not built: {build}", path.display());
    }
    eprintln!("skipping: {} not built ({build})", path.display());
    None
}

/// A running child whose stdout and stderr lines arrive on a channel; killed on drop.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary");
        let (tx, lines) = mpsc::channel();
        for out in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Running { child, lines, seen: Vec::new() }
    }

    /// The first line containing `needle` within `within`, or None once the process has exited
    /// (or the time is up); every line read is kept in `seen`.
    fn wait_for(&mut self, needle: &str, within: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn exit_code(&mut self) -> Option<i32> {
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn log(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET over plain HTTP/1.0 on loopback: status code and body.
fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// The pod's files laid out as the kubelet lays out a ConfigMap volume: the payload in a
/// timestamped folder, `..data` pointing at it, and each key a link through `..data`.
fn kubelet_configmap_dir(root: &Path, files: &BTreeMap<String, String>) -> PathBuf {
    let payload = root.join("..2026_01_01_00_00_00.000000001");
    std::fs::create_dir_all(&payload).expect("payload dir");
    for (name, text) in files {
        std::fs::write(payload.join(name), text).expect("write payload");
        std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).expect("key link");
    }
    std::os::unix::fs::symlink(payload.file_name().expect("name"), root.join("..data"))
        .expect("..data link");
    root.to_owned()
}

/// Replaces the pod's paths (mount points) by their places under `tmp`.
fn relocate(text: &str, mounts: &[(&str, &Path)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in mounts {
        out = out.replace(from, &to.to_string_lossy());
    }
    out
}

/// The collector of `overlay` started as its Deployment starts it, but on loopback ports and
/// temporary folders: the config from its ConfigMap, the policies in the kubelet's layout.
fn start_collector(
    overlay: &str,
    tmp: &Path,
    edit: impl Fn(&str) -> String,
) -> Option<(Running, String)> {
    let bin = binary("stoker-collector")?;
    let objs = render(&format!("kubernetes/overlays/{overlay}"));
    let d = find(&objs, "Deployment", "stoker-collector");
    let pod = &d["spec"]["template"]["spec"];
    let c = container(pod, "collector");
    let config_path = arg(c, "--config");
    let config = configmap_file(&objs, pod, c, config_path);
    let read_file = str_at(&toml_of(&config, "collector.toml"), "auth.read_token_file")
        .expect("auth.read_token_file")
        .to_owned();
    let (_, tokens_at, _) = mounted(pod, c, &read_file);
    let (policy_volume, policies_at, _) = mounted(pod, c, arg(c, "--policies"));
    let tokens = tmp.join("tokens");
    std::fs::create_dir_all(&tokens).expect("tokens dir");
    let read_token = "read-token-for-the-deploy-test".to_owned();
    std::fs::write(tokens.join("read"), &read_token).expect("read token");
    std::fs::write(tokens.join("write"), "write-token-for-the-deploy-test").expect("write token");
    let policies = tmp.join("policies");
    std::fs::create_dir_all(&policies).expect("policies dir");
    let cm = find(&objs, "ConfigMap", policy_volume["configMap"]["name"].as_str().unwrap_or(""));
    kubelet_configmap_dir(&policies, &configmap_policies(cm));
    let config = edit(&relocate(&config, &[(tokens_at, &tokens)]));
    let config_file = tmp.join("collector.toml");
    std::fs::write(&config_file, config).expect("write collector.toml");
    let data = tmp.join("data");

    let mut args: Vec<String> = Vec::new();
    for a in arr(&c["args"]).iter().filter_map(Value::as_str) {
        let a = a.replace(config_path, &config_file.to_string_lossy());
        let a = relocate(&a, &[(policies_at, &policies)]);
        let a = match a.strip_prefix("--data-dir=") {
            Some(_) => format!("--data-dir={}", data.display()),
            None => a,
        };
        args.push(a);
    }
    for flag in ["--api-listen", "--otlp-grpc-listen", "--otlp-http-listen"] {
        args.push(format!("{flag}=127.0.0.1:0"));
    }
    let running = Running::start(Command::new(bin).args(&args).env("RUST_LOG", "warn"));
    Some((running, read_token))
}

fn api_addr(listening: &str) -> SocketAddr {
    let api = listening
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .unwrap_or_else(|| panic!("no api= in {listening:?}"));
    listen(api, "api")
}

#[test]
fn single_collector_starts_from_its_manifests_and_loads_the_policy_configmap() {
    if !kubectl_available() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let Some((mut collector, token)) = start_collector("single", tmp.path(), str::to_owned) else {
        return;
    };
    let Some(listening) = collector.wait_for("listening api=", Duration::from_secs(30)) else {
        panic!("collector did not start (exit {:?}):\n{}", collector.exit_code(), collector.log());
    };
    let api = api_addr(&listening);
    // The probes' paths answer without a token; the policy set came through `..data`.
    assert_eq!(http_get(api, "/healthz", None).0, 200);
    let mut ready = 0;
    for _ in 0..50 {
        ready = http_get(api, "/readyz", None).0;
        if ready == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ready, 200, "/readyz");
    assert_eq!(http_get(api, "/api/v1/policies", None).0, 401, "the API needs the read token");
    let (status, body) = http_get(api, "/api/v1/policies", Some(&token));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("policies JSON");
    let loaded: BTreeSet<&str> =
        arr(&v["policies"]).iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(loaded, BTreeSet::from(["resnet-retrain", "resnet-serving"]), "{body}");
    assert_eq!(arr(&v["errors"]).len(), 0, "{body}");
}

/// The HA collector starts from its manifests with its whole configuration, `[cluster]`
/// included, and leads through a real etcd (Debian's `etcd-server`, one member on loopback, in
/// place of the overlay's etcd StatefulSet; `.ci/install-etcd.sh`).
#[test]
fn ha_collector_leads_from_its_manifests_on_a_real_etcd() {
    if !kubectl_available() {
        return;
    }
    let bin = stoker_tests::installed_bin("etcd");
    if !peer_available(bin.is_some(), "etcd", "install-etcd.sh") {
        return;
    }
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let etcd_dir = tempfile::tempdir().expect("temp dir");
    let port = free();
    let etcd =
        stoker_tests::etcd_command(&bin.unwrap(), &etcd_dir.path().join("data"), port, free())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
    let _etcd = stoker_tests::KillOnDrop(etcd);
    let etcd_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let healthy = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        TcpStream::connect_timeout(&etcd_addr, Duration::from_secs(1)).is_ok()
            && http_get(etcd_addr, "/health", None).1.contains("\"health\":\"true\"")
    });
    assert!(healthy, "etcd on {etcd_addr} did not become healthy");

    // The remote store's URLs point at loopback here (nothing listens: the collector starts
    // without reaching its store) and etcd is the one above; the example's in-cluster hosts
    // are never contacted.
    let on_loopback = |text: &str| {
        let mut t = toml_of(text, "HA collector.toml");
        let remote = t
            .get_mut("store")
            .and_then(toml::Value::as_table_mut)
            .and_then(|s| s.get_mut("remote"))
            .and_then(toml::Value::as_table_mut)
            .expect("[store.remote]");
        assert!(remote.contains_key("write_url") && remote.contains_key("query_url"));
        remote.insert("write_url".into(), "http://127.0.0.1:9/api/v1/write".into());
        remote.insert("query_url".into(), "http://127.0.0.1:9".into());
        let cluster = t.get_mut("cluster").and_then(toml::Value::as_table_mut).expect("[cluster]");
        let endpoints = toml::Value::Array(vec![format!("http://{etcd_addr}").into()]);
        assert!(cluster.insert("etcd_endpoints".into(), endpoints).is_some());
        cluster.insert("member".into(), "stoker-collector-0".into());
        t.to_string()
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let Some((mut collector, token)) = start_collector("ha", tmp.path(), on_loopback) else {
        return;
    };
    let Some(listening) = collector.wait_for("listening api=", Duration::from_secs(30)) else {
        panic!("HA collector refused (exit {:?}):\n{}", collector.exit_code(), collector.log());
    };
    let api = api_addr(&listening);
    let mut view = Value::Null;
    for _ in 0..100 {
        let (status, body) = http_get(api, "/api/v1/cluster", Some(&token));
        assert_eq!(status, 200, "{body}");
        view = serde_json::from_str(&body).expect("cluster JSON");
        if view["role"] == "leader" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(view["role"], "leader", "the only member leads: {view}\n{}", collector.log());
    assert_eq!(view["self"], "stoker-collector-0");
    assert_eq!(view["backend"], "etcd");
    assert_eq!(view["lease_ttl_s"], 10);
}

#[test]
fn agent_starts_with_the_daemonset_args_and_config() {
    if !kubectl_available() {
        return;
    }
    let Some(bin) = binary("stoker-agent") else { return };
    let objs = render("kubernetes/overlays/agent-gpu");
    let ds = find(&objs, "DaemonSet", "stoker-agent");
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(pod, "agent");
    let tmp = tempfile::tempdir().expect("temp dir");
    let config_path = arg(c, "--config");
    let config = configmap_file(&objs, pod, c, config_path);
    let token_file = str_at(&toml_of(&config, "agent.toml"), "export.token_file")
        .expect("export.token_file")
        .to_owned();
    let (_, tokens_at, _) = mounted(pod, c, &token_file);
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir_all(&tokens).expect("tokens dir");
    std::fs::write(tokens.join("write"), "write-token-for-the-deploy-test").expect("token");
    let config_file = tmp.path().join("agent.toml");
    std::fs::write(&config_file, relocate(&config, &[(tokens_at, &tokens)])).expect("agent.toml");

    // The DaemonSet's own flags, with loopback addresses, a collector that is not there (the
    // agent buffers) and no NVML (host metrics only).
    let mut args: Vec<String> = Vec::new();
    for a in arr(&c["args"]).iter().filter_map(Value::as_str) {
        let (flag, _) = a.split_once('=').unwrap_or((a, ""));
        args.push(match flag {
            "--config" => format!("--config={}", config_file.display()),
            "--collector" => "--collector=http://127.0.0.1:9".to_owned(),
            "--otlp-grpc-listen" | "--otlp-http-listen" | "--metrics-listen" => {
                format!("{flag}=127.0.0.1:0")
            }
            _ => a.to_owned(),
        });
    }
    args.push(format!("--nvml-lib={}", tmp.path().join("no-libnvidia-ml.so.1").display()));
    let mut agent = Running::start(Command::new(bin).args(&args).env("RUST_LOG", "info"));
    if agent.wait_for("Agent started.", Duration::from_secs(30)).is_none() {
        panic!("agent did not start (exit {:?}):\n{}", agent.exit_code(), agent.log());
    }
}

// --- systemd, image recipe, dashboard ----------------------------------------------------------

#[test]
fn systemd_units_verify_with_the_built_binaries() {
    if !peer_available(runs("systemd-analyze", &["--version"]).is_some(), "systemd-analyze", SCRIPT)
    {
        return;
    }
    let (Some(agent), Some(collector)) = (binary("stoker-agent"), binary("stoker-collector"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for (unit, bin) in [("stoker-agent.service", &agent), ("stoker-collector.service", &collector)]
    {
        let text = std::fs::read_to_string(deploy().join("systemd").join(unit)).expect("unit");
        let installed =
            format!("/usr/local/bin/{}", bin.file_name().and_then(|n| n.to_str()).unwrap_or(""));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        assert!(exec.starts_with(&installed), "{unit}: ExecStart runs {exec}");
        // Every flag the unit passes is one the binary takes.
        let help = Command::new(bin)
            .args(exec.split_whitespace().skip(1).take_while(|w| !w.starts_with('-')))
            .arg("--help")
            .output()
            .expect("--help");
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
            assert!(help.contains(flag), "{unit}: {} does not take {flag}", bin.display());
        }
        for key in
            ["DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes", "ProtectHome=yes"]
        {
            assert!(text.lines().any(|l| l == key), "{unit}: {key} missing");
        }
        if unit == "stoker-collector.service" {
            for key in ["StateDirectory=stoker", "ReadWritePaths=/var/lib/stoker"] {
                assert!(text.lines().any(|l| l == key), "{unit}: {key} missing");
            }
            assert!(exec.contains("--data-dir /var/lib/stoker"), "{unit}: data dir");
        }
        let path = tmp.path().join(unit);
        std::fs::write(&path, text.replace(&installed, &bin.to_string_lossy())).expect("unit");
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown or misspelt keys are only warnings (exit 0): any line about our units fails.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("stoker-")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
    // systemd's own exposure score (0 = locked down, 10 = none), 2.5 at most: the agent scores
    // 2.1 (it keeps the devices and the process view), the collector 1.7.
    for unit in &units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
            .arg(unit)
            .output()
            .expect("systemd-analyze security");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let score = stdout.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("");
        assert!(out.status.success(), "{}: {score}", unit.display());
    }
}

#[test]
fn image_recipe_lints_clean_and_ships_no_nvidia_library() {
    if !peer_available(runs("hadolint", &["--version"]).is_some(), "hadolint", SCRIPT) {
        return;
    }
    let file = deploy().join("Dockerfile");
    let out = Command::new("hadolint")
        .args(["--no-color", "--failure-threshold", "info"])
        .arg(&file)
        .output()
        .expect("run hadolint");
    assert!(
        out.status.success(),
        "hadolint deploy/Dockerfile:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("Dockerfile");
    // Per final stage: a non-root user, the binary as entrypoint, OCI labels.
    let mut stages: BTreeMap<String, String> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some(from) = line.strip_prefix("FROM ") {
            current = from.split(" AS ").nth(1).unwrap_or_default().trim().to_owned();
        }
        stages.entry(current.clone()).or_default().push_str(&format!("{line}\n"));
    }
    for (stage, bin) in [("agent", "stoker-agent"), ("collector", "stoker-collector")] {
        let body = stages.get(stage).unwrap_or_else(|| panic!("no stage {stage}"));
        assert!(body.contains("USER 65532:65532"), "{stage}: not non-root");
        assert!(body.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")), "{stage}");
        for label in ["title", "version", "revision", "licenses", "source"] {
            let key = format!("org.opencontainers.image.{label}=");
            assert!(body.contains(&key), "{stage}: label {key} missing");
        }
    }
    // The driver's NVML comes from the NVIDIA container toolkit at run time, never the image.
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(!line.to_lowercase().contains("nvidia"), "the image must not ship NVIDIA: {line}");
    }
    assert!(
        deploy().join("Dockerfile.dockerignore").is_file(),
        "no deploy/Dockerfile.dockerignore: the build context would carry target/"
    );
}

/// The Prometheus names of the documented metrics (README metric tables), per the
/// OpenTelemetry-to-Prometheus rules: dots to underscores, unit suffix (`_ratio` for unit 1 on
/// gauges only), `_total` for counters, `_bucket`/`_sum`/`_count` for histograms.
fn documented_prometheus_names() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let mut out = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(i) = cells.iter().position(|c| {
            c.len() > 2
                && c.starts_with('`')
                && c.ends_with('`')
                && c.matches('`').count() == 2
                && c[1..c.len() - 1]
                    .chars()
                    .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '.' || x == '_')
                && c.contains('.')
        }) else {
            continue;
        };
        let name = &cells[i][1..cells[i].len() - 1];
        let kind_unit = cells.get(i + 1).copied().unwrap_or_default();
        let (kind, unit) = kind_unit.split_once(',').unwrap_or((kind_unit, ""));
        let kind = kind.split_whitespace().next().unwrap_or_default();
        let unit = unit.trim();
        if !["gauge", "counter", "updown", "histogram"].contains(&kind) {
            continue;
        }
        let mut base: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let suffix = match unit {
            "By" => "_bytes",
            "By/s" => "_bytes_per_second",
            "s" => "_seconds",
            "W" => "_watts",
            "J" => "_joules",
            "Cel" => "_celsius",
            "MHz" => "_megahertz",
            "1" if kind == "gauge" => "_ratio",
            _ => "",
        };
        if !base.ends_with(suffix) {
            base.push_str(suffix);
        }
        match kind {
            "counter" => {
                out.insert(format!("{base}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{base}{s}"));
                }
            }
            _ => {
                out.insert(base);
            }
        }
    }
    out
}

/// Metric names in a PromQL expression: identifiers outside label matchers, ranges and strings
/// that are neither functions, aggregations, keywords nor grouping labels.
fn promql_metrics(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "by", "without", "on"];
    // Aggregations may take their grouping before the parenthesis: `sum by (le) (...)`.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| {
        let mut j = i;
        while j < chars.len() && chars[j] != close {
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let ch = chars[i];
        match ch {
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '"' | '\'' => i = skip_to(i + 1, ch),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let called = chars.get(j) == Some(&'(');
                let grouping = ["by", "without", "on", "ignoring", "group_left", "group_right"];
                if called && grouping.contains(&ident.as_str()) {
                    i = skip_to(j, ')');
                } else if !called
                    && !KEYWORDS.contains(&ident.as_str())
                    && !AGGREGATIONS.contains(&ident.as_str())
                {
                    out.push(ident);
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("definition", Value::String(s)) => {
                        // label_values(selector, label) names a metric; label_values(label) none.
                        let inner = s.trim_start_matches("label_values(").trim_end_matches(')');
                        if let Some((selector, _)) = inner.rsplit_once(',') {
                            out.push(selector.trim().to_owned());
                        }
                    }
                    _ => exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// Every `"stoker_remote_write_…"` string literal in `collector/src/remote/`: the names the
/// remote writer's `metrics_text` puts on `/metrics`. A literal followed by its kind
/// (`one("…", "gauge", …)`) is one series; any other (the histogram's `let name = "…"`) also
/// stands for its `_bucket`, `_sum` and `_count`.
fn remote_write_metric_names() -> BTreeSet<String> {
    let dir = workspace_root().join("collector/src/remote");
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(&dir).expect("collector/src/remote").flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for piece in text.split("\"stoker_remote_write_").skip(1) {
            let Some((rest, after)) = piece.split_once('"') else { continue };
            if !rest.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                continue;
            }
            let name = format!("stoker_remote_write_{rest}");
            if !after.starts_with(", \"gauge\"") && !after.starts_with(", \"counter\"") {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            out.insert(name);
        }
    }
    assert!(out.contains("stoker_remote_write_queue_bytes"), "remote-write names not found");
    out
}

#[test]
fn grafana_dashboard_queries_only_metrics_that_exist() {
    let text = std::fs::read_to_string(deploy().join("grafana/stoker-fleet.json")).expect("JSON");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "stoker-fleet");
    let mut ids = BTreeSet::new();
    for p in arr(&dash["panels"]) {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
            assert!(!arr(&p["targets"]).is_empty(), "panel {} has no query", p["title"]);
        }
    }
    let mut known = documented_prometheus_names();
    assert!(known.contains("hw_gpu_utilization_ratio"), "README metric tables not found");
    // The anomaly scorer's gauge, written by the collector itself (README, "Anomaly signals").
    known.insert("stoker_anomaly_score".to_owned());
    // The remote-write queue's figures are on /metrics only with `[store] backend = "remote"`,
    // which this collector does not run: their names come from the writer's source, so a
    // renamed figure still fails here.
    known.extend(remote_write_metric_names());
    // The collector's own /metrics, as Prometheus scrapes it: from the running binary.
    let Some(bin) = binary("stoker-collector") else { return };
    {
        let tmp = tempfile::tempdir().expect("temp dir");
        let mut c = Running::start(
            Command::new(bin)
                .arg("serve")
                .arg(format!("--data-dir={}", tmp.path().display()))
                .arg(format!("--policies={}", workspace_root().join("policies").display()))
                .args(["--api-listen=127.0.0.1:0", "--otlp-grpc-listen=127.0.0.1:0"])
                .arg("--otlp-http-listen=127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .env_remove("STOKER_READ_TOKEN")
                .env_remove("STOKER_WRITE_TOKEN"),
        );
        let Some(listening) = c.wait_for("listening api=", Duration::from_secs(30)) else {
            panic!("collector did not start (exit {:?}):\n{}", c.exit_code(), c.log());
        };
        let (status, body) = http_get(api_addr(&listening), "/metrics", None);
        assert_eq!(status, 200);
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split_whitespace();
                let (name, kind) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
                if kind == "histogram" {
                    for s in ["_bucket", "_sum", "_count"] {
                        known.insert(format!("{name}{s}"));
                    }
                }
                known.insert(name.to_owned());
            }
        }
        assert!(known.contains("stoker_policy_decisions_total"), "policy counters on /metrics");
    }
    let mut all_exprs = Vec::new();
    exprs(&dash, &mut all_exprs);
    assert!(all_exprs.len() > 20, "only {} queries found", all_exprs.len());
    let mut unknown = BTreeSet::new();
    for e in &all_exprs {
        for m in promql_metrics(e) {
            if !known.contains(&m) {
                unknown.insert(format!("{m} (in {e})"));
            }
        }
    }
    assert!(unknown.is_empty(), "the dashboard queries unknown metrics:\n{unknown:#?}");
}

#[test]
fn promql_metric_extraction_skips_functions_labels_and_ranges() {
    let e = r#"histogram_quantile(0.95, sum by (le, model_name) (rate(inference_request_duration_seconds_bucket{model_name=~"$model"}[5m]))) / on(x) foo_total or vector(0)"#;
    assert_eq!(promql_metrics(e), ["inference_request_duration_seconds_bucket", "foo_total"]);
}

/// A dashboard query with the values Grafana puts in for its variables: the dashboard's own
/// (`$host`, `${host}`, `${host:regex}`, `[[host]]`) from `values`, and Grafana's interval and
/// range variables as durations. A variable that is neither fails: Grafana would send it as
/// written and the store would refuse the query.
fn with_variables(expr: &str, values: &BTreeMap<String, String>) -> String {
    fn builtin(name: &str) -> Option<&'static str> {
        Some(match name {
            "__rate_interval" | "__interval" => "1m",
            "__interval_ms" => "60000",
            "__range" => "6h",
            "__range_s" => "21600",
            "__range_ms" => "21600000",
            _ => return None,
        })
    }
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(body) = tail.strip_prefix("${") {
            let end = body.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
            (body[..end].split(':').next().unwrap_or_default(), end + 3)
        } else if let Some(body) = tail.strip_prefix("[[") {
            let end = body.find("]]").unwrap_or(0);
            if end == 0 || !body[..end].chars().all(is_name) {
                // A subquery or range `[[`… cannot start one; keep the bracket and go on.
                out.push('[');
                rest = &tail[1..];
                continue;
            }
            (&body[..end], end + 4)
        } else if let Some(body) = tail.strip_prefix('$') {
            let end = body.find(|c: char| !is_name(c)).unwrap_or(body.len());
            (&body[..end], end + 1)
        } else {
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        if name.is_empty() {
            // A `$` that starts no name (a regex anchor) is text.
            out.push('$');
            rest = &tail[1..];
            continue;
        }
        let value = values.get(name).map(String::as_str).or_else(|| builtin(name));
        let value = value.unwrap_or_else(|| {
            panic!("{expr}: ${name} is neither a variable of the dashboard nor Grafana's")
        });
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// A query variable's `label_values(…)` as the PromQL it stands for (Grafana asks the label
/// values API with that selector): `label_values(sel, l)` → `count by (l) (sel)`, and
/// `label_values(l)` → `count by (l) ({l!=""})`.
fn label_values_as_promql(definition: &str) -> String {
    let inner = definition
        .trim()
        .strip_prefix("label_values(")
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable query {definition:?} is not label_values(…)"));
    match inner.rsplit_once(',') {
        Some((selector, label)) => format!("count by ({}) ({})", label.trim(), selector.trim()),
        None => format!("count by ({l}) ({{{l}!=\"\"}})", l = inner.trim()),
    }
}

/// Every query of the dashboard, where it is, as Grafana would send it: panel targets (rows'
/// panels too, collapsed rows keep theirs inside), annotations and query variables. Checks on
/// the way that each panel and annotation reads from the `${datasource}` variable and that
/// each panel has a query.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut values = BTreeMap::new();
    for v in arr(&dash["templating"]["list"]) {
        let name = v["name"].as_str().expect("variable name").to_owned();
        let value = match v["type"].as_str() {
            Some("textbox" | "constant" | "custom") => {
                v["query"].as_str().and_then(|q| q.split(',').next()).unwrap_or_default()
            }
            // All selected, as the dashboard opens: Grafana puts in the allValue.
            _ => v["allValue"].as_str().unwrap_or("example"),
        };
        values.insert(name, value.to_owned());
    }
    let mut out = Vec::new();
    fn panels(list: &[Value], values: &BTreeMap<String, String>, out: &mut Vec<(String, String)>) {
        for p in list {
            let title = p["title"].as_str().unwrap_or("(untitled)");
            if p["type"] == "row" {
                panels(arr(&p["panels"]), values, out);
                continue;
            }
            assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {title}: datasource");
            let targets = arr(&p["targets"]);
            assert!(!targets.is_empty(), "panel {title} has no query");
            for (i, t) in targets.iter().enumerate() {
                if !t["datasource"].is_null() {
                    assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title}: query {i}");
                }
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "panel {title}: query {i} has no expr");
                out.push((format!("panel {title:?}, query {i}"), with_variables(expr, values)));
            }
        }
    }
    panels(arr(&dash["panels"]), &values, &mut out);
    for a in arr(&dash["annotations"]["list"]) {
        let name = a["name"].as_str().unwrap_or_default();
        // Grafana's built-in "Annotations & Alerts" reads its own database, not the store.
        if a["builtIn"] == 1 {
            continue;
        }
        assert_eq!(a["datasource"]["uid"], "${datasource}", "annotation {name}: datasource");
        let expr = a["expr"].as_str().unwrap_or_default();
        assert!(!expr.trim().is_empty(), "annotation {name} has no expr");
        out.push((format!("annotation {name:?}"), with_variables(expr, &values)));
    }
    for v in arr(&dash["templating"]["list"]).iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().unwrap_or_default();
        assert_eq!(v["datasource"]["uid"], "${datasource}", "variable {name}: datasource");
        let definition = v["definition"].as_str().unwrap_or_default();
        assert_eq!(v["query"]["query"].as_str(), Some(definition), "variable {name}: query");
        let promql = label_values_as_promql(&with_variables(definition, &values));
        out.push((format!("variable {name:?}"), promql));
    }
    out
}

/// Every query the dashboard sends parses as PromQL, by Prometheus' own parser: `promtool check
/// rules` on one recording rule per query. Guards what the metric-name check cannot see: an
/// unbalanced parenthesis, a misplaced `by`, a range on an expression, an undefined variable.
#[test]
fn grafana_dashboard_queries_parse_as_promql() {
    let ok = runs("promtool", &["--version"]).is_some();
    if !peer_available(ok, "promtool", "install-prometheus.sh") {
        return;
    }
    let text = std::fs::read_to_string(deploy().join("grafana/stoker-fleet.json")).expect("JSON");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let queries = dashboard_queries(&dash);
    assert!(queries.len() > 20, "only {} queries found", queries.len());
    let mut rules = String::from("groups:\n  - name: stoker-fleet-dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar.
        let quoted = serde_json::to_string(expr).expect("quote");
        rules.push_str(&format!("      - record: dashboard:query_{i}\n        expr: {quoted}\n"));
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("stoker-fleet.rules.yml");
    std::fs::write(&file, &rules).expect("rules file");
    let out = Command::new("promtool").args(["check", "rules"]).arg(&file).output().expect("run");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let listing: Vec<String> =
        queries.iter().enumerate().map(|(i, (at, e))| format!("query_{i}: {at}: {e}")).collect();
    assert!(out.status.success(), "promtool check rules:\n{said}\n{}", listing.join("\n"));
    let found = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("SUCCESS: ")?.strip_suffix(" rules found"))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(found, Some(queries.len()), "promtool check rules:\n{said}");
}

#[test]
fn dashboard_variables_are_put_in_as_grafana_does() {
    let values = BTreeMap::from([("host".to_owned(), ".*".to_owned())]);
    let e =
        r#"rate(x{a=~"$host", b=~"${host}", c=~"${host:regex}", d=~"[[host]]"}[$__rate_interval])"#;
    assert_eq!(with_variables(e, &values), r#"rate(x{a=~".*", b=~".*", c=~".*", d=~".*"}[1m])"#);
    // Ranges, subqueries and regex anchors stay as they are.
    assert_eq!(with_variables("max_over_time(x[5m:1m])", &values), "max_over_time(x[5m:1m])");
    assert_eq!(with_variables(r#"x{a=~"^b$"}"#, &values), r#"x{a=~"^b$"}"#);
    assert_eq!(
        label_values_as_promql("label_values(host_name)"),
        r#"count by (host_name) ({host_name!=""})"#
    );
    assert_eq!(
        label_values_as_promql(r#"label_values(m{job=~".*"}, model_name)"#),
        r#"count by (model_name) (m{job=~".*"})"#
    );
}
