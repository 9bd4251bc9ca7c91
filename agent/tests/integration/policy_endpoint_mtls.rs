//! Which endpoints a client sidecar sends Istio mTLS to: rules MTLS-3 (the
//! DestinationRule's mode for the subset and port, else the endpoint's own
//! PeerAuthentication) and MTLS-4 (headless Services) of
//! `docs/istio-semantics.md`.

use crate::support::policy::*;
use meshdrift::observation::ExpectedTransport::{self, Mtls, Plaintext};

/// What each endpoint of `host:port` receives from `default/client`, when no
/// VirtualService routes it (the whole Service, no subset).
fn wire(extra: &str, host: &str, port: u16) -> Vec<(String, ExpectedTransport)> {
    let m = mesh(extra);
    let e = m.expect("default/client", host, port);
    endpoint_transports(&e.destinations[0])
        .into_iter()
        .map(|(pod, _, transport)| (pod, transport))
        .collect()
}

fn rows(pods: &[(&str, ExpectedTransport)]) -> Vec<(String, ExpectedTransport)> {
    pods.iter().map(|(p, t)| ((*p).to_owned(), *t)).collect()
}

fn workload_pa(name: &str, selector: &str, body: &str) -> String {
    pa(
        "default",
        name,
        &format!("  selector: {{matchLabels: {{{selector}}}}}\n{body}"),
    )
}

fn reviews_rule(policy: &str) -> String {
    dr(
        "default",
        "r",
        &format!("  host: reviews\n  trafficPolicy:\n{policy}"),
    )
}

#[test]
fn mtls3_endpoint_mtls_follows_the_rule_mode_else_the_endpoint_peer_authentication() {
    const PORT_9080_LB: &str = "    portLevelSettings:\n      - port: {number: 9080}\n        loadBalancer: {simple: LEAST_REQUEST}\n";
    // (why, extra manifests, reviews-v1, reviews-v2, reviews-v3)
    let table = [
        (
            "auto mTLS: the sidecar label decides",
            String::new(),
            [Mtls, Mtls, Plaintext],
        ),
        (
            "the endpoint's workload PeerAuthentication is DISABLE",
            workload_pa("v1-off", "version: v1", "  mtls: {mode: DISABLE}\n"),
            [Plaintext, Mtls, Plaintext],
        ),
        (
            "the endpoint's portLevelMtls for its port is DISABLE",
            workload_pa(
                "v1-port",
                "version: v1",
                "  mtls: {mode: STRICT}\n  portLevelMtls:\n    9080: {mode: DISABLE}\n",
            ),
            [Plaintext, Mtls, Plaintext],
        ),
        (
            "portLevelMtls STRICT beats the workload's DISABLE",
            workload_pa(
                "v1-port",
                "version: v1",
                "  mtls: {mode: DISABLE}\n  portLevelMtls:\n    9080: {mode: STRICT}\n",
            ),
            [Mtls, Mtls, Plaintext],
        ),
        (
            "portLevelMtls of another port does not apply",
            workload_pa(
                "v1-port",
                "version: v1",
                "  mtls: {mode: DISABLE}\n  portLevelMtls:\n    8080: {mode: STRICT}\n",
            ),
            [Plaintext, Mtls, Plaintext],
        ),
        (
            "a namespace DISABLE with a STRICT workload: auto mTLS is off for the Service",
            format!(
                "{}---\n{}",
                pa("default", "ns", "  mtls: {mode: DISABLE}\n"),
                workload_pa("v2-strict", "version: v2", "  mtls: {mode: STRICT}\n")
            ),
            [Plaintext, Plaintext, Plaintext],
        ),
        (
            "a namespace DISABLE elsewhere changes nothing",
            pa("prod", "ns", "  mtls: {mode: DISABLE}\n"),
            [Mtls, Mtls, Plaintext],
        ),
        (
            "rule ISTIO_MUTUAL with a port-level entry without tls: the rule's mode labels the endpoints with a sidecar, never one without",
            reviews_rule(&format!("    tls: {{mode: ISTIO_MUTUAL}}\n{PORT_9080_LB}")),
            [Mtls, Mtls, Plaintext],
        ),
        (
            "rule DISABLE with a port-level entry without tls: no endpoint gets mTLS",
            reviews_rule(&format!("    tls: {{mode: DISABLE}}\n{PORT_9080_LB}")),
            [Plaintext, Plaintext, Plaintext],
        ),
        (
            "rule SIMPLE with a port-level entry without tls: not ISTIO_MUTUAL, no mTLS",
            reviews_rule(&format!("    tls: {{mode: SIMPLE}}\n{PORT_9080_LB}")),
            [Plaintext, Plaintext, Plaintext],
        ),
        (
            "a rule without tls leaves the decision to the endpoint",
            format!(
                "{}---\n{}",
                reviews_rule(PORT_9080_LB),
                workload_pa("v2-off", "version: v2", "  mtls: {mode: DISABLE}\n")
            ),
            [Mtls, Plaintext, Plaintext],
        ),
    ];
    for (why, extra, [v1, v2, v3]) in table {
        assert_eq!(
            wire(&extra, "reviews", 9080),
            rows(&[("reviews-v1", v1), ("reviews-v2", v2), ("reviews-v3", v3)]),
            "{why}"
        );
    }
}

#[test]
fn mtls3_endpoint_peer_authentication_is_keyed_by_the_target_port() {
    // db: Service port 5432 → container port 15432.
    let table = [
        (
            "DISABLE on the container port",
            "15432: {mode: DISABLE}",
            Plaintext,
        ),
        (
            "DISABLE on the Service port only",
            "5432: {mode: DISABLE}",
            Mtls,
        ),
    ];
    for (why, port_level, want) in table {
        let extra = workload_pa(
            "db",
            "app: db",
            &format!("  portLevelMtls:\n    {port_level}\n"),
        );
        assert_eq!(
            wire(&extra, "db", 5432),
            rows(&[("db-0", want), ("db-1", want)]),
            "{why}"
        );
    }
}

/// `default/peers`: a headless http Service over peers-0 and peers-1 (both
/// with a sidecar) and, when `with_plain_pod`, peers-2 without one.
fn peers(with_plain_pod: bool) -> String {
    const SIDECAR: &str = "security.istio.io/tlsMode: istio";
    let mut parts = vec![
        headless_service(
            "default",
            "peers",
            "app: peers",
            "    - {name: http, port: 8080}\n",
        ),
        pod(
            "default",
            "peers-0",
            "10.0.5.1",
            &format!("app: peers, {SIDECAR}"),
        ),
        pod(
            "default",
            "peers-1",
            "10.0.5.2",
            &format!("app: peers, {SIDECAR}"),
        ),
    ];
    if with_plain_pod {
        parts.push(pod("default", "peers-2", "10.0.5.3", "app: peers"));
    }
    parts.join("---\n")
}

#[test]
fn mtls4_headless_service_gets_mtls_only_when_every_pod_has_a_sidecar() {
    // (why, a pod without sidecar?, extra manifests, what each pod receives)
    let table = [
        ("every pod has a sidecar", false, String::new(), Mtls),
        (
            "one pod has no sidecar: none gets mTLS",
            true,
            String::new(),
            Plaintext,
        ),
        (
            "every pod has a sidecar but the namespace is DISABLE",
            false,
            pa("default", "ns", "  mtls: {mode: DISABLE}\n"),
            Plaintext,
        ),
        (
            "no per-endpoint decision: the pods' own DISABLE does not change it",
            false,
            workload_pa("p0", "app: peers", "  mtls: {mode: DISABLE}\n"),
            Mtls,
        ),
        (
            "an explicit ISTIO_MUTUAL still wins",
            true,
            dr(
                "default",
                "peers",
                "  host: peers\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
            ),
            Mtls,
        ),
    ];
    for (why, with_plain_pod, extra, want) in table {
        let manifests = format!("{}---\n{}", peers(with_plain_pod), extra);
        let got = wire(&manifests, "peers", 8080);
        let mut expected = vec![("peers-0", want), ("peers-1", want)];
        if with_plain_pod {
            expected.push(("peers-2", want));
        }
        assert_eq!(got, rows(&expected), "{why}");
    }
}

/// MTLS-2 for ServiceEntry hosts: none toward a mesh-external host; a
/// mesh-internal one is decided per endpoint like a Service.
#[test]
fn mtls2_no_auto_mtls_toward_a_mesh_external_host() {
    // (location, endpoints, what each endpoint receives on which port)
    let table = [
        (
            "MESH_EXTERNAL",
            "[{address: 192.0.2.11}, {address: 192.0.2.12, ports: {tcp-pg: 15432}}]",
            vec![
                ("192.0.2.11", Some(5432), Plaintext),
                ("192.0.2.12", Some(15432), Plaintext),
            ],
        ),
        (
            "MESH_INTERNAL",
            // The first is reviews-v1 (a sidecar), the second reviews-v3 (none).
            "[{address: 10.0.0.1}, {address: 10.0.0.3}]",
            vec![
                ("10.0.0.1", Some(5432), Mtls),
                ("10.0.0.3", Some(5432), Plaintext),
            ],
        ),
    ];
    for (location, endpoints, want) in table {
        let m = mesh(&se(
            "default",
            "db",
            &format!(
                "  hosts: [db.internal]\n  location: {location}\n  resolution: STATIC\n  ports: [{{number: 5432, name: tcp-pg, protocol: TCP}}]\n  endpoints: {endpoints}\n"
            ),
        ));
        let e = m.expect("default/client", "db.internal", 5432);
        let got: Vec<(String, Option<u16>, ExpectedTransport)> = e.destinations[0]
            .endpoints
            .iter()
            .map(|ep| (ep.ip.to_string(), ep.port, ep.expect))
            .collect();
        let want: Vec<(String, Option<u16>, ExpectedTransport)> = want
            .into_iter()
            .map(|(ip, port, t)| (ip.to_owned(), port, t))
            .collect();
        assert_eq!(got, want, "{location}");
    }
}
