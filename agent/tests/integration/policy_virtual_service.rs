//! VirtualService rules VS-1 to VS-11 of `docs/istio-semantics.md`: host names,
//! gateways, exportTo, duplicates, route lists by protocol, first match,
//! L4-decidable matches, weights, unit.

use crate::support::policy::*;
use meshdrift::inventory::RouteKind;
use meshdrift::observation::Unit;

const SPLIT_V1_V2: &str = "  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 50}\n        - {destination: {host: reviews, subset: v2}, weight: 50}\n";

#[test]
fn host_short_name_expands_to_the_virtual_service_namespace() {
    let m = mesh(&format!(
        "{}---\n{}",
        reviews_dr(),
        vs(
            "default",
            "short",
            &format!("  hosts: [reviews]\n{SPLIT_V1_V2}")
        )
    ));
    assert_eq!(
        m.vs_name("default/client", "reviews", 9080),
        s("default/short")
    );
    assert_eq!(
        m.vs_name("other/client", "reviews.default.svc.cluster.local", 9080),
        s("default/short")
    );
}

#[test]
fn host_short_name_in_another_namespace_means_that_namespace() {
    // `reviews` written in namespace `other` is reviews.other.svc.cluster.local.
    let m = mesh(&vs(
        "other",
        "elsewhere",
        &format!("  hosts: [reviews]\n{SPLIT_V1_V2}"),
    ));
    assert_eq!(m.vs_name("other/client", "reviews.default", 9080), None);
}

#[test]
fn host_dotted_name_is_taken_as_written() {
    // `reviews.default` is not expanded, so it is not the Service's FQDN.
    let m = mesh(&format!(
        "{}---\n{}",
        reviews_dr(),
        vs(
            "default",
            "dotted",
            &format!("  hosts: [reviews.default]\n{SPLIT_V1_V2}")
        )
    ));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), None);
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(None, 1.0)]
    );
}

#[test]
fn host_wildcard_covers_services_under_it() {
    let m = mesh(&vs(
        "default",
        "wild",
        "  hosts: ['*.default.svc.cluster.local']\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(
        m.vs_name("default/client", "reviews", 9080),
        s("default/wild")
    );
    assert_eq!(m.vs_name("default/client", "ratings.prod", 9080), None);
}

#[test]
fn host_exact_beats_wildcard_even_when_younger() {
    let m = mesh(&format!(
        "{}---\n{}",
        vs(
            "default",
            "wild",
            "  hosts: ['*']\n  http:\n    - route:\n        - destination: {host: reviews}\n"
        ),
        vs(
            "default",
            "exact",
            "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews}\n"
        )
        .replace(
            "namespace: default\n",
            "namespace: default\n  creationTimestamp: '2030-01-01T00:00:00Z'\n"
        )
    ));
    assert_eq!(
        m.vs_name("default/client", "reviews", 9080),
        s("default/exact")
    );
}

#[test]
fn host_longer_wildcard_beats_shorter() {
    let m = mesh(&format!(
        "{}---\n{}",
        vs(
            "default",
            "a-short",
            "  hosts: ['*.cluster.local']\n  http:\n    - route:\n        - destination: {host: reviews}\n"
        ),
        vs(
            "default",
            "b-long",
            "  hosts: ['*.default.svc.cluster.local']\n  http:\n    - route:\n        - destination: {host: reviews}\n"
        )
    ));
    assert_eq!(
        m.vs_name("default/client", "reviews", 9080),
        s("default/b-long")
    );
}

#[test]
fn route_destination_host_expands_relative_to_the_virtual_service_namespace() {
    // Written in `other`, destination `reviews` means reviews.other: no such Service.
    let m = mesh(&vs(
        "other",
        "cross",
        "  hosts: [reviews.default.svc.cluster.local]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert_eq!(e.destinations[0].host, "reviews.other.svc.cluster.local");
    assert!(e.destinations[0].endpoints.is_empty());
    assert!(
        e.destinations[0]
            .note
            .as_deref()
            .unwrap()
            .contains("IST0101")
    );
}

#[test]
fn gateways_absent_means_mesh() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), s("default/v"));
}

#[test]
fn gateways_without_mesh_do_not_apply_to_sidecars() {
    let m = mesh(&vs(
        "default",
        "edge",
        "  hosts: [reviews]\n  gateways: [istio-system/ingress]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), None);
}

#[test]
fn gateways_listing_mesh_apply_to_sidecars() {
    let m = mesh(&vs(
        "default",
        "both",
        "  hosts: [reviews]\n  gateways: [istio-system/ingress, mesh]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(
        m.vs_name("default/client", "reviews", 9080),
        s("default/both")
    );
}

#[test]
fn export_to_empty_is_visible_everywhere() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(
        m.vs_name("other/client", "reviews.default", 9080),
        s("default/v")
    );
}

#[test]
fn export_to_dot_is_own_namespace_only() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  exportTo: ['.']\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), s("default/v"));
    assert_eq!(m.vs_name("other/client", "reviews.default", 9080), None);
}

#[test]
fn export_to_tilde_is_nowhere() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  exportTo: ['~']\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), None);
}

#[test]
fn export_to_named_namespace() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  exportTo: [other]\n  http:\n    - route:\n        - destination: {host: reviews}\n",
    ));
    assert_eq!(
        m.vs_name("other/client", "reviews.default", 9080),
        s("default/v")
    );
    assert_eq!(m.vs_name("default/client", "reviews", 9080), None);
}

#[test]
fn oldest_virtual_service_claims_the_host() {
    let older = vs("default", "zz-older", "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v1}\n")
        .replace("namespace: default\n", "namespace: default\n  creationTimestamp: '2024-01-01T00:00:00Z'\n");
    let newer = vs("default", "aa-newer", "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v2}\n")
        .replace("namespace: default\n", "namespace: default\n  creationTimestamp: '2025-01-01T00:00:00Z'\n");
    for order in [
        format!("{newer}---\n{older}"),
        format!("{older}---\n{newer}"),
    ] {
        let m = mesh(&format!("{}---\n{order}", reviews_dr()));
        assert_eq!(
            m.vs_name("default/client", "reviews", 9080),
            s("default/zz-older")
        );
        assert_eq!(
            m.split("default/client", "reviews", 9080),
            vec![(s("v1"), 1.0)]
        );
    }
}

#[test]
fn oldest_virtual_service_ties_break_by_name() {
    let a = vs(
        "default",
        "a",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v1}\n",
    );
    let b = vs(
        "default",
        "b",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v2}\n",
    );
    let m = mesh(&format!("{b}---\n{a}"));
    assert_eq!(m.vs_name("default/client", "reviews", 9080), s("default/a"));
}

fn all_kinds_vs() -> String {
    vs(
        "default",
        "secure",
        "  hosts: [secure]\n  http:\n    - route:\n        - destination: {host: secure, subset: h}\n  tls:\n    - match:\n        - sniHosts: ['*']\n      route:\n        - destination: {host: secure, subset: t}\n  tcp:\n    - route:\n        - destination: {host: secure, subset: c}\n",
    )
}

#[test]
fn route_list_follows_service_port_protocol() {
    let m = mesh(&all_kinds_vs());
    // (port, route kind, subset chosen)
    let table = [
        (7070, RouteKind::Http, "h"), // grpc-* name
        (9000, RouteKind::Http, "h"), // appProtocol http beats the tcp- name
        (443, RouteKind::Tls, "t"),   // https
        (8443, RouteKind::Tls, "t"),  // tls-*
        (7000, RouteKind::Tcp, "c"),  // unnamed
    ];
    for (port, kind, subset) in table {
        let e = m.expect("default/client", "secure", port);
        assert_eq!(e.protocol, kind, "port {port}");
        assert_eq!(e.route.as_ref().unwrap().kind, kind, "port {port}");
        assert_eq!(e.destinations[0].subset, s(subset), "port {port}");
    }
}

#[test]
fn unit_is_request_for_http_and_connection_for_tcp_and_tls() {
    let m = mesh(&all_kinds_vs());
    assert_eq!(
        m.expect("default/client", "secure", 7070).unit,
        Unit::Request
    );
    assert_eq!(
        m.expect("default/client", "secure", 443).unit,
        Unit::Connection
    );
    assert_eq!(
        m.expect("default/client", "secure", 7000).unit,
        Unit::Connection
    );
}

#[test]
fn first_match_wins() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  http:\n    - match:\n        - sourceLabels: {app: client}\n      route:\n        - destination: {host: reviews, subset: v1}\n    - match:\n        - sourceLabels: {version: v1}\n      route:\n        - destination: {host: reviews, subset: v2}\n",
    ));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
    assert_eq!(
        m.expect("default/client", "reviews", 9080)
            .route
            .unwrap()
            .index,
        0
    );
}

#[test]
fn match_entries_are_ored_and_fields_anded() {
    let body = "  hosts: [reviews]\n  http:\n    - match:\n        - {sourceLabels: {app: client}, sourceNamespace: other}\n        - {sourceLabels: {app: tester}}\n      route:\n        - destination: {host: reviews, subset: v2}\n    - route:\n        - destination: {host: reviews, subset: v1}\n";
    let m = mesh(&vs("default", "v", body).replace(
        "hosts: [reviews]",
        "hosts: [reviews.default.svc.cluster.local]",
    ));
    // default/client: app matches but namespace does not (AND) → falls through.
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
    // other/client: both fields match.
    assert_eq!(
        m.split("other/client", "reviews.default", 9080),
        vec![(s("v2"), 1.0)]
    );
    // default/tester: the second entry matches (OR).
    assert_eq!(
        m.split("default/tester", "reviews", 9080),
        vec![(s("v2"), 1.0)]
    );
}

#[test]
fn http_route_without_match_is_a_catch_all() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v1}\n    - match:\n        - sourceLabels: {app: client}\n      route:\n        - destination: {host: reviews, subset: v2}\n",
    ));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
}

#[test]
fn port_match_uses_the_service_port_not_the_target_port() {
    // db: Service port 5432, target port 15432.
    let body = "  hosts: [db]\n  tcp:\n    - match: [{port: 15432}]\n      route: [{destination: {host: db, subset: a}}]\n    - match: [{port: 5432}]\n      route: [{destination: {host: db, subset: b}}]\n";
    let m = mesh(&vs("default", "db", body));
    assert_eq!(m.split("default/client", "db", 5432), vec![(s("b"), 1.0)]);
}

#[test]
fn source_labels_are_a_subset_of_the_client_labels() {
    let body = "  hosts: [reviews]\n  http:\n    - match: [{sourceLabels: {app: client, version: v1}}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v2"), 1.0)]
    );
    // other/client has app=client but no version label.
    assert_eq!(
        m.split("other/client", "reviews.default", 9080),
        vec![(s("v1"), 1.0)]
    );
}

#[test]
fn source_namespace_is_the_client_namespace() {
    let body = "  hosts: [reviews]\n  http:\n    - match: [{sourceNamespace: other}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("other/client", "reviews.default", 9080),
        vec![(s("v2"), 1.0)]
    );
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
}

#[test]
fn http_gateways_quirk_skips_source_labels_and_namespace() {
    // With `gateways` set in an http match, sourceLabels/sourceNamespace are not checked.
    let body = "  hosts: [reviews]\n  http:\n    - match: [{gateways: [mesh], sourceLabels: {app: nobody}, sourceNamespace: nowhere}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v2"), 1.0)]
    );
}

#[test]
fn http_match_gateways_without_mesh_never_match_sidecars() {
    let body = "  hosts: [reviews]\n  gateways: [mesh, istio-system/ingress]\n  http:\n    - match: [{gateways: [istio-system/ingress]}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
}

#[test]
fn tcp_match_ands_gateways_and_source_labels() {
    // No quirk for tcp: gateways [mesh] AND a non-matching sourceLabels → no match.
    let body = "  hosts: [db]\n  tcp:\n    - match: [{gateways: [mesh], sourceLabels: {app: nobody}}]\n      route: [{destination: {host: db, subset: a}}]\n    - route: [{destination: {host: db, subset: b}}]\n";
    let m = mesh(&vs("default", "db", body));
    assert_eq!(m.split("default/client", "db", 5432), vec![(s("b"), 1.0)]);
}

#[test]
fn tcp_destination_subnets_use_the_cluster_ip() {
    let body = "  hosts: [db]\n  tcp:\n    - match: [{destinationSubnets: [10.200.0.0/16]}]\n      route: [{destination: {host: db, subset: a}}]\n    - match: [{destinationSubnets: [10.96.0.0/16]}]\n      route: [{destination: {host: db, subset: b}}]\n";
    let m = mesh(&vs("default", "db", body));
    assert_eq!(m.split("default/client", "db", 5432), vec![(s("b"), 1.0)]);
}

#[test]
fn l7_match_before_the_applicable_route_is_indeterminate() {
    let body = "  hosts: [reviews]\n  http:\n    - match: [{headers: {end-user: {exact: jason}}}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    let e = m.expect("default/client", "reviews", 9080);
    assert!(!e.determinable);
    assert!(e.reason.as_deref().unwrap().contains("end-user"));
    assert!(e.destinations.is_empty(), "no guess");
    assert_eq!(e.candidates.len(), 2);
    assert_eq!(e.candidates[0].destinations[0].subset, s("v2"));
    assert_eq!(e.candidates[1].condition, None);
}

#[test]
fn l7_match_excluded_by_l4_fields_stays_determinable() {
    // The uri route only applies to testers: for the client it is decided at L4.
    let body = "  hosts: [reviews]\n  http:\n    - match: [{uri: {prefix: /beta}, sourceLabels: {app: tester}}]\n      route: [{destination: {host: reviews, subset: v2}}]\n    - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
    assert!(!m.expect("default/tester", "reviews", 9080).determinable);
}

#[test]
fn l7_match_after_the_applicable_route_does_not_matter() {
    let body = "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: v1}}]\n    - match: [{uri: {prefix: /x}}]\n      route: [{destination: {host: reviews, subset: v2}}]\n";
    let m = mesh(&vs("default", "v", body));
    assert_eq!(
        m.split("default/client", "reviews", 9080),
        vec![(s("v1"), 1.0)]
    );
}

#[test]
fn tls_sni_hosts_need_the_client_hello() {
    let body = "  hosts: [secure]\n  tls:\n    - match: [{sniHosts: [secure.example.com]}]\n      route: [{destination: {host: secure, subset: a}}]\n    - match: [{sniHosts: ['*']}]\n      route: [{destination: {host: secure, subset: b}}]\n";
    let m = mesh(&vs("default", "v", body));
    let e = m.expect("default/client", "secure", 443);
    assert!(!e.determinable);
    assert!(e.reason.unwrap().contains("sniHosts"));
}

fn weights(ws: &[&str]) -> Vec<(Option<String>, f64)> {
    let dests: String = ws
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let subset = ["v1", "v2", "v3"][i];
            if w.is_empty() {
                format!("        - destination: {{host: reviews, subset: {subset}}}\n")
            } else {
                format!("        - destination: {{host: reviews, subset: {subset}}}\n          weight: {w}\n")
            }
        })
        .collect();
    let m = reviews_http_mesh(&format!("    - route:\n{dests}"));
    m.split("default/client", "reviews", 9080)
}

#[test]
fn weights_are_relative() {
    assert_eq!(weights(&["1", "3"]), vec![(s("v1"), 0.25), (s("v2"), 0.75)]);
    assert_eq!(weights(&["30", "30"]), vec![(s("v1"), 0.5), (s("v2"), 0.5)]);
    assert_eq!(weights(&["90", "10"]), vec![(s("v1"), 0.9), (s("v2"), 0.1)]);
}

#[test]
fn weights_single_destination_gets_everything() {
    assert_eq!(weights(&["30"]), vec![(s("v1"), 1.0)]);
    assert_eq!(weights(&["0"]), vec![(s("v1"), 1.0)]);
    assert_eq!(weights(&[""]), vec![(s("v1"), 1.0)]);
}

#[test]
fn weights_zero_among_several_gets_nothing() {
    assert_eq!(weights(&["100", "0"]), vec![(s("v1"), 1.0), (s("v2"), 0.0)]);
}

#[test]
fn weights_unset_among_several_gets_nothing() {
    assert_eq!(
        weights(&["", "40", "60"]),
        vec![(s("v1"), 0.0), (s("v2"), 0.4), (s("v3"), 0.6)]
    );
}

#[test]
fn weights_all_zero_send_nothing_and_say_so() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [reviews]\n  http:\n    - route:\n        - destination: {host: reviews, subset: v1}\n        - destination: {host: reviews, subset: v2}\n",
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert!(e.destinations.iter().all(|d| d.weight == 0.0));
    assert!(e.reason.unwrap().contains("weight 0"));
}

#[test]
fn undefined_subset_is_not_redistributed() {
    // v9 is not defined: its 50 % fail (503) instead of moving to v1.
    let m = mesh(&format!(
        "{}---\n{}",
        reviews_dr(),
        vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 50}\n        - {destination: {host: reviews, subset: v9}, weight: 50}\n"
        )
    ));
    let e = m.expect("default/client", "reviews", 9080);
    assert_eq!(e.destinations[1].weight, 0.5);
    assert!(e.destinations[1].endpoints.is_empty());
    assert!(e.destinations[1].note.as_deref().unwrap().contains("503"));
}

#[test]
fn no_virtual_service_means_the_whole_host() {
    let m = mesh("");
    let e = m.expect("default/client", "reviews", 9080);
    assert_eq!(e.virtual_service, None);
    assert_eq!(e.route, None);
    assert_eq!(e.destinations.len(), 1);
    assert_eq!(e.destinations[0].weight, 1.0);
    assert_eq!(e.destinations[0].endpoints.len(), 3);
}

#[test]
fn destination_port_overrides_the_dialled_port() {
    let m = mesh(&vs(
        "default",
        "v",
        "  hosts: [db]\n  tcp:\n    - route: [{destination: {host: secure, port: {number: 7000}}}]\n",
    ));
    let e = m.expect("default/client", "db", 5432);
    assert_eq!(e.destinations[0].host, "secure.default.svc.cluster.local");
    assert_eq!(e.destinations[0].port, 7000);
}

#[test]
fn client_host_short_names_follow_the_client_dns_search_path() {
    let m = mesh("");
    assert_eq!(
        m.expect("default/client", "reviews", 9080).host,
        "reviews.default.svc.cluster.local"
    );
    assert_eq!(
        m.expect("default/client", "ratings.prod", 9080).host,
        "ratings.prod.svc.cluster.local"
    );
    assert_eq!(
        m.expect("other/client", "reviews.default.svc", 9080).host,
        "reviews.default.svc.cluster.local"
    );
}
