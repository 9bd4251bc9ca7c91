//! End-to-end drift verdicts: the agent, installed from `deploy/kubernetes`
//! on the lab's real control plane and reading the API server, judging the
//! frontend example, with a real Prometheus evaluating the shipped alert
//! rules. Needs root.

use std::{path::PathBuf, time::Duration};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    browser, meshdrift_bin,
    prometheus::Prometheus,
    scenario::{Frontend, FrontendConfig, HOST, Inventory},
};
use serde_json::Value;

const DRIFT_ALERT: &str = "MeshdriftSplitDrift";
const VIOLATION_ALERT: &str = "MeshdriftMtlsViolation";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn frontend(
    proxy_weights: (u32, u32),
    declared: Option<(u32, u32)>,
    legacy_plaintext: bool,
    agent_args: &[&str],
) -> Frontend {
    Frontend::start(FrontendConfig {
        declared_weights: declared,
        legacy_plaintext,
        // The agent installed from deploy/kubernetes, reading the API server.
        inventory: Inventory::KUBERNETES,
        agent_args: agent_args.iter().map(|arg| (*arg).to_owned()).collect(),
        ..FrontendConfig::new(
            workspace().join("deploy/examples/frontend"),
            meshdrift_bin(),
            proxy_weights,
        )
    })
    .expect("starting the frontend scenario")
}

/// The shipped rules with `for:` shortened so the test does not wait minutes.
fn prometheus_for(frontend: &Frontend) -> Prometheus {
    let shipped = std::fs::read_to_string(workspace().join("deploy/prometheus/rules.yaml"))
        .expect("shipped rules");
    let shortened: String = shipped
        .lines()
        .map(|line| match line.split_once("for:") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 3s\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    let rules = frontend.lab.dir().join("rules.yaml");
    std::fs::write(&rules, shortened).expect("writing the rules copy");
    Prometheus::start(
        &frontend.lab.dir().join("prometheus"),
        frontend.agent_listen,
        &[rules],
    )
    .expect("starting Prometheus")
}

fn split<'a>(report: &'a Value, source: &str) -> Option<&'a Value> {
    report["splits"].as_array()?.iter().find(|split| {
        split["source"]["name"] == source && split["host"] == HOST && split["port"] == 80
    })
}

fn subset<'a>(split: &'a Value, name: &str) -> &'a Value {
    split["subsets"]
        .as_array()
        .and_then(|subsets| subsets.iter().find(|s| s["subset"] == name))
        .unwrap_or_else(|| panic!("subset {name} missing in {split}"))
}

fn tested(report: &Value, source: &str) -> bool {
    split(report, source).is_some_and(|split| split["p_value"].is_number())
}

fn flagged(report: &Value) -> Vec<String> {
    let mut flags = Vec::new();
    for (list, flag) in [
        ("splits", "drift"),
        ("transport", "violation"),
        ("transport", "mismatch"),
    ] {
        for item in report[list].as_array().into_iter().flatten() {
            if item[flag] == true {
                flags.push(format!("{list}.{flag}: {item}"));
            }
        }
    }
    for item in report["unexpected"].as_array().into_iter().flatten() {
        flags.push(format!("unexpected: {item}"));
    }
    for item in report["bypass"].as_array().into_iter().flatten() {
        flags.push(format!("bypass: {item}"));
    }
    flags
}

fn no_progress(_: usize, _: usize) {}

#[test]
fn stale_80_20_proxy_and_plaintext_client_are_flagged_and_alerts_fire() {
    let _slot = privileged();
    let frontend = frontend((80, 20), None, true, &[]);
    let prometheus = prometheus_for(&frontend);
    frontend.send(600, no_progress).expect("traffic");
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            split(report, "client").is_some_and(|s| s["drift"] == true)
                && report["transport"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|v| v["violation"] == true))
        })
        .expect("report");
    assert!(
        settled,
        "drift and violation not reported within 30 s: {report:#}"
    );

    let client = split(&report, "client").unwrap();
    assert_eq!(client["source"]["namespace"], "default");
    assert_eq!(client["unit"], "request");
    let v1 = subset(client, "v1");
    assert_eq!(v1["declared"], 0.5);
    let observed = v1["observed"].as_f64().unwrap();
    assert!(
        (0.75..=0.85).contains(&observed),
        "v1 observed share {observed}"
    );
    assert!(client["p_value"].as_f64().unwrap() < 0.001);

    // legacy (no sidecar) reaches both subsets through kube-proxy, in
    // plaintext, into sidecars whose PeerAuthentication is STRICT.
    let violations: Vec<&Value> = report["transport"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["violation"] == true)
        .collect();
    assert!(!violations.is_empty(), "{report:#}");
    for violation in &violations {
        assert_eq!(violation["source"]["name"], "legacy", "{violation}");
        assert_eq!(violation["host"], HOST);
        assert_eq!(violation["expected"], "mtls");
        assert!(violation["observed"]["http"].as_u64().unwrap() > 0);
    }
    // Its traffic is a bypass, never a split of its own.
    assert!(split(&report, "legacy").is_none(), "{report:#}");
    let bypass = report["bypass"].as_array().unwrap();
    assert!(
        bypass
            .iter()
            .any(|row| row["source"]["name"] == "legacy" && row["reason"] == "no_sidecar"),
        "{bypass:#?}"
    );
    // The client's own mTLS connections are not violations.
    assert!(
        report["transport"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["source"]["name"] == "client")
            .all(|v| v["violation"] == false)
    );

    // The report page, rendered by a real browser, shows the demo's drift and violation.
    let page = format!("{}/", frontend.agent_url);
    let dom = browser::render_dom(&page).expect("rendering the report page");
    for expected in [
        "DRIFT",
        "default/client",
        "frontend.default.svc.cluster.local:80",
        "VIOLATION",
        "default/legacy",
        "BYPASS",
        "no sidecar",
    ] {
        assert!(dom.contains(expected), "the report page lacks {expected:?}");
    }
    let shot = workspace().join("target/test-artifacts/demo-drift-page.png");
    browser::screenshot(&page, &shot).expect("screenshot of the report page");
    eprintln!("report page screenshot: {}", shot.display());

    let drift_alert = prometheus
        .wait_for_firing(DRIFT_ALERT, Duration::from_secs(60))
        .expect("Prometheus API");
    let drift_alert = drift_alert
        .unwrap_or_else(|| panic!("{DRIFT_ALERT} did not fire: {:?}", prometheus.alerts()));
    assert_eq!(
        drift_alert.labels["destination_host"], HOST,
        "{:?}",
        drift_alert.labels
    );
    // One cluster verdict for the workload, not one per agent.
    assert!(
        drift_alert.labels.get("instance").is_none() && drift_alert.labels.get("node").is_none(),
        "{:?}",
        drift_alert.labels
    );
    assert!(
        prometheus
            .wait_for_firing(VIOLATION_ALERT, Duration::from_secs(30))
            .expect("Prometheus API")
            .is_some()
    );
}

#[test]
fn healthy_proxy_is_not_flagged_and_no_alert_fires() {
    let _slot = privileged();
    let frontend = frontend((50, 50), None, false, &[]);
    let prometheus = prometheus_for(&frontend);
    frontend.send(600, no_progress).expect("traffic");
    // Every request is counted exactly, however the updates fall.
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            tested(report, "client") && split(report, "client").is_some_and(|s| s["samples"] == 600)
        })
        .expect("report");
    assert!(settled, "the split never reached 600 samples: {report:#}");
    assert!(
        flagged(&report).is_empty(),
        "healthy traffic flagged: {:#?}",
        flagged(&report)
    );
    // Everything meshed: nothing went around a proxy.
    assert_eq!(report["bypass"], serde_json::json!([]), "{report:#}");
    // Prometheus sees the verdict (so the rules had data) and nothing fires.
    std::thread::sleep(Duration::from_secs(6));
    let detected = prometheus
        .query_value("max(meshdrift_split_drift_detected)")
        .expect("query");
    assert_eq!(detected, Some(0.0), "Prometheus scraped the verdict");
    let firing: Vec<_> = prometheus
        .alerts()
        .expect("alerts")
        .into_iter()
        .filter(|a| a.state == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts fired on a healthy mesh: {firing:?}"
    );
}

#[test]
fn canary_step_from_90_10_to_50_50_mid_run_raises_no_false_alarm() {
    let _slot = privileged();
    let mut frontend = frontend((90, 10), Some((90, 10)), false, &["--grace", "5s"]);
    frontend
        .send(400, no_progress)
        .expect("traffic before the step");
    let (before, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| tested(report, "client"))
        .expect("report");
    assert!(
        settled && flagged(&before).is_empty(),
        "90/10 flagged: {before:#}"
    );
    assert_eq!(
        subset(split(&before, "client").unwrap(), "v1")["declared"],
        0.9
    );

    // The canary step: new declared weights, and the proxy picks them up.
    frontend.declare_weights(50, 50).expect("new weights");
    std::thread::sleep(Duration::from_secs(3));
    frontend
        .restart_proxy((50, 50))
        .expect("proxy with new weights");
    // Traffic after the grace period is compared with the new weights; until
    // then nothing may be flagged either.
    // Bounded in rounds and time: the first whole 10 s bucket after the
    // grace period must fill with enough requests, however busy the machine.
    let mut after = Value::Null;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for _ in 0..40 {
        if std::time::Instant::now() > deadline {
            break;
        }
        frontend
            .send(150, no_progress)
            .expect("traffic after the step");
        after = frontend.report().expect("report");
        assert!(
            flagged(&after).is_empty(),
            "false alarm after the canary step: {after:#}"
        );
        let retested = split(&after, "client")
            .is_some_and(|s| s["p_value"].is_number() && subset(s, "v1")["declared"] == 0.5);
        if retested {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let client = split(&after, "client").expect("the client's split");
    assert_eq!(subset(client, "v1")["declared"], 0.5);
    assert!(
        client["p_value"].is_number(),
        "the new split was never tested: {after:#}"
    );
    assert!(
        flagged(&after).is_empty(),
        "false alarm after the canary step: {after:#}"
    );
}
