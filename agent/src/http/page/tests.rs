use std::collections::BTreeMap;

use super::*;
use crate::observation::{ExpectedTransport, Unit, Workload};
use crate::report::SubsetShare;

fn workload(name: &str) -> Workload {
    Workload {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn report() -> Report {
    Report {
        generated_at: "2026-11-24T06:00:00Z".into(),
        node: "node-a".into(),
        window_seconds: 600,
        splits: vec![SplitVerdict {
            source: workload("loadgen"),
            host: "frontend.default.svc.cluster.local".into(),
            port: 80,
            unit: Unit::Request,
            samples: 1000,
            estimated: false,
            p_value: Some(1e-40),
            drift: true,
            reason: "v2 gets 20.0% of requests, declared 50.0%".into(),
            subsets: vec![
                SubsetShare {
                    subset: Some("v1".into()),
                    declared: 0.5,
                    observed: 0.8,
                    count: 800,
                    ci_low: 0.77,
                    ci_high: 0.83,
                },
                SubsetShare {
                    subset: Some("v2".into()),
                    declared: 0.5,
                    observed: 0.2,
                    count: 200,
                    ci_low: 0.17,
                    ci_high: 0.23,
                },
            ],
            evidence: None,
        }],
        transport: vec![TransportVerdict {
            source: workload("curl"),
            host: "frontend.default.svc.cluster.local".into(),
            subset: Some("v2".into()),
            expected: Some(ExpectedTransport::Mtls),
            observed: BTreeMap::from([("http".to_owned(), 12), ("istio_mtls".to_owned(), 3)]),
            violation: true,
            mismatch: false,
            violations: 12,
            mismatches: 0,
        }],
        unexpected: vec![],
        bypass: vec![],
        ambient: vec![],
        policies: vec![],
        findings: vec![],
        agent: AgentHealth::default(),
        pods: Vec::new(),
        nodes: Vec::new(),
    }
}

#[test]
fn drifting_split_shows_badge_reason_and_shares() {
    let html = render(&report());
    assert!(
        html.contains(r#"<span class="badge drift">DRIFT</span>"#),
        "{html}"
    );
    assert!(html.contains("v2 gets 20.0% of requests, declared 50.0%"));
    assert!(html.contains("80.0%") && html.contains("20.0%") && html.contains("50.0%"));
    assert!(html.contains("+30.0 pp") && html.contains("-30.0 pp"));
    assert!(html.contains("1.0e-40"), "p-value");
    assert!(
        html.contains(r#"<tr class="off"><td class="subset">v1</td>"#),
        "v1 is off its weight"
    );
}

#[test]
fn plaintext_under_mtls_is_highlighted_as_a_violation() {
    let html = render(&report());
    assert!(
        html.contains(r#"<td class="num cell-violation">12</td>"#),
        "{html}"
    );
    assert!(html.contains(r#"<td class="num cell-ok">3</td>"#), "{html}");
    assert!(html.contains("VIOLATION"));
}

#[test]
fn untested_and_passing_splits_are_labelled_differently() {
    let mut r = report();
    r.splits[0].drift = false;
    assert!(render(&r).contains(r#"<span class="badge ok">OK</span>"#));
    r.splits[0].p_value = None;
    assert!(render(&r).contains(r#"<span class="badge untested">NOT TESTED</span>"#));
}

#[test]
fn names_from_user_yaml_are_escaped_everywhere() {
    let evil = "<img src=x onerror=alert(1)>";
    let mut r = report();
    r.node = evil.into();
    r.splits[0].host = evil.into();
    r.splits[0].reason = evil.into();
    r.splits[0].subsets[0].subset = Some(evil.into());
    r.transport[0].source.name = evil.into();
    r.findings.push(Finding {
        code: evil.into(),
        severity: Severity::Error,
        resource: evil.into(),
        message: evil.into(),
    });
    r.unexpected.push(UnexpectedDestination {
        source: workload(evil),
        host: evil.into(),
        port: 80,
        destination: evil.into(),
        reason: evil.into(),
        connections: 1,
        requests: 0,
    });
    r.agent.inventory.insert(evil.into(), 1);
    let html = render(&r);
    assert!(!html.contains("<img"), "unescaped markup in page");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
}

#[test]
fn page_is_self_contained() {
    let html = render(&report());
    for external in ["<script", "<link", "src=\"http", "@import", "url("] {
        assert!(!html.contains(external), "page references {external}");
    }
}

#[test]
fn empty_report_explains_each_empty_section() {
    let mut r = report();
    r.splits.clear();
    r.transport.clear();
    let html = render(&r);
    assert!(html.contains("No split observed in this window yet."));
    assert!(html.contains("No connection with a known expectation in this window."));
    assert!(html.contains("Every observed flow reached a destination its routes declare."));
    assert!(html.contains("Every connection into the mesh passed through a sidecar."));
    assert!(html.contains("No finding on the mesh configuration."));
}

#[test]
fn ambient_rows_are_shown_apart_from_bypass_and_not_judged() {
    assert!(!render(&report()).contains("Ambient mode"));
    let mut r = report();
    r.ambient.push(crate::report::AmbientRow {
        source: workload("batch"),
        destination: crate::report::ServiceDestination {
            host: "frontend.default.svc.cluster.local".into(),
            port: 80,
            subset: Some("v1".into()),
        },
        transport: "http".into(),
        connections: 2,
        requests: 41,
    });
    let html = render(&r);
    assert!(html.contains("0</span>bypassing the mesh"), "summary tile");
    for expected in [
        "Ambient mode <span class=\"count\">(1)</span>",
        "default/batch",
        "<span class=\"badge info\">AMBIENT</span>",
        "<td class=\"num\">2</td><td class=\"num\">41</td>",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
}

#[test]
fn bypass_rows_show_source_destination_reason_and_counts() {
    let mut r = report();
    r.bypass.push(crate::report::BypassRow {
        source: workload("legacy"),
        destination: crate::report::ServiceDestination {
            host: "frontend.default.svc.cluster.local".into(),
            port: 80,
            subset: Some("v2".into()),
        },
        reason: crate::observation::BypassReason::NoSidecar,
        transport: "http".into(),
        connections: 12,
        requests: 30,
    });
    let html = render(&r);
    assert!(html.contains("1</span>bypassing the mesh"), "summary tile");
    for expected in [
        "default/legacy",
        "frontend.default.svc.cluster.local:80",
        "<td>v2</td>",
        "BYPASS</span> no sidecar",
        "<td class=\"num\">12</td><td class=\"num\">30</td>",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
}

#[test]
fn traffic_policies_list_violations_first_and_escape_their_words() {
    use crate::report::{PolicyCheck, PolicyOutcome, PolicyVerdict};
    let mut r = report();
    let row = |check, verdict, observed: &str| PolicyVerdict {
        source: workload("client"),
        host: "backend.default.svc.cluster.local".into(),
        port: 80,
        subset: Some("v1".into()),
        check,
        declared: "ROUND_ROBIN over 2 endpoints".into(),
        observed: observed.into(),
        verdict,
        reason: "uneven".into(),
        samples: 400,
    };
    r.policies = vec![
        row(PolicyCheck::LoadBalancer, PolicyOutcome::Ok, "even"),
        row(
            PolicyCheck::MaxConnections,
            PolicyOutcome::Violation,
            "<b>16</b> open",
        ),
    ];
    let html = render(&r);
    assert!(html.contains("Traffic policies <span class=\"count\">(2)</span>"));
    assert!(
        html.contains("1 <small>of 2</small></span>traffic-policy violations"),
        "summary tile"
    );
    let violation = html
        .find("<code>max_connections</code>")
        .expect("violation row");
    let ok = html.find("<code>load_balancer</code>").expect("ok row");
    assert!(violation < ok, "violations come first");
    assert!(html.contains("<span class=\"badge violation\">VIOLATION</span>"));
    assert!(
        html.contains("&lt;b&gt;16&lt;/b&gt; open"),
        "observed words are escaped"
    );
    r.policies.clear();
    assert!(render(&r).contains("No client proxy connection to a DestinationRule"));
}

#[test]
fn client_pods_name_the_drifting_pod_first() {
    let mut r = report();
    let stale = r.splits[0].clone();
    let mut healthy = stale.clone();
    healthy.drift = false;
    r.pods = vec![
        crate::report::PodSplitVerdict {
            pod: "default/loadgen-a".into(),
            split: healthy,
        },
        crate::report::PodSplitVerdict {
            pod: "default/loadgen-b".into(),
            split: stale,
        },
    ];
    let html = render(&r);
    assert!(
        html.contains("Client pods <span class=\"count\">(2 judged, 1 drifting)"),
        "{html}"
    );
    let b = html.find("default/loadgen-b").expect("the drifting pod");
    let a = html.find("default/loadgen-a").expect("the healthy pod");
    assert!(b < a, "{html}");
    assert!(
        html[..b].ends_with("<tr class=\"row-violation\"><td>"),
        "{html}"
    );
}
