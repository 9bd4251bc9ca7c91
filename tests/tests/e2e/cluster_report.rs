//! `meshdrift report --prometheus` against a real Prometheus holding a known
//! history: promtool backfills OpenMetrics written here for two agents, and
//! the real binary reads it back through the HTTP API and judges it.
//!
//! The history ends three hours ago (backfilled blocks must be older than
//! Prometheus's head), so every run passes `--at` at its end.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshdrift_lab::meshdrift_bin;
use meshdrift_lab::prometheus::{Prometheus, free_loopback_port};
use meshdrift_testkit::promtool;
use serde_json::Value;

const HOST: &str = "api.shop.svc.cluster.local";
/// Samples every 15 s, as a scrape would take them.
const SCRAPE: u64 = 15;
/// The history begins 40 minutes before its end: the 30-minute range must not
/// count the 10 minutes before it.
const HISTORY: u64 = 40 * 60;

/// One agent's traffic: per scrape interval, requests to v1 and to v2.
struct Agent {
    node: &'static str,
    instance: &'static str,
    v1: u64,
    v2: u64,
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "meshdrift-cluster-report-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

/// The end of the history: three hours ago, on a whole minute.
fn history_end() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    (now - 3 * 3600) / 60 * 60
}

fn rfc3339(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

fn split_labels(agent: &Agent, subset: &str) -> String {
    format!(
        "job=\"meshdrift\",instance=\"{}\",node=\"{}\",source_namespace=\"shop\",\
         source_workload=\"web\",destination_host=\"{HOST}\",destination_port=\"80\",\
         destination_subset=\"{subset}\"",
        agent.instance, agent.node
    )
}

/// OpenMetrics text of the agents' history ending at `end`; with
/// `drifting_pod`, node-2's agent also exports pod `web-b` as drifting.
fn history(agents: &[Agent], end: u64, drifting_pod: bool) -> String {
    let times: Vec<u64> = (0..=HISTORY / SCRAPE)
        .map(|k| end - HISTORY + k * SCRAPE)
        .collect();
    let mut text = String::new();
    text.push_str("# TYPE meshdrift_requests counter\n");
    for agent in agents {
        for (subset, per_scrape) in [("v1", agent.v1), ("v2", agent.v2)] {
            // A counter with history before the range.
            for (k, at) in times.iter().enumerate() {
                let value = 5000 + per_scrape * k as u64;
                let _ = writeln!(
                    text,
                    "meshdrift_requests_total{{{},transport=\"http\"}} {value} {at}",
                    split_labels(agent, subset)
                );
            }
        }
    }
    text.push_str("# TYPE meshdrift_connections counter\n");
    for agent in agents {
        for subset in ["v1", "v2"] {
            for (k, at) in times.iter().enumerate() {
                let _ = writeln!(
                    text,
                    "meshdrift_connections_total{{{},transport=\"http\"}} {} {at}",
                    split_labels(agent, subset),
                    10 + k
                );
            }
        }
    }
    text.push_str("# TYPE meshdrift_declared_weight_ratio gauge\n");
    for agent in agents {
        for subset in ["v1", "v2"] {
            for at in &times {
                let _ = writeln!(
                    text,
                    "meshdrift_declared_weight_ratio{{{}}} 0.5 {at}",
                    split_labels(agent, subset)
                );
            }
        }
    }
    if drifting_pod {
        let pod = "job=\"meshdrift\",instance=\"10.0.0.2:9477\",node=\"node-2\",\
                   source_namespace=\"shop\",source_workload=\"web\",source_pod=\"web-b\",\
                   destination_host=\"api.shop.svc.cluster.local\",destination_port=\"80\"";
        let recent: Vec<u64> = times
            .iter()
            .copied()
            .filter(|at| *at + 600 >= end)
            .collect();
        for (family, kind, series) in [
            (
                "meshdrift_pod_split_drift_detected",
                "gauge",
                vec![(format!("{{{pod}}}"), 1.0)],
            ),
            (
                "meshdrift_pod_observed_ratio",
                "gauge",
                vec![
                    (format!("{{{pod},destination_subset=\"v1\"}}"), 0.9),
                    (format!("{{{pod},destination_subset=\"v2\"}}"), 0.1),
                ],
            ),
            (
                "meshdrift_pod_split_samples",
                "gauge",
                vec![(format!("{{{pod}}}"), 5400.0)],
            ),
        ] {
            let _ = writeln!(text, "# TYPE {family} {kind}");
            for (labels, value) in series {
                for at in &recent {
                    let _ = writeln!(text, "{family}{labels} {value} {at}");
                }
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Backfills `openmetrics` into `dir/data` and starts Prometheus on it.
fn prometheus_with(dir: &Path, openmetrics: Option<&str>) -> Prometheus {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    if let Some(text) = openmetrics {
        let file = dir.join("history.om");
        std::fs::write(&file, text).expect("write history");
        let out = promtool()
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&file)
            .arg(&data)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool tsdb create-blocks-from openmetrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing listens at the scrape target: only the backfilled history holds
    // meshdrift's series.
    let nowhere = free_loopback_port().expect("free port");
    Prometheus::start(dir, nowhere, &[]).expect("start prometheus")
}

fn report(args: &[&str]) -> Output {
    let bin = meshdrift_bin();
    assert!(
        bin.exists(),
        "{} does not exist: build it (`cargo build -p meshdrift-agent`) or set MESHDRIFT_BIN",
        bin.display()
    );
    Command::new(&bin)
        .arg("report")
        .args(args)
        .output()
        .expect("run meshdrift report")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "meshdrift report failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cluster_args<'a>(url: &'a str, at: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "--prometheus",
        url,
        "--at",
        at,
        "--range",
        "30m",
        "--output",
        output,
    ]
}

fn share(value: &Value) -> f64 {
    value.as_f64().expect("a share")
}

#[test]
fn cluster_report_finds_the_drifting_split_its_node_and_its_pod() {
    let dir = scratch("drift");
    let end = history_end();
    let agents = [
        Agent {
            node: "node-1",
            instance: "10.0.0.1:9477",
            v1: 75,
            v2: 75,
        },
        Agent {
            node: "node-2",
            instance: "10.0.0.2:9477",
            v1: 135,
            v2: 15,
        },
    ];
    let prometheus = prometheus_with(&dir.0, Some(&history(&agents, end, true)));
    let url = prometheus.url();
    let at = rfc3339(end);

    let json: Value =
        serde_json::from_str(&stdout_of(&report(&cluster_args(&url, &at, "json")))).expect("JSON");
    assert_eq!(json["node"], format!("cluster (2 agents via {url})"));
    assert_eq!(json["window_seconds"], 1800);
    let splits = json["splits"].as_array().expect("splits");
    assert_eq!(splits.len(), 1, "{json:#}");
    let split = &splits[0];
    assert_eq!(split["host"], HOST);
    assert_eq!(split["unit"], "request");
    assert_eq!(split["drift"], true, "{split:#}");
    // 30 minutes at 20 requests/s: the 10 minutes before the range and the
    // counters' starting values are not counted.
    assert_eq!(split["samples"], 36_000, "{split:#}");
    let subsets = split["subsets"].as_array().expect("subsets");
    let v1 = subsets
        .iter()
        .find(|s| s["subset"] == "v1")
        .expect("subset v1");
    assert!((share(&v1["observed"]) - 0.7).abs() < 0.001, "{v1:#}");
    assert!((share(&v1["declared"]) - 0.5).abs() < 1e-9, "{v1:#}");
    assert_eq!(split["evidence"]["batches"], 60, "{split:#}");
    assert!(share(&split["p_value"]) < 1e-6, "{split:#}");

    let node_share = |node: &str, subset: &str| {
        json["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["node"] == node && n["subset"] == subset)
            .map(|n| share(&n["observed"]))
            .unwrap_or_else(|| panic!("no row for {node} {subset}: {json:#}"))
    };
    assert!((node_share("node-1", "v1") - 0.5).abs() < 0.001);
    assert!((node_share("node-2", "v1") - 0.9).abs() < 0.001);
    assert!((node_share("node-2", "v2") - 0.1).abs() < 0.001);

    let pods = json["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 1, "only pod B drifts: {json:#}");
    assert_eq!(pods[0]["pod"], "shop/web-b");
    assert_eq!(pods[0]["drift"], true);
    assert_eq!(pods[0]["samples"], 5400);

    let table = stdout_of(&report(&cluster_args(&url, &at, "table")));
    let split_row = table
        .lines()
        .find(|l| l.contains("shop/web") && l.contains(HOST) && !l.contains("node-"))
        .unwrap_or_else(|| panic!("no split row:\n{table}"));
    assert!(split_row.contains("DRIFT"), "{table}");
    assert!(table.contains("SPLITS BY NODE"), "{table}");
    let node_row = |node: &str, subset: &str| {
        table
            .lines()
            .find(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&node) && cells.contains(&subset)
            })
            .unwrap_or_else(|| panic!("no {node} {subset} row:\n{table}"))
            .to_owned()
    };
    assert!(node_row("node-1", "v1").contains("50.0%"), "{table}");
    assert!(node_row("node-2", "v1").contains("90.0%"), "{table}");
    assert!(node_row("node-2", "v2").contains("10.0%"), "{table}");
    assert!(
        table.contains("CLIENT PODS (1 judged, 1 drifting)"),
        "{table}"
    );
    assert!(table.contains("shop/web-b"), "{table}");
    assert!(!table.contains("web-a"), "{table}");
    assert!(
        table.contains("client pods not listed are not drifting"),
        "{table}"
    );

    let html = stdout_of(&report(&cluster_args(&url, &at, "html")));
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.contains("DRIFT"), "{html}");
    assert!(html.contains("Splits by node"), "{html}");
    assert!(html.contains("node-2"), "{html}");
    assert!(html.contains("<td>shop/web-b</td>"), "{html}");
    assert!(html.contains("(1 judged, 1 drifting)"), "{html}");
}

#[test]
fn cluster_report_of_a_healthy_history_finds_no_drift() {
    let dir = scratch("healthy");
    let end = history_end();
    let agents = [
        Agent {
            node: "node-1",
            instance: "10.0.0.1:9477",
            v1: 75,
            v2: 75,
        },
        Agent {
            node: "node-2",
            instance: "10.0.0.2:9477",
            v1: 76,
            v2: 74,
        },
    ];
    let prometheus = prometheus_with(&dir.0, Some(&history(&agents, end, false)));
    let url = prometheus.url();
    let at = rfc3339(end);
    let json: Value =
        serde_json::from_str(&stdout_of(&report(&cluster_args(&url, &at, "json")))).expect("JSON");
    let split = &json["splits"][0];
    assert_eq!(split["drift"], false, "{split:#}");
    assert_eq!(split["samples"], 36_000, "{split:#}");
    assert_eq!(json["pods"], Value::Array(Vec::new()));
    let table = stdout_of(&report(&cluster_args(&url, &at, "table")));
    let split_row = table
        .lines()
        .find(|l| l.contains("shop/web") && l.contains(HOST))
        .unwrap_or_else(|| panic!("no split row:\n{table}"));
    assert!(split_row.contains("ok: consistent"), "{table}");
    assert!(
        table.contains("CLIENT PODS (0 judged, 0 drifting)"),
        "{table}"
    );
}

fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "meshdrift report succeeded where it should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cluster_report_errors_say_what_is_wrong_and_where() {
    // A closed loopback port.
    let closed = free_loopback_port().expect("free port");
    let url = format!("http://{closed}");
    let stderr = failure(&report(&["--prometheus", &url]));
    assert!(stderr.contains("cannot reach Prometheus"), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(
        stderr.contains("meshdrift_declared_weight_ratio"),
        "{stderr}"
    );

    // A Prometheus without meshdrift's series.
    let dir = scratch("empty");
    let prometheus = prometheus_with(&dir.0, None);
    let stderr = failure(&report(&["--prometheus", &prometheus.url()]));
    assert!(stderr.contains("no meshdrift series"), "{stderr}");
    assert!(
        stderr.contains("meshdrift_declared_weight_ratio{job=\"meshdrift\"} in the last 1h"),
        "{stderr}"
    );
    assert!(stderr.contains(&prometheus.url()), "{stderr}");
    assert!(
        stderr.contains("is Prometheus scraping the agents?"),
        "{stderr}"
    );

    // Agents scraped, but no weighted split among what they saw: not a
    // scraping problem, and the message says so.
    let end = history_end();
    let mut text = String::from("# TYPE meshdrift_build_info gauge\n");
    for node in ["node-1", "node-2"] {
        for minute in 0..30u64 {
            text.push_str(&format!(
                "meshdrift_build_info{{job=\"meshdrift\",node=\"{node}\",version=\"0.1.0\"}} 1 {}\n",
                end - 1800 + minute * 60
            ));
        }
    }
    text.push_str("# EOF\n");
    let idle = scratch("idle");
    let idle_prometheus = prometheus_with(&idle.0, Some(&text));
    let at = rfc3339(end);
    let stderr = failure(&report(&[
        "--prometheus",
        &idle_prometheus.url(),
        "--at",
        &at,
        "--range",
        "30m",
    ]));
    assert!(stderr.contains("no split to judge"), "{stderr}");
    assert!(stderr.contains("the 2 meshdrift agent(s)"), "{stderr}");

    // A query Prometheus refuses: more points per series than it serves.
    let stderr = failure(&report(&[
        "--prometheus",
        &prometheus.url(),
        "--range",
        "100h",
        "--step",
        "1s",
    ]));
    assert!(stderr.contains("refused query"), "{stderr}");
    assert!(stderr.contains("bad_data"), "{stderr}");
    assert!(stderr.contains("/api/v1/query_range"), "{stderr}");

    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("listen");
    let url = format!("http://{}", silent.local_addr().expect("address"));
    let started = std::time::Instant::now();
    let stderr = failure(&report(&["--prometheus", &url, "--timeout", "1s"]));
    assert!(started.elapsed() < Duration::from_secs(20), "{stderr}");
    assert!(
        stderr.contains("did not answer within 1s; raise --timeout or shorten --range"),
        "{stderr}"
    );
    assert!(stderr.contains(&url), "{stderr}");
}
