//! The inventory index: pods by IP and labels, services by FQDN, port
//! protocols, endpoints from EndpointSlices or derived from selectors.

use std::collections::BTreeMap;

use crate::support::policy::*;
use meshdrift::inventory::{EndpointSource, Index, PortProtocol, RouteKind};

fn index(yaml: &str) -> Index {
    let out = load(yaml);
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    Index::build(&out.objects)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pod_by_ip_names_namespace_name_and_labels() {
    let idx = index(&base());
    let pod = idx.pod_by_ip("10.0.0.2".parse().unwrap()).unwrap();
    assert_eq!(
        (pod.namespace.as_str(), &*pod.name),
        ("default", "reviews-v2")
    );
    assert_eq!(pod.labels.get("version"), Some("v2"));
    assert!(idx.pod_by_ip("10.9.9.9".parse().unwrap()).is_none());
}

#[test]
fn pod_ips_include_every_family() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: dual, namespace: default}\nspec: {containers: [{name: c, image: i}]}\nstatus:\n  podIP: 10.0.0.7\n  podIPs: [{ip: 10.0.0.7}, {ip: 'fd00::7'}]\n";
    let idx = index(yaml);
    assert_eq!(
        &*idx.pod_by_ip("fd00::7".parse().unwrap()).unwrap().name,
        "dual"
    );
    assert_eq!(
        &*idx.pod_by_ip("10.0.0.7".parse().unwrap()).unwrap().name,
        "dual"
    );
}

#[test]
fn host_network_pods_are_not_found_by_ip() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: node-agent, namespace: kube-system}\nspec: {hostNetwork: true, containers: [{name: c, image: i}]}\nstatus: {podIP: 192.168.1.10}\n";
    assert!(
        index(yaml)
            .pod_by_ip("192.168.1.10".parse().unwrap())
            .is_none()
    );
}

#[test]
fn duplicate_pod_ips_keep_the_first_and_warn() {
    let idx = index(&format!(
        "{}---\n{}",
        pod("a", "first", "10.0.0.1", "x: y"),
        pod("b", "second", "10.0.0.1", "x: y")
    ));
    assert_eq!(
        &*idx.pod_by_ip("10.0.0.1".parse().unwrap()).unwrap().name,
        "first"
    );
    assert_eq!(idx.warnings().len(), 1);
}

#[test]
fn pods_by_labels_within_a_namespace_or_all() {
    let idx = index(&base());
    let names = |ids: Vec<usize>| -> Vec<String> {
        ids.into_iter()
            .map(|id| idx.pod(id).unwrap().key())
            .collect()
    };
    assert_eq!(
        names(idx.pods_matching(
            Some("default"),
            &labels(&[("app", "reviews"), ("version", "v2")])
        )),
        vec!["default/reviews-v2"]
    );
    assert_eq!(
        names(idx.pods_matching(None, &labels(&[("app", "client")]))).len(),
        2
    );
    assert!(
        idx.pods_matching(Some("default"), &labels(&[("app", "nope")]))
            .is_empty()
    );
}

#[test]
fn workload_comes_from_the_owner() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-7d9f8c6b5-x2x7q\n  namespace: default\n  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8c6b5, uid: u, controller: true}]\nspec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.0.5}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db-0\n  namespace: default\n  ownerReferences: [{apiVersion: apps/v1, kind: StatefulSet, name: db, uid: u, controller: true}]\nspec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.0.0.6}\n";
    let idx = index(yaml);
    assert_eq!(
        idx.pod_by_ip("10.0.0.5".parse().unwrap()).unwrap().workload,
        "web"
    );
    assert_eq!(
        idx.pod_by_ip("10.0.0.6".parse().unwrap()).unwrap().workload,
        "db"
    );
}

#[test]
fn service_by_fqdn_with_port_protocols() {
    let idx = index(&base());
    let secure = idx.service("secure.default.svc.cluster.local").unwrap();
    let table = [
        (443, PortProtocol::Https, RouteKind::Tls),
        (8443, PortProtocol::Tls, RouteKind::Tls),
        (9000, PortProtocol::Http, RouteKind::Http),
        (7000, PortProtocol::Unnamed, RouteKind::Tcp),
        (7070, PortProtocol::Grpc, RouteKind::Http),
    ];
    for (port, protocol, kind) in table {
        let p = secure.port(port).unwrap();
        assert_eq!(
            (p.protocol, p.protocol.route_kind()),
            (protocol, kind),
            "port {port}"
        );
    }
    assert!(idx.service("secure.default").is_none());
}

#[test]
fn endpoints_derived_from_selector_and_pod_ips() {
    let idx = index(&base());
    let reviews = idx.service("reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.endpoints_from, EndpointSource::Selector);
    let ips: Vec<String> = reviews.endpoints.iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(ips, vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
}

#[test]
fn endpoints_skip_finished_pods_and_resolve_named_target_ports() {
    let yaml = format!(
        "{}---\n{}---\n{}",
        service(
            "default",
            "web",
            "app: web",
            "    - {name: http, port: 80, targetPort: web}\n"
        ),
        pod("default", "web-1", "10.0.0.1", "app: web").replace(
            "name: app, containerPort: 9080",
            "name: web, containerPort: 8080"
        ),
        pod("default", "web-old", "10.0.0.2", "app: web")
            .replace("  podIP: 10.0.0.2", "  phase: Succeeded\n  podIP: 10.0.0.2")
    );
    let idx = index(&yaml);
    let web = idx.service("web.default.svc.cluster.local").unwrap();
    assert_eq!(web.endpoints.len(), 1);
    assert_eq!(web.endpoints[0].target_port(80), Some(8080));
}

#[test]
fn endpoint_slices_win_over_selectors() {
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: reviews-abc\n  namespace: default\n  labels: {kubernetes.io/service-name: reviews}\naddressType: IPv4\nports: [{name: http, port: 9443}]\nendpoints:\n  - addresses: [10.0.0.2]\n    conditions: {ready: true}\n    targetRef: {kind: Pod, name: reviews-v2, namespace: default}\n  - addresses: [10.0.0.99]\n    conditions: {ready: false}\n";
    let idx = index(&format!("{}---\n{slice}", base()));
    let reviews = idx.service("reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.endpoints_from, EndpointSource::EndpointSlices);
    assert_eq!(reviews.endpoints.len(), 2);
    let first = &reviews.endpoints[0];
    assert_eq!(&*idx.endpoint_pod(first).unwrap().name, "reviews-v2");
    assert_eq!(first.target_port(9080), Some(9443));
    assert!(idx.endpoint_pod(&reviews.endpoints[1]).is_none());
    assert!(!reviews.endpoints[1].ready);
}

#[test]
fn service_without_selector_has_no_derived_endpoints() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: external, namespace: default}\nspec:\n  ports: [{port: 80}]\n";
    let idx = index(yaml);
    let svc = idx.service("external.default.svc.cluster.local").unwrap();
    assert_eq!(svc.endpoints_from, EndpointSource::None);
    assert!(svc.endpoints.is_empty());
}

/// AMB-1: a pod is in ambient mode by Istio CNI's mark, its own label, or
/// its namespace's; `none` opts out; a sidecar pod never is.
#[test]
fn ambient_enrollment_joins_the_pod_and_its_namespace() {
    let namespace = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n---\n"
        )
    };
    let pod = |ns: &str, name: &str, ip: &str, labels: &str, annotations: &str, sidecar: bool| {
        let proxy = if sidecar {
            "\n    - {name: istio-proxy, image: proxyv2}"
        } else {
            ""
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\n  annotations: {{{annotations}}}\n\
             spec:\n  containers:\n    - {{name: app, image: app}}{proxy}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    };
    let yaml = [
        namespace("mesh", "istio.io/dataplane-mode: ambient"),
        namespace("legacy", ""),
        namespace(
            "sidecars",
            "istio.io/dataplane-mode: ambient, istio-injection: enabled",
        ),
        pod("mesh", "by-namespace", "10.1.0.1", "app: a", "", false),
        pod(
            "mesh",
            "opted-out",
            "10.1.0.2",
            "istio.io/dataplane-mode: none",
            "",
            false,
        ),
        pod("mesh", "with-sidecar", "10.1.0.3", "app: a", "", true),
        pod("legacy", "plain", "10.1.0.4", "app: b", "", false),
        pod(
            "legacy",
            "by-label",
            "10.1.0.5",
            "istio.io/dataplane-mode: ambient",
            "",
            false,
        ),
        pod(
            "legacy",
            "by-cni",
            "10.1.0.6",
            "app: b",
            "ambient.istio.io/redirection: enabled",
            false,
        ),
        pod(
            "sidecars",
            "injected-namespace",
            "10.1.0.7",
            "app: c",
            "",
            false,
        ),
    ]
    .concat();
    let idx = index(&yaml);
    let ambient = |ip: &str| {
        let pod = idx.pod_by_ip(ip.parse().unwrap()).expect(ip);
        (pod.name.to_string(), idx.in_ambient(pod))
    };
    let got: Vec<(String, bool)> = (1..=7).map(|n| ambient(&format!("10.1.0.{n}"))).collect();
    let want: Vec<(String, bool)> = [
        ("by-namespace", true),
        ("opted-out", false),
        ("with-sidecar", false),
        ("plain", false),
        ("by-label", true),
        ("by-cni", true),
        ("injected-namespace", false),
    ]
    .iter()
    .map(|(name, ambient)| ((*name).to_owned(), *ambient))
    .collect();
    assert_eq!(got, want);
}
