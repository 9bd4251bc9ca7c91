//! The traffic policy of a client cluster beyond TLS: rules TP-1 to TP-6 of
//! `docs/istio-semantics.md` (the DR-7 merge applied to loadBalancer,
//! connectionPool and outlierDetection, and Istio's defaults), and the TLS
//! a proxy originates toward a ServiceEntry host.

use std::time::Duration;

use crate::support::policy::*;
use meshdrift::observation::conduct::{Balance, DeclaredTraffic};

/// All traffic to subset v1 of reviews, whose rule and subset carry these policies.
fn v1_traffic(rule_policy: &str, subset_policy: &str) -> DeclaredTraffic {
    let route = vs(
        "default",
        "reviews",
        "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    let rule = dr(
        "default",
        "reviews",
        &format!(
            "  host: reviews\n  trafficPolicy: {rule_policy}\n  subsets:\n    - name: v1\n      labels: {{version: v1}}\n      trafficPolicy: {subset_policy}\n"
        ),
    );
    let m = mesh(&format!("{route}---\n{rule}"));
    let e = m.expect("default/client", "reviews", 9080);
    e.destinations[0].traffic.clone()
}

#[test]
fn tp1_unset_settings_are_istio_defaults() {
    let t = v1_traffic("{}", "{}");
    assert_eq!(t.load_balancer, Balance::LeastRequest { default: true });
    assert_eq!(
        (
            t.max_connections,
            t.max_requests_per_connection,
            t.idle_timeout
        ),
        (None, None, None)
    );
    assert!(t.outlier_detection.is_none() && t.tls_origination.is_none());
    assert_eq!(t.endpoints, ["default/reviews-v1"]);
}

#[test]
fn tp2_the_dr7_merge_applies_to_every_setting() {
    // (why, rule policy, subset policy, load balancing, maxConnections)
    let table = [
        (
            "a subset's loadBalancer replaces the rule's, its connectionPool stays",
            "{loadBalancer: {simple: RANDOM}, connectionPool: {tcp: {maxConnections: 7}}}",
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            Balance::RoundRobin,
            Some(7),
        ),
        (
            "a subset without a policy keeps the rule's",
            "{loadBalancer: {consistentHash: {useSourceIp: true}}}",
            "{}",
            Balance::HashSourceIp,
            None,
        ),
        (
            "the rule's port-level entry replaces the rule's policy whole: its loadBalancer falls back to the default",
            "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 9080}, connectionPool: {tcp: {maxConnections: 3}}}]}",
            "{}",
            Balance::LeastRequest { default: true },
            Some(3),
        ),
        (
            "the subset's port-level entry replaces everything, the rule's fields included",
            "{connectionPool: {tcp: {maxConnections: 7}}}",
            "{portLevelSettings: [{port: {number: 9080}, loadBalancer: {simple: ROUND_ROBIN}}]}",
            Balance::RoundRobin,
            None,
        ),
        (
            "a port-level entry for another port changes nothing",
            "{loadBalancer: {simple: RANDOM}, portLevelSettings: [{port: {number: 1}, loadBalancer: {simple: ROUND_ROBIN}}]}",
            "{}",
            Balance::Random,
            None,
        ),
        (
            "consistentHash wins over simple; a header hash needs L7",
            "{loadBalancer: {simple: ROUND_ROBIN, consistentHash: {httpHeaderName: x-user}}}",
            "{}",
            Balance::HashL7 {
                key: "httpHeaderName",
            },
            None,
        ),
        (
            "maxConnections 0 is unlimited",
            "{connectionPool: {tcp: {maxConnections: 0}}}",
            "{}",
            Balance::LeastRequest { default: true },
            None,
        ),
    ];
    for (why, rule, subset, balance, max_connections) in table {
        let t = v1_traffic(rule, subset);
        assert_eq!(t.load_balancer, balance, "{why}");
        assert_eq!(t.max_connections, max_connections, "{why}");
    }
}

#[test]
fn tp3_http_clusters_take_the_http_idle_timeout_and_request_limit() {
    let t = v1_traffic(
        "{connectionPool: {tcp: {idleTimeout: 1h}, http: {idleTimeout: 2s, maxRequestsPerConnection: 10}}}",
        "{}",
    );
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(2)));
    assert_eq!(t.max_requests_per_connection, Some(10));
    let source = t
        .defined_at
        .iter()
        .find(|(field, _)| field == "connectionPool")
        .map(|(_, at)| at.as_str());
    assert_eq!(
        source,
        Some("DestinationRule default/reviews, trafficPolicy")
    );
}

#[test]
fn tp4_tcp_clusters_take_the_tcp_idle_timeout() {
    let route = vs(
        "default",
        "db",
        "  hosts: [db]\n  tcp:\n    - route: [{destination: {host: db}}]\n",
    );
    let rule = dr(
        "default",
        "db",
        "  host: db\n  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 30s}, http: {idleTimeout: 2s}}}\n",
    );
    let m = mesh(&format!("{route}---\n{rule}"));
    let t = &m.expect("default/client", "db", 5432).destinations[0].traffic;
    assert_eq!(t.idle_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn tp5_connection_failures_eject_at_the_lower_enabled_limit() {
    // (why, outlierDetection, limit, from)
    let table = [
        (
            "unset: Envoy's five",
            "{}",
            Some(5),
            "consecutive5xxErrors (Envoy's default)",
        ),
        (
            "5xx errors",
            "{consecutive5xxErrors: 3}",
            Some(3),
            "consecutive5xxErrors",
        ),
        (
            "gateway errors below the 5xx default",
            "{consecutiveGatewayErrors: 2}",
            Some(2),
            "consecutiveGatewayErrors",
        ),
        (
            "5xx disabled, gateway errors on",
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 4}",
            Some(4),
            "consecutiveGatewayErrors",
        ),
        (
            "both disabled",
            "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 0}",
            None,
            "every counting field is 0",
        ),
        (
            "split local-origin errors count on their own",
            "{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2, consecutive5xxErrors: 9}",
            Some(2),
            "consecutiveLocalOriginFailures",
        ),
    ];
    for (why, outlier, limit, from) in table {
        let t = v1_traffic(&format!("{{outlierDetection: {outlier}}}"), "{}");
        let ejection = t.outlier_detection.expect("declared");
        assert_eq!(ejection.consecutive_errors, limit, "{why}");
        assert_eq!(ejection.limit_from, from, "{why}");
    }
    let t = v1_traffic(
        "{outlierDetection: {baseEjectionTime: 1m, maxEjectionPercent: 50, minHealthPercent: 20}}",
        "{}",
    );
    let ejection = t.outlier_detection.expect("declared");
    assert_eq!(ejection.base_ejection_time, Duration::from_secs(60));
    assert_eq!(
        (ejection.max_ejection_percent, ejection.min_health_percent),
        (50, 20)
    );
    let defaults = v1_traffic("{outlierDetection: {}}", "{}")
        .outlier_detection
        .expect("declared");
    assert_eq!(defaults.base_ejection_time, Duration::from_secs(30));
    assert_eq!(defaults.max_ejection_percent, 10);
}

#[test]
fn tp6_originated_tls_presents_the_declared_sni_or_the_host() {
    let entry = se(
        "default",
        "api",
        "  hosts: [api.external.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{number: 443, name: tls, protocol: TLS}]\n  endpoints: [{address: 203.0.113.7}]\n",
    );
    let rule = |tls: &str| {
        dr(
            "default",
            "api",
            &format!("  host: api.external.test\n  trafficPolicy: {{tls: {tls}}}\n"),
        )
    };
    let m = mesh(&format!(
        "{entry}---\n{}",
        rule("{mode: SIMPLE, sni: api.internal.test}")
    ));
    let d = &m
        .expect("default/client", "api.external.test", 443)
        .destinations[0];
    let origination = d.traffic.tls_origination.as_ref().expect("SIMPLE");
    assert_eq!(
        (
            origination.mode,
            origination.sni.as_str(),
            origination.sni_declared
        ),
        ("SIMPLE", "api.internal.test", true)
    );
    assert_eq!(d.traffic.endpoints, ["203.0.113.7"]);

    let m = mesh(&format!("{entry}---\n{}", rule("{mode: MUTUAL}")));
    let d = &m
        .expect("default/client", "api.external.test", 443)
        .destinations[0];
    let origination = d.traffic.tls_origination.as_ref().expect("MUTUAL");
    assert_eq!(
        (origination.sni.as_str(), origination.sni_declared),
        ("api.external.test", false)
    );

    for other in ["{mode: ISTIO_MUTUAL}", "{mode: DISABLE}"] {
        let m = mesh(&format!("{entry}---\n{}", rule(other)));
        let d = &m
            .expect("default/client", "api.external.test", 443)
            .destinations[0];
        assert!(d.traffic.tls_origination.is_none(), "{other}");
    }
}

#[test]
fn a_bad_duration_is_an_error_that_names_the_object() {
    let outcome = load(&dr(
        "default",
        "reviews",
        "  host: reviews\n  trafficPolicy: {connectionPool: {http: {idleTimeout: soon}}}\n",
    ));
    let problems: Vec<String> = outcome.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.iter().any(|p| p.contains("DestinationRule")
            && p.contains("reviews")
            && p.contains("\"soon\" is not a duration")),
        "{problems:#?}"
    );
}
