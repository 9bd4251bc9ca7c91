//! The Helm chart `deploy/helm/meshdrift`, rendered by the Helm that
//! `cargo xtask setup` builds from `tools/helm`: with default values it is
//! exactly `kubectl kustomize deploy/kubernetes` (and with `auth.mode:
//! kubernetes`, the same plus the `components/auth` component); every value
//! that turns a feature on renders what that feature needs; the copies of
//! the alert rules and the dashboard it carries are current; and
//! `helm install` on the lab's real control plane gives an agent that
//! becomes ready. The renderings need Helm and kubectl only; the install
//! needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    Lab,
    cluster::{
        AGENT_NAMESPACE, AGENT_SELECTOR, Cluster, ClusterConfig, HELM_RELEASE, Installer, Upstream,
    },
    meshdrift_bin,
};
use serde_json::{Value, json};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace")
}

const CHART: &str = "deploy/helm/meshdrift";

fn upstream() -> Upstream {
    Upstream::locate().expect("cargo xtask setup built Helm and kubectl (tools/)")
}

/// Runs `program ARGS…` in the workspace; its standard output.
fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .current_dir(workspace())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        program.display(),
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `helm template meshdrift deploy/helm/meshdrift --namespace meshdrift ARGS…`
fn helm_template(args: &[&str]) -> String {
    let mut all = vec!["template", "meshdrift", CHART, "--namespace", "meshdrift"];
    all.extend(args);
    run(&upstream().bin("helm"), &all)
}

fn kustomize(dir: &Path) -> String {
    run(
        &upstream().bin("kubectl"),
        &["kustomize", &dir.display().to_string()],
    )
}

/// What identifies an object: apiVersion, kind, namespace, name.
type Key = (String, String, String, String);

fn key_text((api_version, kind, namespace, name): &Key) -> String {
    if namespace.is_empty() {
        format!("{api_version} {kind} {name}")
    } else {
        format!("{api_version} {kind} {namespace}/{name}")
    }
}

/// The documents of a YAML stream as helm and kubectl print them: split at
/// `---` lines (block scalars are indented, so none of theirs is one);
/// documents of comments alone are left out.
fn documents(text: &str) -> Vec<String> {
    let mut all = vec![String::new()];
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            all.push(String::new());
        } else if let Some(current) = all.last_mut() {
            current.push_str(line);
            current.push('\n');
        }
    }
    all.retain(|document| {
        document
            .lines()
            .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
    });
    all
}

/// Every object of a multi-document YAML stream, by key (an object twice
/// is a failure).
fn objects(text: &str) -> BTreeMap<Key, Value> {
    let mut all = BTreeMap::new();
    for document in documents(text) {
        let object: Value = serde_yaml_ng::from_str(&document)
            .unwrap_or_else(|e| panic!("not YAML ({e}):\n{document}"));
        if object.is_null() {
            continue;
        }
        let field = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let key = (
            field(&object["apiVersion"]),
            field(&object["kind"]),
            field(&object["metadata"]["namespace"]),
            field(&object["metadata"]["name"]),
        );
        assert!(
            !key.1.is_empty() && !key.3.is_empty(),
            "an object without kind or name: {object}"
        );
        if let Some(earlier) = all.insert(key.clone(), object) {
            panic!("{} rendered twice (first: {earlier})", key_text(&key));
        }
    }
    all
}

/// A line diff of two texts (longest common subsequence): `-` lines only in
/// `left`, `+` lines only in `right`, two lines of context.
fn diff(left: &str, right: &str) -> String {
    let a: Vec<&str> = left.lines().collect();
    let b: Vec<&str> = right.lines().collect();
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut lines = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..lines.len()).filter(|&n| lines[n].0 != ' ').collect();
    let near = |n: usize| changed.iter().any(|&c| c.abs_diff(n) <= 2);
    let mut out = String::new();
    let mut skipped = false;
    for (n, (mark, line)) in lines.iter().enumerate() {
        if near(n) {
            out.push_str(&format!("{mark} {line}\n"));
            skipped = false;
        } else if !skipped {
            out.push_str("  ...\n");
            skipped = true;
        }
    }
    out
}

#[test]
fn the_diff_shows_what_changed_in_its_context() {
    let left = "a\nb\nc\nd\ne\nf\ng\nh\nj\nk\nl\nm\n";
    let right = "a\nb\nc\nD\ne\nf\ng\nh\nj\nk\nl\nm\nn\n";
    assert_eq!(
        diff(left, right),
        "  ...\n  b\n  c\n- d\n+ D\n  e\n  f\n  ...\n  l\n  m\n+ n\n"
    );
}

/// Fails, naming the first object that differs (or is in one rendering
/// only) and showing its diff, unless both renderings hold the same objects.
fn assert_same_objects(kustomized: &str, charted: &str, what: &str) {
    let left = objects(kustomized);
    let right = objects(charted);
    for key in left.keys().chain(right.keys()) {
        match (left.get(key), right.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                let a = serde_json::to_string_pretty(a).expect("JSON");
                let b = serde_json::to_string_pretty(b).expect("JSON");
                panic!(
                    "{what}: {} differs (- kustomize, + helm):\n{}",
                    key_text(key),
                    diff(&a, &b)
                );
            }
            (Some(_), None) => panic!(
                "{what}: {} is in the kustomize output only; helm rendered {:?}",
                key_text(key),
                right.keys().map(key_text).collect::<Vec<_>>()
            ),
            (None, Some(_)) => panic!(
                "{what}: {} is in the chart's rendering only; kustomize rendered {:?}",
                key_text(key),
                left.keys().map(key_text).collect::<Vec<_>>()
            ),
            (None, None) => unreachable!(),
        }
    }
}

/// The one object of `kind` named `name`.
fn object<'a>(all: &'a BTreeMap<Key, Value>, kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|((_, k, _, n), _)| k == kind && n == name)
        .map(|(_, object)| object)
        .unwrap_or_else(|| {
            panic!(
                "no {kind} {name} among {:?}",
                all.keys().map(key_text).collect::<Vec<_>>()
            )
        })
}

fn has_kind(all: &BTreeMap<Key, Value>, kind: &str) -> bool {
    all.keys().any(|(_, k, _, _)| k == kind)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn agent_container(all: &BTreeMap<Key, Value>) -> &Value {
    &object(all, "DaemonSet", "meshdrift")["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_chart_with_default_values_renders_exactly_what_kustomize_does() {
    let kustomized = kustomize(&workspace().join("deploy/kubernetes"));
    let charted = helm_template(&[]);
    assert_same_objects(&kustomized, &charted, "default values");
    // And what both render is hardened as the manifests say.
    let all = objects(&charted);
    let pod = &object(&all, "DaemonSet", "meshdrift")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["add"],
        json!(["BPF", "NET_ADMIN", "PERFMON"])
    );
    let policy = object(&all, "NetworkPolicy", "meshdrift");
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9477, "protocol": "TCP"}],
        }])
    );
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(!has_kind(&all, kind), "{kind} rendered by default");
    }
    let args = strings(&pod["containers"][0]["args"]);
    assert!(
        !args
            .iter()
            .any(|arg| arg.starts_with("--auth") || arg.starts_with("--tls")),
        "{args:?}"
    );
}

#[test]
fn auth_kubernetes_renders_what_the_kustomize_auth_component_adds() {
    // A kustomization as a user's own: the base and the component (by
    // relative paths: kustomize refuses absolute ones).
    let dir = workspace().join("target/chart-tests/auth-overlay");
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - ../../../deploy/kubernetes\n\
         components:\n  - ../../../deploy/kubernetes/components/auth\n",
    )
    .expect("writing the kustomization");
    let kustomized = kustomize(&dir);
    let charted = helm_template(&["--set", "auth.mode=kubernetes"]);
    assert_same_objects(&kustomized, &charted, "auth.mode=kubernetes");
}

#[test]
fn auth_tls_and_the_service_monitor_render_their_args_rbac_and_mounts() {
    let all = objects(&helm_template(&[
        "--set",
        "auth.mode=kubernetes",
        "--set",
        "tls.secretName=meshdrift-tls",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "extraArgs={--update-interval=5s,--min-samples=50}",
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
    ]));
    let container = agent_container(&all);
    let args = strings(&container["args"]);
    for arg in [
        "--auth=kubernetes",
        "--tls-cert-file=/etc/meshdrift/tls/tls.crt",
        "--tls-key-file=/etc/meshdrift/tls/tls.key",
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }
    assert_eq!(
        args[args.len() - 2..],
        ["--update-interval=5s", "--min-samples=50"],
        "extraArgs come last: {args:?}"
    );

    // The agent may ask for both reviews, bound to its service account.
    let role = object(&all, "ClusterRole", "meshdrift-auth");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
        ])
    );
    let binding = object(&all, "ClusterRoleBinding", "meshdrift-auth");
    assert_eq!(binding["roleRef"]["name"], "meshdrift-auth");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "meshdrift", "namespace": "meshdrift"}])
    );
    let reader = object(&all, "ClusterRole", "meshdrift-metrics-reader");
    assert!(strings(&reader["rules"][0]["nonResourceURLs"]).contains(&"/metrics"));

    // The secret, mounted read-only where the flags point.
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["mountPath"] == "/etc/meshdrift/tls")
        .unwrap_or_else(|| panic!("no mount at /etc/meshdrift/tls: {container}"));
    assert_eq!(mount["readOnly"], true);
    let volumes = &object(&all, "DaemonSet", "meshdrift")["spec"]["template"]["spec"]["volumes"];
    let volume = volumes
        .as_array()
        .into_iter()
        .flatten()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}: {volumes}", mount["name"]));
    assert_eq!(volume["secret"]["secretName"], "meshdrift-tls");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}");
    }

    let monitor = object(&all, "ServiceMonitor", "meshdrift");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
}

#[test]
fn auth_none_renders_no_flag_and_no_review_rights() {
    let all = objects(&helm_template(&["--set", "auth.mode=none"]));
    assert!(
        !strings(&agent_container(&all)["args"]).contains(&"--auth=kubernetes"),
        "--auth with auth.mode none"
    );
    let names: Vec<&str> = all.keys().map(|(_, _, _, name)| name.as_str()).collect();
    assert!(
        !names.iter().any(|name| name.ends_with("-auth")),
        "{names:?}"
    );
}

#[test]
fn an_unknown_auth_mode_is_refused() {
    let output = Command::new(upstream().bin("helm"))
        .current_dir(workspace())
        .args(["template", "meshdrift", CHART, "--set", "auth.mode=token"])
        .output()
        .expect("helm");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("auth.mode must be none or kubernetes"),
        "{stderr}"
    );
}

#[test]
fn operator_objects_render_only_where_the_cluster_serves_their_kinds() {
    let enabled = [
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "prometheusRule.enabled=true",
    ];
    // Enabled, on a cluster without the Prometheus Operator's CRDs.
    let without = objects(&helm_template(&enabled));
    assert!(!has_kind(&without, "ServiceMonitor"));
    assert!(!has_kind(&without, "PrometheusRule"));
    // Announced, but not enabled.
    let kinds = [
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ];
    let disabled = objects(&helm_template(&kinds));
    assert!(!has_kind(&disabled, "ServiceMonitor"));
    assert!(!has_kind(&disabled, "PrometheusRule"));
    // Both: the operator overlay's objects, the same as deploy/prometheus-operator.
    let mut both = enabled.to_vec();
    both.extend(kinds);
    let charted = helm_template(&both);
    let kustomized = kustomize(&workspace().join("deploy/prometheus-operator"));
    assert_same_objects(&kustomized, &charted, "the Prometheus Operator's objects");
    // The rules are deploy/prometheus/rules.yaml's groups.
    let all = objects(&charted);
    let rules: Value =
        serde_yaml_ng::from_str(&read("deploy/prometheus/rules.yaml")).expect("rules.yaml");
    assert_eq!(
        object(&all, "PrometheusRule", "meshdrift")["spec"]["groups"],
        rules["groups"]
    );
}

#[test]
fn the_grafana_dashboard_is_a_configmap_the_sidecar_loads() {
    let all = objects(&helm_template(&["--set", "grafanaDashboard.enabled=true"]));
    let map = object(&all, "ConfigMap", "meshdrift-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(&read("deploy/grafana/meshdrift.json")).expect("the dashboard");
    let carried: Value = serde_json::from_str(
        map["data"]["meshdrift.json"]
            .as_str()
            .expect("the dashboard's JSON"),
    )
    .expect("the ConfigMap holds JSON");
    assert_eq!(carried, shipped);
}

#[test]
fn every_feature_on_renders_and_lints() {
    // The values file the field tools of `cargo xtask test` check.
    let values = "deploy/helm/meshdrift/ci/all-features-values.yaml";
    let all = objects(&helm_template(&[
        "--values",
        values,
        "--api-versions",
        "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions",
        "monitoring.coreos.com/v1/PrometheusRule",
    ]));
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(has_kind(&all, kind), "no {kind}");
    }
    let image = agent_container(&all)["image"].as_str().expect("image");
    assert!(image.contains("@sha256:"), "{image}");
    for object in all.values() {
        assert_eq!(
            object["metadata"]["labels"]["team"], "platform",
            "commonLabels on {}",
            object["metadata"]["name"]
        );
    }
    run(
        &upstream().bin("helm"),
        &["lint", "--strict", CHART, "--values", values],
    );
}

fn read(path: &str) -> String {
    let path = workspace().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The chart cannot read outside its directory, so it carries copies; they
/// must be the shipped files byte for byte.
#[test]
fn the_charts_copies_of_the_rules_and_the_dashboard_are_current() {
    for (copy, original) in [
        (
            "deploy/helm/meshdrift/files/prometheus-rules.yaml",
            "deploy/prometheus/rules.yaml",
        ),
        (
            "deploy/helm/meshdrift/files/grafana-dashboard.json",
            "deploy/grafana/meshdrift.json",
        ),
    ] {
        assert!(
            read(copy) == read(original),
            "{copy} differs from {original}: `cp {original} {copy}`"
        );
    }
}

#[test]
fn helm_install_with_default_values_gives_a_ready_agent() {
    let _slot = privileged();
    let lab = Lab::new("helm").expect("a lab");
    let cluster = Cluster::start(&lab, ClusterConfig::new(upstream())).expect("the control plane");
    let agent = cluster
        .install_agent_with(Installer::Helm, &lab, &meshdrift_bin(), &[])
        .expect("the agent installed with helm install becomes ready");
    // Ready by its own /readyz, and so reported to the API server.
    let (status, body) = agent.readyz().expect("/readyz");
    assert_eq!(status, 200, "{body}");
    let pods = cluster
        .kubectl
        .json(&["get", "pods", "-n", AGENT_NAMESPACE, "-l", AGENT_SELECTOR])
        .expect("the agent's pods");
    let pod = &pods["items"][0];
    let ready = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Ready" && condition["status"] == "True");
    assert!(ready, "the pod is not Ready: {}", pod["status"]);
    assert_eq!(pod["spec"]["priorityClassName"], "system-node-critical");
    // Helm owns what it installed, the Namespace it created first included.
    let status = cluster
        .helm(&["status", HELM_RELEASE, "--namespace", AGENT_NAMESPACE])
        .expect("helm status");
    assert!(status.contains("STATUS: deployed"), "{status}");
    let namespace = cluster
        .kubectl
        .json(&["get", "namespace", AGENT_NAMESPACE])
        .expect("the namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["istio-injection"],
        "disabled"
    );
    let daemonset = cluster
        .kubectl
        .json(&["get", "daemonset", "meshdrift", "-n", AGENT_NAMESPACE])
        .expect("the DaemonSet");
    assert_eq!(
        daemonset["metadata"]["annotations"]["meta.helm.sh/release-name"],
        HELM_RELEASE
    );
    let _output = agent
        .stop(Duration::from_secs(10))
        .expect("the agent stops");
}
