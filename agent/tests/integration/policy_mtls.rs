//! Auto mTLS and PeerAuthentication: rules MTLS-1, MTLS-2 and PA-1 to PA-3 of
//! `docs/istio-semantics.md`.

use crate::support::policy::*;
use meshdrift::model::istio::PeerMode;
use meshdrift::observation::ExpectedTransport;
use meshdrift::policy::ExpectedTls;

fn endpoints(m: &Mesh) -> Vec<(String, ExpectedTransport, PeerMode)> {
    m.expect("default/client", "reviews", 9080).destinations[0]
        .endpoints
        .iter()
        .map(|e| {
            (
                e.pod.clone().unwrap().replace("default/", ""),
                e.expect,
                e.peer_authentication,
            )
        })
        .collect()
}

fn row(pod: &str, t: ExpectedTransport, p: PeerMode) -> (String, ExpectedTransport, PeerMode) {
    (pod.to_owned(), t, p)
}

use ExpectedTransport::{Mtls, Plaintext};
use PeerMode::{Disable, Permissive, Strict};

#[test]
fn auto_mtls_is_decided_per_endpoint_by_the_tls_mode_label() {
    let m = mesh("");
    assert_eq!(
        endpoints(&m),
        vec![
            row("reviews-v1", Mtls, Permissive),
            row("reviews-v2", Mtls, Permissive),
            row("reviews-v3", Plaintext, Permissive),
        ]
    );
    assert_eq!(
        m.expect("default/client", "reviews", 9080).destinations[0]
            .tls
            .mode,
        ExpectedTls::Auto
    );
}

#[test]
fn auto_mtls_off_when_namespace_peer_authentication_disables() {
    let m = mesh(&pa("default", "default", "  mtls: {mode: DISABLE}\n"));
    assert!(
        endpoints(&m)
            .iter()
            .all(|(_, t, p)| *t == Plaintext && *p == Disable)
    );
}

#[test]
fn auto_mtls_off_when_mesh_peer_authentication_disables() {
    let m = mesh(&pa("istio-system", "default", "  mtls: {mode: DISABLE}\n"));
    assert!(endpoints(&m).iter().all(|(_, t, _)| *t == Plaintext));
}

#[test]
fn namespace_peer_authentication_overrides_mesh_for_clients() {
    let m = mesh(&format!(
        "{}---\n{}",
        pa("istio-system", "default", "  mtls: {mode: DISABLE}\n"),
        pa("default", "default", "  mtls: {mode: STRICT}\n")
    ));
    assert_eq!(endpoints(&m)[0], row("reviews-v1", Mtls, Strict));
}

#[test]
fn namespace_peer_authentication_unset_inherits_mesh() {
    let m = mesh(&format!(
        "{}---\n{}",
        pa("istio-system", "default", "  mtls: {mode: DISABLE}\n"),
        pa("default", "default", "  mtls: {mode: UNSET}\n")
    ));
    assert_eq!(endpoints(&m)[0], row("reviews-v1", Plaintext, Disable));
}

#[test]
fn explicit_destination_rule_tls_wins_over_auto_mtls() {
    let m = mesh(&format!(
        "{}---\n{}",
        pa("default", "default", "  mtls: {mode: DISABLE}\n"),
        dr(
            "default",
            "r",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    let e = endpoints(&m);
    // ISTIO_MUTUAL is sent even to reviews-v3, which has no sidecar.
    assert!(e.iter().all(|(_, t, _)| *t == Mtls));
    let v3 = &m.expect("default/client", "reviews", 9080).destinations[0].endpoints[2];
    assert!(v3.conflict.is_some());
}

#[test]
fn peer_authentication_default_is_permissive() {
    let m = mesh("");
    assert!(endpoints(&m).iter().all(|(_, _, p)| *p == Permissive));
}

#[test]
fn peer_authentication_scopes_narrowest_wins() {
    let m = mesh(&format!(
        "{}---\n{}---\n{}",
        pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
        pa("default", "ns", "  mtls: {mode: PERMISSIVE}\n"),
        pa(
            "default",
            "v2",
            "  selector: {matchLabels: {version: v2}}\n  mtls: {mode: DISABLE}\n"
        )
    ));
    let e = endpoints(&m);
    assert_eq!(e[0].2, Permissive, "namespace beats mesh");
    assert_eq!(e[1].2, Disable, "workload beats namespace");
    // prod has no namespace policy: the mesh's STRICT applies.
    let ratings = &m
        .expect("default/client", "ratings.prod", 9080)
        .destinations[0]
        .endpoints[0];
    assert_eq!(ratings.peer_authentication, Strict);
}

#[test]
fn peer_authentication_workload_unset_inherits_namespace() {
    let m = mesh(&format!(
        "{}---\n{}",
        pa("default", "ns", "  mtls: {mode: STRICT}\n"),
        pa(
            "default",
            "v1",
            "  selector: {matchLabels: {version: v1}}\n  mtls: {mode: UNSET}\n"
        )
    ));
    assert_eq!(endpoints(&m)[0].2, Strict);
}

#[test]
fn peer_authentication_port_level_is_keyed_by_the_container_port() {
    // db: Service port 5432 → container (target) port 15432.
    let m = mesh(&format!(
        "{}---\n{}",
        pa("default", "ns", "  mtls: {mode: STRICT}\n"),
        pa(
            "default",
            "db",
            "  selector: {matchLabels: {app: db}}\n  portLevelMtls:\n    5432: {mode: DISABLE}\n    15432: {mode: PERMISSIVE}\n"
        )
    ));
    let e = m.expect("default/client", "db", 5432);
    assert!(
        e.destinations[0]
            .endpoints
            .iter()
            .all(|ep| ep.peer_authentication == Permissive)
    );
    assert_eq!(e.destinations[0].endpoints[0].port, Some(15432));
}

#[test]
fn strict_server_refuses_plaintext_from_auto_mtls_to_pods_without_sidecar() {
    let m = mesh(&pa("default", "ns", "  mtls: {mode: STRICT}\n"));
    let v3 = &m.expect("default/client", "reviews", 9080).destinations[0].endpoints[2];
    assert_eq!((v3.expect, v3.peer_authentication), (Plaintext, Strict));
    assert!(v3.conflict.as_deref().unwrap().contains("STRICT"));
}

#[test]
fn oldest_namespace_peer_authentication_wins() {
    let m = mesh(&format!(
        "{}---\n{}",
        pa("default", "b", "  mtls: {mode: STRICT}\n"),
        pa("default", "a", "  mtls: {mode: DISABLE}\n")
    ));
    assert_eq!(endpoints(&m)[0].2, Disable);
}

#[test]
fn pa1_selector_policy_in_the_root_namespace_selects_nothing() {
    let m = mesh(&format!(
        "{}---\n{}",
        service(
            "istio-system",
            "ingress",
            "app: istio-ingressgateway",
            "    - {name: http, port: 80}\n"
        ),
        pa(
            "istio-system",
            "gw",
            "  selector: {matchLabels: {app: istio-ingressgateway}}\n  mtls: {mode: DISABLE}\n"
        )
    ));
    let e = m.expect("default/client", "ingress.istio-system", 80);
    let ingress = &e.destinations[0].endpoints[0];
    assert_eq!(
        (ingress.expect, ingress.peer_authentication),
        (Mtls, Permissive)
    );
}
