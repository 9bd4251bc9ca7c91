//! DestinationRule rules DR-1 to DR-7 of `docs/istio-semantics.md`: host
//! expansion, lookup order, wildcard shadowing, workloadSelector, merging,
//! subsets and TLS precedence.

use crate::support::policy::*;
use meshdrift::observation::ExpectedTransport;
use meshdrift::policy::{ExpectedTls, TlsSource};

/// Routes default/reviews 50/50 to v1/v2 (VirtualService in `default`).
fn split_vs() -> String {
    vs(
        "default",
        "reviews",
        "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 50}\n        - {destination: {host: reviews, subset: v2}, weight: 50}\n",
    )
}

fn rule_for(m: &Mesh, from: &str) -> Option<String> {
    let host = if from.starts_with("default/") {
        "reviews"
    } else {
        "reviews.default"
    };
    m.expect(from, host, 9080).destinations[0]
        .destination_rule
        .clone()
}

fn tls_of(m: &Mesh, from: &str) -> (ExpectedTls, TlsSource) {
    let host = if from.starts_with("default/") {
        "reviews"
    } else {
        "reviews.default"
    };
    let d = &m.expect(from, host, 9080).destinations[0];
    (d.tls.mode, d.tls.source)
}

#[test]
fn dr_host_short_name_expands_to_the_rule_namespace() {
    let m = mesh(&dr(
        "default",
        "r",
        "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    ));
    assert_eq!(rule_for(&m, "default/client"), s("default/r"));
    // The same short name in `other` means reviews.other: it does not apply.
    let m = mesh(&dr(
        "other",
        "r",
        "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    ));
    assert_eq!(rule_for(&m, "other/client"), None);
}

#[test]
fn dr_lookup_prefers_the_client_namespace() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "svc-ns",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        ),
        dr(
            "other",
            "client-ns",
            "  host: reviews.default.svc.cluster.local\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), s("other/client-ns"));
    assert_eq!(tls_of(&m, "other/client").0, ExpectedTls::Disable);
    assert_eq!(rule_for(&m, "default/client"), s("default/svc-ns"));
}

#[test]
fn dr_lookup_falls_back_to_the_service_namespace() {
    let m = mesh(&dr(
        "default",
        "svc-ns",
        "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    ));
    assert_eq!(rule_for(&m, "other/client"), s("default/svc-ns"));
}

#[test]
fn dr_lookup_falls_back_to_the_root_namespace_last() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "istio-system",
            "mesh-wide",
            "  host: '*.local'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        ),
        dr(
            "default",
            "svc-ns",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), s("default/svc-ns"));
    let m = mesh(&dr(
        "istio-system",
        "mesh-wide",
        "  host: '*.local'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n",
    ));
    assert_eq!(rule_for(&m, "other/client"), s("istio-system/mesh-wide"));
    assert_eq!(tls_of(&m, "other/client").0, ExpectedTls::Simple);
}

#[test]
fn dr_wildcard_in_client_namespace_hides_exact_rule_in_service_namespace() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "other",
            "wild",
            "  host: '*.default.svc.cluster.local'\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
        ),
        dr(
            "default",
            "exact",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), s("other/wild"));
    assert_eq!(tls_of(&m, "other/client").0, ExpectedTls::Disable);
}

#[test]
fn dr_most_specific_host_wins_within_a_namespace() {
    let m = mesh(&format!(
        "{}---\n{}---\n{}",
        dr(
            "default",
            "a-all",
            "  host: '*'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        ),
        dr(
            "default",
            "b-ns",
            "  host: '*.default.svc.cluster.local'\n  trafficPolicy: {tls: {mode: MUTUAL}}\n"
        ),
        dr(
            "default",
            "c-exact",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "default/client"), s("default/c-exact"));
}

#[test]
fn dr_export_to_dot_hides_the_rule_from_other_namespaces() {
    let m = mesh(&dr(
        "default",
        "private",
        "  host: reviews\n  exportTo: ['.']\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    ));
    assert_eq!(rule_for(&m, "default/client"), s("default/private"));
    assert_eq!(rule_for(&m, "other/client"), None);
}

#[test]
fn dr_hidden_specific_rule_is_not_replaced_by_a_visible_general_one() {
    // Istio picks the most specific exported host first, then checks exportTo.
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "exact",
            "  host: reviews\n  exportTo: [prod]\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        ),
        dr(
            "default",
            "wild",
            "  host: '*.default.svc.cluster.local'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), None);
}

#[test]
fn dr_export_to_other_namespaces_only_hides_it_from_its_own() {
    let m = mesh(&dr(
        "default",
        "elsewhere",
        "  host: reviews\n  exportTo: [other]\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n",
    ));
    assert_eq!(rule_for(&m, "other/client"), s("default/elsewhere"));
    assert_eq!(rule_for(&m, "default/client"), None);
}

#[test]
fn dr_selector_rule_of_another_namespace_stops_the_search_without_applying() {
    // The service namespace's only rule for the host has a selector: it never
    // applies to other namespaces, and the root namespace is not consulted.
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "sel",
            "  host: reviews\n  workloadSelector: {matchLabels: {app: client}}\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        ),
        dr(
            "istio-system",
            "mesh-wide",
            "  host: '*.local'\n  trafficPolicy: {tls: {mode: MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), None);
    assert_eq!(rule_for(&m, "default/client"), s("default/sel"));
}

#[test]
fn dr_workload_selector_limits_the_rule_to_matching_clients() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "for-testers",
            "  host: reviews\n  workloadSelector: {matchLabels: {app: tester}}\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
        ),
        dr(
            "default",
            "everyone",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "default/tester"), s("default/for-testers"));
    assert_eq!(rule_for(&m, "default/client"), s("default/everyone"));
    // Other namespaces never see a selector rule.
    assert_eq!(rule_for(&m, "other/client"), s("default/everyone"));
}

#[test]
fn dr_workload_selector_without_a_match_stops_the_search_in_that_namespace() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "other",
            "testers-only",
            "  host: reviews.default.svc.cluster.local\n  workloadSelector: {matchLabels: {app: tester}}\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
        ),
        dr(
            "default",
            "svc-ns",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        )
    ));
    assert_eq!(rule_for(&m, "other/client"), None);
    assert_eq!(
        tls_of(&m, "other/client"),
        (ExpectedTls::Auto, TlsSource::AutoMtls)
    );
}

#[test]
fn dr_merge_concatenates_subsets_first_definition_wins() {
    let m = mesh(&format!(
        "{}---\n{}---\n{}",
        split_vs(),
        dr(
            "default",
            "a",
            "  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v1}}\n"
        ),
        dr(
            "default",
            "b",
            "  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v3}}\n    - {name: v2, labels: {version: v2}}\n"
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    let v1 = &e.destinations[0];
    assert_eq!(v1.destination_rule, s("default/a + default/b"));
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(v1.endpoints[0].pod, s("default/reviews-v1"));
    assert_eq!(e.destinations[1].endpoints[0].pod, s("default/reviews-v2"));
}

#[test]
fn dr_merge_first_traffic_policy_wins_whole() {
    // `a` is older and has a trafficPolicy without tls: it wins whole, so b's tls is ignored.
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "b",
            "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n"
        ),
        dr(
            "default",
            "a",
            "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n"
        )
    ));
    assert_eq!(
        tls_of(&m, "default/client"),
        (ExpectedTls::Auto, TlsSource::AutoMtls)
    );
}

#[test]
fn dr_merge_order_is_creation_time() {
    let m = mesh(&format!(
        "{}---\n{}",
        dr(
            "default",
            "a",
            "  host: reviews\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        )
        .replace(
            "namespace: default\n",
            "namespace: default\n  creationTimestamp: '2025-06-01T00:00:00Z'\n"
        ),
        dr(
            "default",
            "b",
            "  host: reviews\n  trafficPolicy: {tls: {mode: MUTUAL}}\n"
        )
        .replace(
            "namespace: default\n",
            "namespace: default\n  creationTimestamp: '2025-01-01T00:00:00Z'\n"
        )
    ));
    assert_eq!(tls_of(&m, "default/client").0, ExpectedTls::Mutual);
}

#[test]
fn subset_endpoints_are_pods_whose_labels_contain_the_subset_labels() {
    let m = mesh(&format!(
        "{}---\n{}",
        vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: sidecars}, weight: 1}\n        - {destination: {host: reviews, subset: all}, weight: 1}\n"
        ),
        dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - {name: sidecars, labels: {security.istio.io/tlsMode: istio}}\n    - {name: all, labels: {app: reviews}}\n"
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    // Subsets may overlap: v1 and v2 are in both.
    assert_eq!(e.destinations[0].endpoints.len(), 2);
    assert_eq!(e.destinations[1].endpoints.len(), 3);
}

#[test]
fn subset_selecting_no_pods_has_no_endpoints() {
    let m = mesh(&format!(
        "{}---\n{}",
        split_vs(),
        dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v9}}\n    - {name: v2, labels: {version: v2}}\n"
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert!(e.destinations[0].endpoints.is_empty());
    assert_eq!(e.destinations[0].weight, 0.5);
}

fn transports(m: &Mesh) -> Vec<(String, ExpectedTransport)> {
    m.expect("default/client", "reviews", 9080).destinations[0]
        .endpoints
        .iter()
        .map(|e| (e.pod.clone().unwrap(), e.expect))
        .collect()
}

#[test]
fn tls_modes_map_to_what_the_wire_shows() {
    let table = [
        (
            "ISTIO_MUTUAL",
            ExpectedTls::IstioMutual,
            ExpectedTransport::Mtls,
        ),
        ("MUTUAL", ExpectedTls::Mutual, ExpectedTransport::Tls),
        ("SIMPLE", ExpectedTls::Simple, ExpectedTransport::Tls),
        (
            "DISABLE",
            ExpectedTls::Disable,
            ExpectedTransport::Plaintext,
        ),
    ];
    for (mode, expected, transport) in table {
        let m = mesh(&dr(
            "default",
            "r",
            &format!("  host: reviews\n  trafficPolicy: {{tls: {{mode: {mode}}}}}\n"),
        ));
        assert_eq!(
            tls_of(&m, "default/client"),
            (expected, TlsSource::DestinationRule),
            "{mode}"
        );
        assert!(
            transports(&m).iter().all(|(_, t)| *t == transport),
            "{mode}"
        );
    }
}

#[test]
fn tls_empty_object_means_disable() {
    let m = mesh(&dr(
        "default",
        "r",
        "  host: reviews\n  trafficPolicy:\n    tls: {}\n",
    ));
    assert_eq!(
        tls_of(&m, "default/client"),
        (ExpectedTls::Disable, TlsSource::DestinationRule)
    );
    assert!(
        transports(&m)
            .iter()
            .all(|(_, t)| *t == ExpectedTransport::Plaintext)
    );
}

#[test]
fn tls_port_level_entry_replaces_the_whole_top_level_policy() {
    // The entry for 9080 has no tls: "no TLS setting", i.e. auto mTLS.
    let m = mesh(&dr(
        "default",
        "r",
        "  host: reviews\n  trafficPolicy:\n    tls: {mode: DISABLE}\n    portLevelSettings:\n      - port: {number: 9080}\n        loadBalancer: {simple: LEAST_REQUEST}\n",
    ));
    assert_eq!(
        tls_of(&m, "default/client"),
        (ExpectedTls::Auto, TlsSource::AutoMtls)
    );
}

#[test]
fn tls_port_level_entry_for_another_port_does_not_apply() {
    let m = mesh(&dr(
        "default",
        "r",
        "  host: reviews\n  trafficPolicy:\n    tls: {mode: SIMPLE}\n    portLevelSettings:\n      - port: {number: 9999}\n        tls: {mode: DISABLE}\n",
    ));
    assert_eq!(tls_of(&m, "default/client").0, ExpectedTls::Simple);
}

#[test]
fn tls_port_level_is_keyed_by_the_service_port() {
    // db: Service port 5432, target port 15432.
    let m = mesh(&dr(
        "default",
        "db",
        "  host: db\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    portLevelSettings:\n      - port: {number: 15432}\n        tls: {mode: SIMPLE}\n      - port: {number: 5432}\n        tls: {mode: DISABLE}\n",
    ));
    assert_eq!(
        m.expect("default/client", "db", 5432).destinations[0]
            .tls
            .mode,
        ExpectedTls::Disable
    );
}

#[test]
fn tls_subset_without_policy_keeps_the_top_level() {
    let m = mesh(&format!(
        "{}---\n{}",
        split_vs(),
        dr(
            "default",
            "r",
            &format!(
                "  host: reviews\n  trafficPolicy: {{tls: {{mode: SIMPLE}}}}\n{REVIEWS_SUBSETS}"
            )
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert_eq!(e.destinations[0].tls.mode, ExpectedTls::Simple);
}

#[test]
fn tls_subset_port_level_replaces_the_subset_policy() {
    let m = mesh(&format!(
        "{}---\n{}",
        split_vs(),
        dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - name: v1\n      labels: {version: v1}\n      trafficPolicy:\n        tls: {mode: SIMPLE}\n        portLevelSettings:\n          - port: {number: 9080}\n            tls: {mode: MUTUAL}\n    - {name: v2, labels: {version: v2}}\n"
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert_eq!(e.destinations[0].tls.mode, ExpectedTls::Mutual);
    assert_eq!(e.destinations[1].tls.mode, ExpectedTls::Auto);
}

#[test]
fn subsets_of_pod_attribute_a_server_pod_to_every_subset_selecting_it() {
    let m = mesh(&dr(
        "default",
        "r",
        "  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v1}}\n    - {name: sidecars, labels: {security.istio.io/tlsMode: istio}}\n    - {name: v2, labels: {version: v2}}\n",
    ));
    let client = m.index.pod_by_name("default", "client").unwrap();
    let server = m.index.pod_by_name("default", "reviews-v1").unwrap();
    let fqdn = "reviews.default.svc.cluster.local";
    assert_eq!(
        m.policies.subsets_of_pod(&m.index, client, fqdn, server),
        vec!["v1", "sidecars"]
    );
    let no_sidecar = m.index.pod_by_name("default", "reviews-v3").unwrap();
    assert!(
        m.policies
            .subsets_of_pod(&m.index, client, fqdn, no_sidecar)
            .is_empty()
    );
}
