//! When no route of a VirtualService applies to a client, and which port a
//! destination without one uses: rules VS-12 to VS-14 of
//! `docs/istio-semantics.md`.

use crate::support::policy::*;
use meshdrift::observation::ExpectedTransport::{Mtls, Plaintext};
use meshdrift::policy::Expectation;

/// `(host, port, subset, weight)` of each destination.
fn destinations(e: &Expectation) -> Vec<(String, u16, Option<String>, f64)> {
    e.destinations
        .iter()
        .map(|d| (d.host.clone(), d.port, d.subset.clone(), d.weight))
        .collect()
}

/// VS-12: an http VirtualService none of whose routes applies to the client does
/// not black-hole: the Service's default route sends to every endpoint.
#[test]
fn vs12_http_without_an_applicable_route_uses_the_default_route() {
    let route = "      route: [{destination: {host: reviews, subset: v2}}]\n";
    let table = [
        (
            "every route needs sourceLabels the client lacks",
            format!(
                "    - match: [{{sourceLabels: {{app: tester}}}}]\n{route}    - match: [{{sourceLabels: {{version: v9}}}}]\n{route}"
            ),
        ),
        (
            "sourceNamespace of another namespace",
            format!("    - match: [{{sourceNamespace: other}}]\n{route}"),
        ),
        (
            "a port the client did not dial",
            format!("    - match: [{{port: 9999}}]\n{route}"),
        ),
        (
            "match gateways without mesh",
            format!("    - match: [{{gateways: [istio-system/ingress]}}]\n{route}"),
        ),
    ];
    for (why, routes) in table {
        let m = reviews_http_mesh(&routes);
        let e = m.expect("default/client", "reviews", 9080);
        assert!(e.determinable, "{why}");
        assert_eq!(e.virtual_service, s("default/v"), "{why}");
        assert_eq!(e.route, None, "{why}");
        assert_eq!(
            destinations(&e),
            vec![("reviews.default.svc.cluster.local".into(), 9080, None, 1.0)],
            "{why}"
        );
        assert_eq!(
            endpoint_transports(&e.destinations[0]),
            vec![
                ("reviews-v1".into(), Some(9080), Mtls),
                ("reviews-v2".into(), Some(9080), Mtls),
                ("reviews-v3".into(), Some(9080), Plaintext),
            ],
            "{why}"
        );
        assert!(
            e.reason
                .as_deref()
                .is_some_and(|r| r.contains("default route")),
            "{why}: {:?}",
            e.reason
        );
    }
}

/// VS-13: the same for tcp and tls routes: no static match, the default chain
/// to the Service.
#[test]
fn vs13_tcp_and_tls_without_an_applicable_route_use_the_default_chain() {
    // (why, host, port, routes, the endpoint and its target port)
    let table = [
        (
            "tcp: sourceLabels the client lacks",
            "db",
            5432,
            "  tcp:\n    - match: [{sourceLabels: {app: tester}}]\n      route: [{destination: {host: db, subset: v2}}]\n",
            ("db-0", 15432),
        ),
        (
            "tcp: destinationSubnets without the ClusterIP",
            "db",
            5432,
            "  tcp:\n    - match: [{destinationSubnets: [10.200.0.0/16]}]\n      route: [{destination: {host: db, subset: v2}}]\n",
            ("db-0", 15432),
        ),
        (
            "tcp: another port",
            "db",
            5432,
            "  tcp:\n    - match: [{port: 1}]\n      route: [{destination: {host: db, subset: v2}}]\n",
            ("db-0", 15432),
        ),
        (
            "tls: sourceNamespace of another namespace",
            "secure",
            443,
            "  tls:\n    - match: [{sniHosts: [secure.default.svc.cluster.local], sourceNamespace: other}]\n      route: [{destination: {host: secure, port: {number: 8443}}}]\n",
            ("secure-0", 443),
        ),
        (
            "tls: gateways without mesh",
            "secure",
            443,
            "  tls:\n    - match: [{sniHosts: ['*'], gateways: [ingress]}]\n      route: [{destination: {host: secure, port: {number: 8443}}}]\n",
            ("secure-0", 443),
        ),
    ];
    for (why, host, port, routes, (pod, target)) in table {
        let m = mesh(&vs("default", "v", &format!("  hosts: [{host}]\n{routes}")));
        let e = m.expect("default/client", host, port);
        assert!(e.determinable, "{why}");
        assert_eq!(e.route, None, "{why}");
        assert_eq!(
            destinations(&e),
            vec![(format!("{host}.default.svc.cluster.local"), port, None, 1.0)],
            "{why}"
        );
        let endpoints = endpoint_transports(&e.destinations[0]);
        assert_eq!(endpoints[0], (pod.into(), Some(target), Mtls), "{why}");
        assert!(
            e.reason.as_deref().is_some_and(|r| r.contains("default")),
            "{why}: {:?}",
            e.reason
        );
    }
}

/// Services with one port (`legacy`: tcp 3306 → 13306; `backend`: tls 9443 →
/// 19443) and their pods.
fn single_port_services() -> String {
    const SIDECAR: &str = "security.istio.io/tlsMode: istio";
    [
        service(
            "default",
            "legacy",
            "app: legacy",
            "    - {name: tcp-mysql, port: 3306, targetPort: 13306}\n",
        ),
        pod(
            "default",
            "legacy-0",
            "10.0.4.1",
            &format!("app: legacy, {SIDECAR}"),
        ),
        service(
            "default",
            "backend",
            "app: backend",
            "    - {name: tls, port: 9443, targetPort: 19443}\n",
        ),
        pod(
            "default",
            "backend-0",
            "10.0.4.2",
            &format!("app: backend, {SIDECAR}"),
        ),
    ]
    .join("---\n")
}

/// VS-14: a destination without a port, to a Service with a single port, uses
/// that port (and its target port); with several ports, the dialled one.
#[test]
fn vs14_destination_without_a_port_uses_the_single_service_port() {
    // (why, dialled host, port, route list, destination, want port, want target port)
    let table = [
        (
            "tcp to a single-port Service",
            "db",
            5432,
            "tcp",
            "{host: legacy}",
            "legacy",
            3306,
            Some(13306),
        ),
        (
            "tls to a single-port Service",
            "secure",
            443,
            "tls",
            "{host: backend}",
            "backend",
            9443,
            Some(19443),
        ),
        (
            "http to a single-port Service (the same cluster naming)",
            "reviews",
            9080,
            "http",
            "{host: legacy}",
            "legacy",
            3306,
            Some(13306),
        ),
        (
            "an explicit port wins",
            "db",
            5432,
            "tcp",
            "{host: secure, port: {number: 7000}}",
            "secure",
            7000,
            Some(7000),
        ),
        (
            "several ports: the dialled one",
            "reviews",
            9080,
            "http",
            "{host: secure}",
            "secure",
            9080,
            None,
        ),
    ];
    for (why, host, port, kind, destination, want_host, want_port, want_target) in table {
        let matches = if kind == "tls" {
            "    - match: [{sniHosts: ['*']}]\n      route"
        } else {
            "    - route"
        };
        let m = mesh(&format!(
            "{}---\n{}",
            single_port_services(),
            vs(
                "default",
                "v",
                &format!(
                    "  hosts: [{host}]\n  {kind}:\n{matches}: [{{destination: {destination}}}]\n"
                )
            )
        ));
        let e = m.expect("default/client", host, port);
        assert!(e.determinable, "{why}: {:?}", e.reason);
        let d = &e.destinations[0];
        assert_eq!(
            (d.host.as_str(), d.port),
            (
                format!("{want_host}.default.svc.cluster.local").as_str(),
                want_port
            ),
            "{why}"
        );
        assert_eq!(
            d.endpoints.first().and_then(|ep| ep.port),
            want_target,
            "{why}"
        );
    }
}
