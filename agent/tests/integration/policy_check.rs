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

fn reviews_dr() -> String {
    dr(
        "default",
        "reviews",
        &format!("  host: reviews\n{REVIEWS_SUBSETS}"),
    )
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
