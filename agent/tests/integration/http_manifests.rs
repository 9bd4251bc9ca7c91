//! The Kubernetes manifests agree with the agent: the probes hit routes the server
//! has, the ports line up, and the RBAC covers what the inventory watches.

use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::ClusterRole;
use meshdrift_testkit::{Server, drift_report, get};
use serde::de::DeserializeOwned;

fn documents<T: DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .filter(|doc| doc["kind"].as_str() == Some(kind))
        .map(|doc| serde_yaml_ng::from_value(doc).unwrap_or_else(|e| panic!("{file} {kind}: {e}")))
        .collect()
}

use serde::Deserialize as _;

fn daemonset() -> DaemonSet {
    documents::<DaemonSet>("daemonset.yaml", "DaemonSet").remove(0)
}

#[test]
fn probes_hit_routes_the_agent_serves() {
    let ds = daemonset();
    let pod = ds.spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let server = Server::start(drift_report());
    server.state.set_ready(true);
    for probe in [&container.liveness_probe, &container.readiness_probe] {
        let path = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
            .expect("http probe");
        let (status, _, body) = get(&server.url(&path), None);
        assert_eq!(status, 200, "probe path {path}: {body}");
    }
}

#[test]
fn daemonset_runs_with_capabilities_not_privileged() {
    let ds = daemonset();
    let pod = ds.spec.template.spec.expect("pod spec");
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_ne!(security.privileged, Some(true));
    let added = security
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    for cap in ["BPF", "NET_ADMIN", "PERFMON"] {
        assert!(
            added.iter().any(|c| c == cap),
            "missing capability {cap}: {added:?}"
        );
    }
    assert!(
        !added.iter().any(|c| c == "SYS_ADMIN"),
        "SYS_ADMIN is not needed"
    );
    assert_ne!(pod.host_pid, Some(true));

    let env = container.env.as_ref().expect("env");
    let node = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = node
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));

    let args = container.args.as_ref().expect("args");
    let cgroup_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--cgroup="))
        .expect("--cgroup");
    let mount = container
        .volume_mounts
        .as_ref()
        .and_then(|m| m.iter().find(|m| m.mount_path == cgroup_arg))
        .expect("--cgroup points at a mounted volume");
    let volume = pod
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name == mount.name))
        .expect("volume");
    assert_eq!(
        volume.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/sys/fs/cgroup")
    );

    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .expect("resource requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

#[test]
fn ports_line_up_from_listen_flag_to_service_monitor() {
    let ds = daemonset();
    let container = ds.spec.template.spec.expect("pod").containers.remove(0);
    let listen = container
        .args
        .as_ref()
        .and_then(|a| {
            a.iter()
                .find_map(|a| a.strip_prefix("--listen=").map(str::to_owned))
        })
        .expect("--listen");
    let port = container
        .ports
        .as_ref()
        .and_then(|p| p.iter().find(|p| p.name.as_deref() == Some("metrics")))
        .expect("metrics port");
    assert!(
        listen.ends_with(&format!(":{}", port.container_port)),
        "{listen}"
    );
    assert_eq!(port.container_port, 9477);

    let service = documents::<Service>("service.yaml", "Service").remove(0);
    assert_eq!(
        service.metadata.name.as_deref(),
        Some("meshdrift"),
        "the job label comes from here"
    );
    let service_port = &service.spec.expect("spec").ports.expect("ports")[0];
    assert_eq!(service_port.name.as_deref(), Some("metrics"));

    let monitor: Vec<serde_yaml_ng::Value> = documents(
        "../prometheus-operator/servicemonitor.yaml",
        "ServiceMonitor",
    );
    assert_eq!(
        monitor[0]["spec"]["endpoints"][0]["port"].as_str(),
        Some("metrics")
    );
}

#[test]
fn cluster_role_can_watch_everything_the_inventory_reads() {
    let role = documents::<ClusterRole>("rbac.yaml", "ClusterRole").remove(0);
    let rules = role.rules.expect("rules");
    for (group, resource) in [
        ("", "pods"),
        ("", "services"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.istio.io", "serviceentries"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("security.istio.io", "peerauthentications"),
    ] {
        let allowed = rules.iter().any(|r| {
            r.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g == group))
                && r.resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|rs| rs == resource))
                && ["list", "watch"]
                    .iter()
                    .all(|v| r.verbs.iter().any(|rv| rv == v))
        });
        assert!(allowed, "ClusterRole cannot list/watch {group}/{resource}");
        // Minimal: list and watch only (the watchers never get one object).
        let more = rules.iter().any(|r| {
            r.verbs
                .iter()
                .any(|v| !["list", "watch"].contains(&v.as_str()))
        });
        assert!(!more, "the agent only lists and watches");
    }
}
