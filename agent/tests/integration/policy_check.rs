//! `check` findings: one case per code, plus clean configurations that must stay quiet.

use crate::support::policy::*;
use meshdrift::findings::{Finding, Severity};
use meshdrift::policy::check;

fn findings(extra: &str) -> Vec<Finding> {
    let m = mesh(extra);
    check(&m.index, &m.policies)
}

fn codes(extra: &str) -> Vec<String> {
    findings(extra).into_iter().map(|f| f.code).collect()
}

fn has(extra: &str, code: &str, severity: Severity) -> Finding {
    let all = findings(extra);
    all.iter()
        .find(|f| f.code == code)
        .cloned()
        .map(|f| {
            assert_eq!(f.severity, severity, "{f}");
            f
        })
        .unwrap_or_else(|| panic!("no {code} in {all:#?}"))
}

#[test]
fn clean_configuration_has_no_findings() {
    let extra = format!(
        "{}---\n{}",
        reviews_dr(),
        vs(
            "default",
            "reviews",
            "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 90}\n        - {destination: {host: reviews, subset: v2}, weight: 10}\n"
        )
    );
    assert_eq!(codes(&extra), Vec::<String>::new());
}

#[test]
fn ist0101_route_to_unknown_host() {
    let f = has(
        &vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: nosuch}}]\n",
        ),
        "IST0101",
        Severity::Error,
    );
    assert!(f.message.contains("nosuch.default.svc.cluster.local"));
    assert_eq!(f.resource, "VirtualService default/v");
}

#[test]
fn ist0101_route_to_undefined_subset() {
    let f = has(
        &format!(
            "{}---\n{}",
            reviews_dr(),
            vs(
                "default",
                "v",
                "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: v9}}]\n"
            )
        ),
        "IST0101",
        Severity::Error,
    );
    assert!(f.message.contains("subset v9"));
}

#[test]
fn ist0109_two_mesh_virtual_services_for_one_host() {
    let f = has(
        &format!(
            "{}---\n{}",
            vs(
                "default",
                "a",
                "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews}}]\n"
            ),
            vs(
                "default",
                "b",
                "  hosts: [reviews.default.svc.cluster.local]\n  http:\n    - route: [{destination: {host: reviews}}]\n"
            )
        ),
        "IST0109",
        Severity::Error,
    );
    assert_eq!(f.resource, "VirtualService default/b");
    assert!(f.message.contains("default/a"));
}

#[test]
fn ist0109_not_reported_for_gateway_only_virtual_services() {
    let c = codes(&format!(
        "{}---\n{}",
        vs(
            "default",
            "a",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews}}]\n"
        ),
        vs(
            "default",
            "b",
            "  hosts: [reviews]\n  gateways: [ingress]\n  http:\n    - route: [{destination: {host: reviews}}]\n"
        )
    ));
    assert!(!c.contains(&"IST0109".to_owned()), "{c:?}");
}

#[test]
fn ist0130_route_after_catch_all() {
    let f = has(
        &vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews}}]\n    - match: [{uri: {prefix: /x}}]\n      route: [{destination: {host: reviews}}]\n",
        ),
        "IST0130",
        Severity::Warning,
    );
    assert!(f.message.contains("http route #1"));
}

#[test]
fn ist0173_subset_selects_no_pods() {
    let f = has(
        &dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - {name: v9, labels: {version: v9}}\n",
        ),
        "IST0173",
        Severity::Warning,
    );
    assert!(f.message.contains("v9"));
}

#[test]
fn ist0174_destination_rule_host_matches_no_service() {
    has(
        &dr("default", "r", "  host: nosuch\n"),
        "IST0174",
        Severity::Warning,
    );
}

#[test]
fn kia0203_subset_labels_match_no_workload() {
    has(
        &dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - {name: v9, labels: {version: v9}}\n",
        ),
        "KIA0203",
        Severity::Warning,
    );
}

#[test]
fn kia0207_destination_rule_disables_tls_under_namespace_strict() {
    has(
        &format!(
            "{}---\n{}",
            pa("default", "default", "  mtls: {mode: STRICT}\n"),
            dr(
                "default",
                "r",
                "  host: reviews\n  trafficPolicy: {tls: {mode: DISABLE}}\n"
            )
        ),
        "KIA0207",
        Severity::Error,
    );
}

#[test]
fn kia0208_destination_rule_disables_tls_under_mesh_strict() {
    has(
        &format!(
            "{}---\n{}",
            pa("istio-system", "default", "  mtls: {mode: STRICT}\n"),
            dr(
                "istio-system",
                "all",
                "  host: '*.local'\n  trafficPolicy:\n    tls: {}\n"
            )
        ),
        "KIA0208",
        Severity::Error,
    );
}

#[test]
fn kia0209_subset_without_labels() {
    has(
        &dr(
            "default",
            "r",
            "  host: reviews\n  subsets:\n    - {name: all}\n",
        ),
        "KIA0209",
        Severity::Warning,
    );
}

#[test]
fn kia1104_single_destination_weight_below_100() {
    has(
        &vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews}, weight: 60}]\n",
        ),
        "KIA1104",
        Severity::Warning,
    );
}

#[test]
fn kia1105_host_and_subset_repeated_in_one_route() {
    has(
        &format!(
            "{}---\n{}",
            reviews_dr(),
            vs(
                "default",
                "v",
                "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 50}\n        - {destination: {host: reviews.default.svc.cluster.local, subset: v1}, weight: 50}\n"
            )
        ),
        "KIA1105",
        Severity::Warning,
    );
}

#[test]
fn md0101_all_weights_zero() {
    has(
        &format!(
            "{}---\n{}",
            reviews_dr(),
            vs(
                "default",
                "v",
                "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 0}\n        - {destination: {host: reviews, subset: v2}}\n"
            )
        ),
        "MD0101",
        Severity::Error,
    );
}

#[test]
fn md0102_referenced_subset_selects_pods_of_another_service() {
    // `app: db` pods exist in the namespace but are not endpoints of reviews.
    let f = has(
        &format!(
            "{}---\n{}",
            dr(
                "default",
                "r",
                "  host: reviews\n  subsets:\n    - {name: wrong, labels: {app: db}}\n"
            ),
            vs(
                "default",
                "v",
                "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: wrong}}]\n"
            )
        ),
        "MD0102",
        Severity::Error,
    );
    assert!(f.message.contains("db-0"));
}

#[test]
fn findings_are_sorted_errors_first() {
    let all = findings(&format!(
        "{}---\n{}",
        dr("default", "r", "  host: nosuch\n"),
        vs(
            "default",
            "v",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: nosuch}}]\n"
        )
    ));
    assert_eq!(all[0].severity, Severity::Error);
    assert_eq!(all.last().unwrap().severity, Severity::Warning);
}

/// CHK-1: weights outside Istio's int32 ≥ 0 are rejected by Istio.
#[test]
fn chk1_weights_istio_rejects_are_errors() {
    // (weights, how many IST0106 findings)
    let table: [(&[i64], usize); 6] = [
        (&[-5], 1),
        (&[50, -50], 1),
        (&[2_147_483_648, 1], 1),
        (&[-1, 4_000_000_000], 2),
        (&[2_147_483_647, 1], 0),
        (&[100], 0),
    ];
    for (weights, errors) in table {
        let subsets = ["v1", "v2", "v3"];
        let destinations: String = weights
            .iter()
            .zip(subsets)
            .map(|(w, subset)| {
                format!(
                    "        - {{destination: {{host: reviews, subset: {subset}}}, weight: {w}}}\n"
                )
            })
            .collect();
        let all = findings(&format!(
            "{}---\n{}",
            reviews_dr(),
            vs(
                "default",
                "v",
                &format!("  hosts: [reviews]\n  http:\n    - route:\n{destinations}")
            )
        ));
        let schema: Vec<&Finding> = all.iter().filter(|f| f.code == "IST0106").collect();
        assert_eq!(schema.len(), errors, "{weights:?}: {all:#?}");
        for f in &schema {
            assert_eq!(f.severity, Severity::Error, "{f}");
            assert!(f.message.contains("Istio rejects"), "{f}");
        }
        assert!(
            !all.iter().any(|f| f.code == "KIA1104"),
            "a rejected weight is not 'treated as 100': {all:#?}"
        );
    }
}

/// CHK-2: a ServiceEntry host is a valid destination where it is exported.
#[test]
fn chk2_service_entry_hosts_are_destinations() {
    let route = |host: &str| {
        vs(
            "default",
            "v",
            &format!(
                "  hosts: [reviews]\n  http:\n    - route: [{{destination: {{host: {host}}}}}]\n"
            ),
        )
    };
    const API: &str = "  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n";
    // (why, extra manifests, IST0101 expected)
    let table = [
        ("no ServiceEntry", route("api.example.com"), true),
        (
            "an exact host",
            format!(
                "{}---\n{}",
                se("default", "api", API),
                route("api.example.com")
            ),
            false,
        ),
        (
            "a ServiceEntry of another namespace, exported everywhere",
            format!(
                "{}---\n{}",
                se("other", "api", API),
                route("api.example.com")
            ),
            false,
        ),
        (
            "a wildcard host",
            format!(
                "{}---\n{}",
                se(
                    "default",
                    "wild",
                    "  hosts: ['*.example.com']\n  ports: [{number: 443, name: tls, protocol: TLS}]\n"
                ),
                route("api.example.com")
            ),
            false,
        ),
        (
            "exported to its own namespace only",
            format!(
                "{}---\n{}",
                se("other", "api", &format!("{API}  exportTo: ['.']\n")),
                route("api.example.com")
            ),
            true,
        ),
        (
            "exported to the VirtualService's namespace",
            format!(
                "{}---\n{}",
                se("other", "api", &format!("{API}  exportTo: [default]\n")),
                route("api.example.com")
            ),
            false,
        ),
        (
            "a static entry with addresses and endpoints",
            format!(
                "{}---\n{}",
                se(
                    "default",
                    "db",
                    "  hosts: [db.internal]\n  addresses: [192.0.2.10/32]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 5432, name: tcp-pg, protocol: TCP}]\n  endpoints: [{address: 192.0.2.11}, {address: 192.0.2.12, ports: {tcp-pg: 15432}}]\n"
                ),
                route("db.internal")
            ),
            false,
        ),
    ];
    for (why, extra, unknown) in table {
        let all = findings(&extra);
        let ist0101: Vec<&Finding> = all.iter().filter(|f| f.code == "IST0101").collect();
        assert_eq!(!ist0101.is_empty(), unknown, "{why}: {all:#?}");
        assert!(
            all.iter()
                .all(|f| f.severity != Severity::Error || f.code == "IST0101"),
            "{why}: {all:#?}"
        );
    }
}

#[test]
fn chk2_a_destination_rule_for_a_service_entry_host_matches_it() {
    let c = codes(&format!(
        "{}---\n{}",
        se(
            "default",
            "api",
            "  hosts: [api.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n"
        ),
        dr(
            "default",
            "api",
            "  host: api.example.com\n  trafficPolicy: {tls: {mode: SIMPLE}}\n"
        )
    ));
    assert!(!c.contains(&"IST0174".to_owned()), "{c:?}");
}
