//! The agent's metrics and the shipped Prometheus rules, checked by promtool:
//! it accepts the exposition, it accepts and unit-tests the rules, the
//! Operator's PrometheusRule carries the same groups, and every metric the
//! rules use is one the agent exports.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use meshdrift::export::Metrics;
use meshdrift_testkit::{drift_report, observation, populated_metrics, promtool};
use serde_yaml_ng::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn run_promtool(args: &[&str]) -> String {
    let out = promtool()
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn rules() -> Vec<Value> {
    yaml("prometheus/rules.yaml")["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .collect()
}

fn alerts() -> Vec<Value> {
    rules()
        .into_iter()
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn promtool_check_rules_passes() {
    let out = run_promtool(&["check", "rules", "rules.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_pass() {
    let out = run_promtool(&["test", "rules", "rules_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let tests = yaml("prometheus/rules_test.yaml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    let names: BTreeSet<String> = alerts()
        .iter()
        .map(|a| a["alert"].as_str().expect("alert name").to_owned())
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        assert!(firing.contains(name), "no firing test for {name}");
        assert!(quiet.contains(name), "no not-firing test for {name}");
    }
    let recorded = tests["tests"]
        .as_sequence()
        .expect("tests")
        .iter()
        .any(|t| t.get("promql_expr_test").is_some());
    assert!(recorded, "no recording rule is tested");
}

#[test]
fn alerts_tell_the_operator_what_to_check() {
    for alert in alerts() {
        let name = alert["alert"].as_str().expect("name");
        let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
        let description = alert["annotations"]["description"]
            .as_str()
            .unwrap_or_default();
        assert!(!summary.is_empty(), "{name} has no summary");
        assert!(
            description.len() > 150,
            "{name}'s description is too thin to act on"
        );
        assert!(
            description.contains("{{ $labels."),
            "{name}'s description names no label"
        );
        assert!(
            alert["labels"]["severity"].as_str().is_some(),
            "{name} has no severity label"
        );
    }
}

#[test]
fn every_selector_uses_the_meshdrift_job() {
    for rule in rules() {
        let expr = rule["expr"].as_str().expect("expr");
        for (at, _) in expr
            .match_indices("meshdrift_")
            .chain(expr.match_indices("up{"))
        {
            let rest = &expr[at..];
            let selector_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let after = &rest[selector_end..];
            assert!(
                after.starts_with("{job=\"meshdrift\"}")
                    || rest.starts_with("up{job=\"meshdrift\"}"),
                "selector without job=\"meshdrift\" in {expr}"
            );
        }
    }
}

#[test]
fn operator_prometheus_rule_carries_the_same_groups() {
    let plain = yaml("prometheus/rules.yaml");
    let operator = yaml("prometheus-operator/prometheusrule.yaml");
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(
        plain["groups"], operator["spec"]["groups"],
        "deploy/prometheus-operator/prometheusrule.yaml and deploy/prometheus/rules.yaml disagree"
    );
}

#[test]
fn rules_only_use_metrics_the_agent_exports() {
    let metrics = Metrics::new();
    metrics.record(&observation(
        "loadgen",
        Some("v1"),
        meshdrift::wire::Transport::Http,
    ));
    let mut stray = observation("loadgen", None, meshdrift::wire::Transport::IstioMtls);
    stray.destination = meshdrift::observation::Destination::Unexpected {
        destination: "default/x".into(),
        reason: "test".into(),
    };
    metrics.record(&stray);
    let mut around = observation("legacy", Some("v2"), meshdrift::wire::Transport::Http);
    around.bypass = Some(meshdrift::observation::BypassReason::NoSidecar);
    metrics.record(&around);
    // A client pod drifting on its own, so its families have samples.
    let mut report = drift_report();
    let drifting = report
        .splits
        .iter()
        .find(|split| split.drift)
        .cloned()
        .expect("the fixture has a drifting split");
    report.pods = vec![meshdrift::report::PodSplitVerdict {
        pod: "default/loadgen-b".into(),
        split: drifting,
    }];
    metrics.update(&report);
    let exposition = metrics.encode_prometheus_text();
    let exported: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let text = std::fs::read_to_string(deploy("prometheus/rules.yaml")).expect("rules");
    let mut used = BTreeSet::new();
    for (at, _) in text.match_indices("meshdrift_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        used.insert(name);
    }
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(name.as_str()),
            "rules use {name}, which the agent does not export"
        );
    }
}

fn lint(exposition: &str) -> (bool, String) {
    let mut child = promtool()
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.trim().is_empty(), text)
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let text = populated_metrics().encode_prometheus_text();
    let (ok, problems) = lint(&text);
    assert!(
        ok,
        "promtool check metrics found problems:\n{problems}\n--- exposition ---\n{text}"
    );
}

#[test]
fn promtool_lints_what_it_is_given() {
    // Guards the test above against a promtool that accepts anything.
    let (ok, problems) = lint("# TYPE bad_metric counter\nbad_metric 1\n");
    assert!(
        !ok,
        "promtool accepted a counter without _total and help: {problems}"
    );
}
