//! A real Prometheus server (Debian's `prometheus` package) on loopback,
//! scraping the agent and evaluating rule files, with its HTTP API read back.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};
use serde_json::Value;

use crate::error::{LabError, Result};
use crate::process::pid_of;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    listen: SocketAddr,
    dir: PathBuf,
}

/// One alert as Prometheus's `/api/v1/alerts` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    /// `pending` or `firing`.
    pub state: String,
    pub labels: Value,
    pub annotations: Value,
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests and the demo).
pub fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| LabError::io("binding", Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map_err(|e| LabError::io("reading the address of", Path::new("127.0.0.1:0"), e))
}

impl Prometheus {
    /// Starts Prometheus in `dir`, scraping `target` as job `meshdrift` every
    /// second and evaluating `rule_files` every second.
    pub fn start(dir: &Path, target: SocketAddr, rule_files: &[PathBuf]) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
        let listen = free_loopback_port()?;
        let rules = rule_files
            .iter()
            .map(|path| format!("  - {}\n", path.display()))
            .collect::<String>();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}\
             scrape_configs:\n  - job_name: meshdrift\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| LabError::io("writing", &config_path, e))?;
        let check = Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(&config_path)
            .output()
            .map_err(|source| LabError::Spawn {
                command: "promtool check config".to_owned(),
                source,
            })?;
        if !check.status.success() {
            return Err(LabError::Config {
                program: "prometheus",
                path: config_path,
                stderr: String::from_utf8_lossy(&check.stdout).into_owned()
                    + &String::from_utf8_lossy(&check.stderr),
            });
        }
        let log = dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| LabError::io("creating", &log, e))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: "prometheus".to_owned(),
                source,
            })?;
        let prometheus = Self {
            child,
            listen,
            dir: dir.to_path_buf(),
        };
        prometheus.wait_ready()?;
        Ok(prometheus)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/-/ready", self.url())).call().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(LabError::NotReady {
            what: "prometheus".to_owned(),
            pod: "host".to_owned(),
            timeout: READY_TIMEOUT,
            detail: crate::process::read_lossy(&self.dir.join("prometheus.log")),
        })
    }

    fn api(&self, path: &str) -> Result<Value> {
        get_json(&format!("{}{path}", self.url()), "Prometheus API response")
    }

    /// Alerts that are pending or firing now.
    pub fn alerts(&self) -> Result<Vec<Alert>> {
        let value = self.api("/api/v1/alerts")?;
        let alerts = value["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(alerts
            .into_iter()
            .map(|alert| Alert {
                name: alert["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                state: alert["state"].as_str().unwrap_or_default().to_owned(),
                labels: alert["labels"].clone(),
                annotations: alert["annotations"].clone(),
            })
            .collect())
    }

    /// Waits until alert `name` fires; `None` if it has not within `timeout`.
    pub fn wait_for_firing(&self, name: &str, timeout: Duration) -> Result<Option<Alert>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(alert) = self
                .alerts()?
                .into_iter()
                .find(|a| a.name == name && a.state == "firing")
            {
                return Ok(Some(alert));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The value of an instant query's first sample, if any.
    pub fn query_value(&self, expr: &str) -> Result<Option<f64>> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let value = self.api(&format!("/api/v1/query?query={encoded}"))?;
        Ok(value["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|text| text.parse().ok()))
    }
}

/// `GET url` and its body parsed as JSON; `what` names the document in errors.
pub fn get_json(url: &str, what: &'static str) -> Result<Value> {
    let parse_error = |detail: String| LabError::Parse {
        what,
        detail: format!("{url}: {detail}"),
    };
    let body = ureq::get(url)
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .map_err(|e| parse_error(e.to_string()))?;
    serde_json::from_str(&body).map_err(|e| parse_error(e.to_string()))
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = kill(pid_of(&self.child), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
