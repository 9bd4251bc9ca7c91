//! How a subset's `trafficPolicy` combines with its DestinationRule's: rule
//! DR-7 of `docs/istio-semantics.md` (field-by-field merge, port-level entries
//! replacing their own level wholesale).

use crate::support::policy::*;
use meshdrift::observation::ExpectedTransport::{self, Mtls, Plaintext, Tls};
use meshdrift::policy::ExpectedTls::{self, Auto, Disable, IstioMutual, Simple};

/// All traffic to subset v3, whose only pod (reviews-v3) has no sidecar.
fn to_v3() -> String {
    vs(
        "default",
        "reviews",
        "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: v3}}]\n",
    )
}

/// The cluster's TLS mode for subset v3 and what reviews-v3 receives.
fn v3_tls(rule_policy: &str, subset_policy: &str) -> (ExpectedTls, ExpectedTransport) {
    let rule = dr(
        "default",
        "reviews",
        &format!(
            "  host: reviews\n  trafficPolicy: {rule_policy}\n  subsets:\n    - name: v3\n      labels: {{version: v3}}\n      trafficPolicy: {subset_policy}\n"
        ),
    );
    let m = mesh(&format!("{}---\n{rule}", to_v3()));
    let e = m.expect("default/client", "reviews", 9080);
    let d = &e.destinations[0];
    assert_eq!(d.subset, s("v3"));
    let endpoints = endpoint_transports(d);
    let [(pod, _, transport)] = endpoints.as_slice() else {
        panic!("one endpoint expected: {d:#?}");
    };
    assert_eq!(pod, "reviews-v3");
    (d.tls.mode, *transport)
}

#[test]
fn dr7_subset_policy_merges_field_by_field_over_the_rule() {
    const ISTIO: &str = "{tls: {mode: ISTIO_MUTUAL}}";
    const LB_9080: &str = "[{port: {number: 9080}, loadBalancer: {simple: LEAST_REQUEST}}]";
    // (why, rule policy, subset policy, cluster TLS, what the pod receives)
    let table = [
        (
            "a subset with only a loadBalancer keeps the rule's tls, even toward a pod without a sidecar",
            ISTIO,
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            IstioMutual,
            Mtls,
        ),
        (
            "connectionPool and outlierDetection leave tls alone",
            ISTIO,
            "{connectionPool: {tcp: {maxConnections: 10}}, outlierDetection: {consecutive5xxErrors: 3}}",
            IstioMutual,
            Mtls,
        ),
        (
            "a subset tls replaces the rule's",
            ISTIO,
            "{tls: {mode: DISABLE}}",
            Disable,
            Plaintext,
        ),
        (
            "an empty subset policy changes nothing",
            "{tls: {mode: SIMPLE}}",
            "{}",
            Simple,
            Tls,
        ),
        (
            "the rule's port-level tls is the base the subset merges over",
            "{portLevelSettings: [{port: {number: 9080}, tls: {mode: ISTIO_MUTUAL}}]}",
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            IstioMutual,
            Mtls,
        ),
        (
            "the rule's port-level entry replaces its level wholesale: no tls left",
            &format!("{{tls: {{mode: ISTIO_MUTUAL}}, portLevelSettings: {LB_9080}}}"),
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            Auto,
            // Auto mTLS labels the endpoints from the rule's own tls, but
            // only those whose pod has a sidecar (MTLS-3): reviews-v3 has none.
            Plaintext,
        ),
        (
            "the subset's port-level entry without tls drops the rule's ISTIO_MUTUAL: auto mTLS, plaintext to a pod without a sidecar",
            ISTIO,
            &format!("{{portLevelSettings: {LB_9080}}}"),
            Auto,
            Plaintext,
        ),
        (
            "the subset's port-level entry replaces everything: no tls left",
            ISTIO,
            &format!("{{tls: {{mode: SIMPLE}}, portLevelSettings: {LB_9080}}}"),
            Auto,
            // The endpoint check skips the entry without tls: SIMPLE decides, not mTLS.
            Plaintext,
        ),
        (
            "a subset port-level entry for another port does not apply",
            ISTIO,
            "{portLevelSettings: [{port: {number: 9999}, tls: {mode: DISABLE}}]}",
            IstioMutual,
            Mtls,
        ),
    ];
    for (why, rule_policy, subset_policy, cluster, wire) in table {
        assert_eq!(v3_tls(rule_policy, subset_policy), (cluster, wire), "{why}");
    }
}
