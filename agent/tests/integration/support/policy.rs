//! Shared fixtures for the policy and inventory tests.

use std::path::Path;

use meshdrift::inventory::Index;
use meshdrift::inventory::files::{self, LoadOutcome};
use meshdrift::observation::ExpectedTransport;
use meshdrift::policy::{DestinationExpectation, Expectation, Policies};

pub fn pod(ns: &str, name: &str, ip: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  containers:\n    - name: app\n      image: app\n      ports: [{{name: app, containerPort: 9080}}]\nstatus:\n  podIP: {ip}\n"
    )
}

pub fn service(ns: &str, name: &str, selector: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector: {{{selector}}}\n  ports:\n{ports}"
    )
}

const SIDE: &str = "security.istio.io/tlsMode: istio";

/// A small mesh: `default/reviews` (v1, v2 with sidecars; v3 without),
/// `default/db` (tcp, ClusterIP 10.96.0.5), `default/secure` (https, tls,
/// appProtocol and unnamed ports), `prod/ratings`, and clients
/// `default/client`, `default/tester`, `other/client`.
pub fn base() -> String {
    [
        service("default", "reviews", "app: reviews", "    - {name: http, port: 9080, targetPort: 9080}\n"),
        pod("default", "reviews-v1", "10.0.0.1", &format!("app: reviews, version: v1, {SIDE}")),
        pod("default", "reviews-v2", "10.0.0.2", &format!("app: reviews, version: v2, {SIDE}")),
        pod("default", "reviews-v3", "10.0.0.3", "app: reviews, version: v3"),
        format!(
            "{}  clusterIP: 10.96.0.5\n",
            service("default", "db", "app: db", "    - {name: tcp-pg, port: 5432, targetPort: 15432}\n")
        ),
        pod("default", "db-0", "10.0.1.1", &format!("app: db, version: v1, {SIDE}")),
        pod("default", "db-1", "10.0.1.2", &format!("app: db, version: v2, {SIDE}")),
        service(
            "default",
            "secure",
            "app: secure",
            "    - {name: https, port: 443}\n    - {name: tls-passthrough, port: 8443}\n    - {name: tcp-looks-tcp, port: 9000, appProtocol: http}\n    - {port: 7000}\n    - {name: grpc-api, port: 7070}\n",
        ),
        pod("default", "secure-0", "10.0.2.1", &format!("app: secure, {SIDE}")),
        service("prod", "ratings", "app: ratings", "    - {name: http, port: 9080}\n"),
        pod("prod", "ratings-1", "10.0.3.1", &format!("app: ratings, version: v1, {SIDE}")),
        pod("default", "client", "10.0.9.1", &format!("app: client, version: v1, {SIDE}")),
        pod("default", "tester", "10.0.9.2", &format!("app: tester, {SIDE}")),
        pod("other", "client", "10.0.9.3", &format!("app: client, {SIDE}")),
        pod("istio-system", "ingress", "10.0.9.4", &format!("app: istio-ingressgateway, {SIDE}")),
    ]
    .join("---\n")
}

pub fn load(yaml: &str) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    files::load_str(Path::new("test.yaml"), yaml, &mut outcome);
    outcome
}

pub struct Mesh {
    pub index: Index,
    pub policies: Policies,
}

/// The base mesh plus `extra` manifests; panics on any load problem so a
/// typo in a fixture cannot pass silently.
pub fn mesh(extra: &str) -> Mesh {
    mesh_from(&format!("{}---\n{extra}", base()))
}

pub fn mesh_from(yaml: &str) -> Mesh {
    let outcome = load(yaml);
    assert!(
        outcome.problems.is_empty(),
        "fixture problems: {:?}",
        outcome.problems
    );
    Mesh {
        index: Index::build(&outcome.objects),
        policies: Policies::build(&outcome.objects),
    }
}

impl Mesh {
    pub fn expect(&self, from: &str, host: &str, port: u16) -> Expectation {
        let (ns, name) = from.split_once('/').unwrap();
        let client = self.index.pod_by_name(ns, name).unwrap();
        self.policies
            .expect(&self.index, client, host, Some(port))
            .unwrap()
    }

    /// `(subset, weight)` of each destination.
    pub fn split(&self, from: &str, host: &str, port: u16) -> Vec<(Option<String>, f64)> {
        let e = self.expect(from, host, port);
        assert!(e.determinable, "not determinable: {:?}", e.reason);
        e.destinations
            .iter()
            .map(|d| (d.subset.clone(), d.weight))
            .collect()
    }

    pub fn vs_name(&self, from: &str, host: &str, port: u16) -> Option<String> {
        self.expect(from, host, port).virtual_service
    }
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// A VirtualService manifest.
pub fn vs(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}

/// A DestinationRule manifest.
pub fn dr(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}

/// A PeerAuthentication manifest.
pub fn pa(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}

/// Subsets v1/v2/v3 of `default/reviews`, by version label.
pub const REVIEWS_SUBSETS: &str = "  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: v2, labels: {version: v2}}\n    - {name: v3, labels: {version: v3}}\n";

/// The base mesh with [`reviews_dr`] and a VirtualService `default/v` for
/// `reviews` whose `http:` list is `routes`.
pub fn reviews_http_mesh(routes: &str) -> Mesh {
    mesh(&format!(
        "{}---\n{}",
        reviews_dr(),
        vs(
            "default",
            "v",
            &format!("  hosts: [reviews]\n  http:\n{routes}")
        )
    ))
}

/// A DestinationRule `default/reviews` defining [`REVIEWS_SUBSETS`].
pub fn reviews_dr() -> String {
    dr(
        "default",
        "reviews",
        &format!("  host: reviews\n{REVIEWS_SUBSETS}"),
    )
}

/// A Service whose `clusterIP` is `None` (headless).
pub fn headless_service(ns: &str, name: &str, selector: &str, ports: &str) -> String {
    format!("{}  clusterIP: None\n", service(ns, name, selector, ports))
}

/// `(pod name without namespace, target port, transport)` of each endpoint.
pub fn endpoint_transports(
    d: &DestinationExpectation,
) -> Vec<(String, Option<u16>, ExpectedTransport)> {
    d.endpoints
        .iter()
        .map(|e| {
            let pod = e.pod.as_deref().unwrap_or("?");
            let name = pod.split_once('/').map_or(pod, |(_, name)| name);
            (name.to_owned(), e.port, e.expect)
        })
        .collect()
}

/// A ServiceEntry manifest.
pub fn se(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}"
    )
}
