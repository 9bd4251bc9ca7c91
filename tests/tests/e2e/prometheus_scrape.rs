//! A real Prometheus (Debian `prometheus`) scrapes the agent's `/metrics` in
//! OpenMetrics and evaluates the shipped rules on it: the exposition parses, the
//! series arrive with their labels, and the alerts react to a drift and a
//! violation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshdrift::wire::Transport;
use meshdrift_testkit::{Server, drift_report, get, observation};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// The Prometheus server process and its scratch directory, both gone on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn start_prometheus(target: std::net::SocketAddr) -> Prometheus {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} not found: install the Debian `prometheus` package (apt-get install -y prometheus); \
         `cargo xtask setup` installs it"
    );
    let dir = std::env::temp_dir().join(format!(
        "meshdrift-prometheus-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yaml");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: meshdrift\n    static_configs:\n      - targets: ['{target}']\n",
        rules.display()
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    let port = free_port();
    let child = Command::new(PROMETHEUS)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
    }
}

fn api(prometheus: &Prometheus, path: &str) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(format!("{}{path}", prometheus.url)).call().ok()?;
    let body = response.body_mut().read_to_string().ok()?;
    serde_json::from_str(&body).ok()
}

/// Polls `check` until it returns Some, or fails with the last thing seen.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("{what} did not happen within 60 s; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn query(prometheus: &Prometheus, promql: &str) -> Result<Vec<Value>, String> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = api(prometheus, &format!("/api/v1/query?query={encoded}")).ok_or("no answer")?;
    let result = body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if result.is_empty() {
        Err(format!("empty result for {promql}: {body}"))
    } else {
        Ok(result)
    }
}

#[test]
fn prometheus_scrapes_openmetrics_and_the_rules_react() {
    let server = Server::start(drift_report());
    server.state.set_ready(true);
    let metrics = &server.state.metrics;
    // 50 requests, all to v1 of a split declared 50/50: enough for the cluster
    // verdict to cross its threshold (50 · KL(1 ‖ 0.55) ≈ 29.9 ≥ 17.34).
    for _ in 0..5 {
        metrics.record(&observation("loadgen", Some("v1"), Transport::IstioMtls));
    }
    metrics.record(&observation("curl", Some("v2"), Transport::Http));
    // The agent answers the scrape with OpenMetrics, as Prometheus asks for it.
    let (_, content_type, _) = get(
        &server.url("/metrics"),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );

    let prometheus = start_prometheus(server.addr);

    eventually("the agent target to be up", || {
        let targets = api(&prometheus, "/api/v1/targets").ok_or("no answer")?;
        let target = targets["data"]["activeTargets"][0].clone();
        if target["health"] == "up" {
            Ok(())
        } else {
            Err(target.to_string())
        }
    });

    let requests = eventually("meshdrift_requests_total to be ingested", || {
        query(
            &prometheus,
            r#"meshdrift_requests_total{job="meshdrift",destination_subset="v1"}"#,
        )
    });
    assert_eq!(requests[0]["metric"]["transport"], "istio_mtls");
    assert_eq!(requests[0]["value"][1], "50");
    let drift = eventually("the drift gauge", || {
        query(
            &prometheus,
            r#"meshdrift_split_drift_detected{source_workload="loadgen"}"#,
        )
    });
    assert_eq!(drift[0]["value"][1], "1");
    eventually("the build info", || {
        query(&prometheus, "meshdrift_build_info")
    });

    // The shipped rules, evaluated by Prometheus on what the agent exports. The
    // split alert has no `for:`: it fires as soon as the summed counts cross
    // the threshold, once per workload, host and port, without the agent's
    // instance.
    eventually(
        "MeshdriftMtlsViolation and MeshdriftSplitDrift to fire",
        || {
            let alerts = api(&prometheus, "/api/v1/alerts").ok_or("no answer")?;
            let list = alerts["data"]["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let state = |name: &str| {
                list.iter()
                    .find(|a| a["labels"]["alertname"] == name)
                    .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
            };
            let violation = list
                .iter()
                .find(|a| a["labels"]["alertname"] == "MeshdriftMtlsViolation")
                .map(|a| (a["labels"]["source_workload"].clone(), a["state"].clone()));
            let drift: Vec<&Value> = list
                .iter()
                .filter(|a| a["labels"]["alertname"] == "MeshdriftSplitDrift")
                .collect();
            match (violation, state("MeshdriftSplitDrift")) {
                (Some((workload, violation)), Some(split))
                    if violation == "firing" && split == "firing" =>
                {
                    assert_eq!(workload, "curl");
                    assert_eq!(drift.len(), 1, "{drift:?}");
                    assert_eq!(drift[0]["labels"]["source_workload"], "loadgen");
                    assert!(drift[0]["labels"].get("instance").is_none(), "{drift:?}");
                    Ok(())
                }
                _ => Err(alerts.to_string()),
            }
        },
    );
}
