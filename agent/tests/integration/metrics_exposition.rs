//! The metrics exposition: names, labels and stale-series removal (promtool's
//! check of it is in the end-to-end package).

use meshdrift::export::Metrics;
use meshdrift_testkit::{drift_report, populated_metrics};

#[test]
fn openmetrics_exposition_names_every_family_and_ends_with_eof() {
    let om = populated_metrics().encode();
    assert!(om.ends_with("# EOF\n"), "{om}");
    for family in [
        "# TYPE meshdrift_requests counter",
        "# TYPE meshdrift_connections counter",
        "# TYPE meshdrift_bytes counter",
        "# TYPE meshdrift_unexpected_destination counter",
        "# TYPE meshdrift_tls_violations counter",
        "# TYPE meshdrift_tls_mismatches counter",
        "# TYPE meshdrift_declared_weight_ratio gauge",
        "# TYPE meshdrift_observed_ratio gauge",
        "# TYPE meshdrift_split_drift_ratio gauge",
        "# TYPE meshdrift_split_p_value gauge",
        "# TYPE meshdrift_split_drift_detected gauge",
        "# TYPE meshdrift_split_samples gauge",
        "# TYPE meshdrift_config_findings gauge",
        "# TYPE meshdrift_lost_events counter",
        "# TYPE meshdrift_flows_tracked gauge",
        "# TYPE meshdrift_inventory_objects gauge",
        "# TYPE meshdrift_excluded_flows counter",
        "# TYPE meshdrift_build_info gauge",
    ] {
        assert!(om.contains(family), "missing {family:?} in\n{om}");
    }
}

#[test]
fn observations_count_by_workload_subset_and_transport() {
    let om = populated_metrics().encode();
    let v1 = r#"meshdrift_requests_total{source_namespace="default",source_workload="loadgen",destination_host="frontend.default.svc.cluster.local",destination_port="80",destination_subset="v1",transport="istio_mtls"} 10"#;
    assert!(om.contains(v1), "{om}");
    let stray = r#"meshdrift_unexpected_destination_total{source_namespace="default",source_workload="loadgen",destination_host="frontend.default.svc.cluster.local",destination_port="80"} 1"#;
    assert!(om.contains(stray), "{om}");
    // Never the pod: cardinality stays bounded by workloads.
    assert!(
        !om.contains("frontend-v3-7d9f"),
        "pod name leaked into a label:\n{om}"
    );
}

#[test]
fn plaintext_under_mtls_is_a_violation_and_tls_under_disable_a_mismatch() {
    let om = populated_metrics().encode();
    let violation = r#"meshdrift_tls_violations_total{source_namespace="default",source_workload="curl",destination_host="frontend.default.svc.cluster.local",destination_subset="v2",expected="mtls",observed="http"} 1"#;
    assert!(om.contains(violation), "{om}");
    let mismatch = r#"meshdrift_tls_mismatches_total{source_namespace="default",source_workload="legacy",destination_host="frontend.default.svc.cluster.local",destination_subset="",expected="plaintext",observed="tls"} 1"#;
    assert!(om.contains(mismatch), "{om}");
    assert!(!om.contains(r#"source_workload="loadgen",destination_host="frontend.default.svc.cluster.local",destination_subset="v1",expected="mtls""#));
}

#[test]
fn report_gauges_carry_the_verdict() {
    let om = populated_metrics().encode();
    let split = r#"source_namespace="default",source_workload="loadgen",destination_host="frontend.default.svc.cluster.local",destination_port="80""#;
    for expected in [
        format!("meshdrift_split_drift_detected{{{split}}} 1.0"),
        format!("meshdrift_split_samples{{{split}}} 4000.0"),
        format!("meshdrift_declared_weight_ratio{{{split},destination_subset=\"v2\"}} 0.5"),
        format!("meshdrift_observed_ratio{{{split},destination_subset=\"v2\"}} 0.2"),
        format!("meshdrift_split_drift_ratio{{{split},destination_subset=\"v2\"}} -0.3"),
        r#"meshdrift_config_findings{code="IST0101",severity="warning"} 1.0"#.to_owned(),
        r#"meshdrift_lost_events_total{reason="ringbuf_full"} 0"#.to_owned(),
        r#"meshdrift_excluded_flows_total{reason="mesh_internal_port"} 17"#.to_owned(),
        r#"meshdrift_inventory_objects{kind="Pod"} 6.0"#.to_owned(),
        "meshdrift_flows_tracked 42.0".to_owned(),
        format!(
            "meshdrift_build_info{{version=\"{}\"}} 1.0",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(om.contains(&expected), "missing {expected:?} in\n{om}");
    }
}

#[test]
fn series_of_splits_that_leave_the_report_are_removed() {
    let metrics = populated_metrics();
    let mut report = drift_report();
    report.splits.retain(|s| s.source.name != "checkout");
    report.findings.clear();
    report.agent.inventory.remove("Service");
    report.agent.lost_events.insert("ringbuf_full".into(), 7);
    metrics.update(&report);
    let om = metrics.encode();
    assert!(!om.contains("checkout"), "stale split series linger:\n{om}");
    assert!(
        !om.contains("meshdrift_config_findings{"),
        "stale finding series linger:\n{om}"
    );
    assert!(
        !om.contains(r#"kind="Service""#),
        "stale inventory series linger:\n{om}"
    );
    assert!(
        om.contains(r#"meshdrift_lost_events_total{reason="ringbuf_full"} 7"#),
        "{om}"
    );
    assert!(om.contains(r#"source_workload="loadgen",destination_host="frontend.default.svc.cluster.local",destination_port="80"} 1.0"#));
}

#[test]
fn untested_splits_have_no_p_value_series() {
    let metrics = Metrics::new();
    let mut report = drift_report();
    for split in &mut report.splits {
        split.p_value = None;
    }
    metrics.update(&report);
    let om = metrics.encode();
    assert!(!om.contains("meshdrift_split_p_value{"), "{om}");
    assert!(om.contains("meshdrift_split_samples{"), "{om}");
}

#[test]
fn help_texts_are_plain_single_lines() {
    // prometheus-client writes help verbatim; a quote, backslash or newline would
    // break the 0.0.4 conversion.
    for line in Metrics::new()
        .encode()
        .lines()
        .filter(|l| l.starts_with("# HELP "))
    {
        let help = line.splitn(4, ' ').nth(3).unwrap_or_default();
        assert!(
            help.len() > 20,
            "help too short to explain anything: {line}"
        );
        assert!(!help.contains(['"', '\\']), "{line}");
        assert!(help.ends_with('.') && !help.ends_with(".."), "{line}");
    }
}

#[test]
fn only_drifting_pods_have_pod_series_and_they_go_when_the_pod_recovers() {
    let metrics = Metrics::new();
    let mut report = drift_report();
    let loadgen = report.splits[0].clone();
    let mut healthy = loadgen.clone();
    healthy.drift = false;
    report.pods = vec![
        meshdrift::report::PodSplitVerdict {
            pod: "default/loadgen-a".into(),
            split: healthy,
        },
        meshdrift::report::PodSplitVerdict {
            pod: "default/loadgen-b".into(),
            split: loadgen,
        },
    ];
    metrics.update(&report);
    let om = metrics.encode();
    let pod = r#"source_namespace="default",source_workload="loadgen",source_pod="loadgen-b",destination_host="frontend.default.svc.cluster.local",destination_port="80""#;
    for expected in [
        format!("meshdrift_pod_split_drift_detected{{{pod}}} 1.0"),
        format!("meshdrift_pod_split_samples{{{pod}}} 4000.0"),
        format!("meshdrift_pod_observed_ratio{{{pod},destination_subset=\"v2\"}} 0.2"),
    ] {
        assert!(om.contains(&expected), "missing {expected:?} in\n{om}");
    }
    assert!(!om.contains("loadgen-a"), "a healthy pod has series:\n{om}");

    report.pods[1].split.drift = false;
    metrics.update(&report);
    let om = metrics.encode();
    assert!(
        !om.contains("source_pod="),
        "a recovered pod's series linger:\n{om}"
    );
}
