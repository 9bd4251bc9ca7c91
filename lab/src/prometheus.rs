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
/// How long one query may take to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    listen: SocketAddr,
    dir: PathBuf,
}

/// How Prometheus finds the agents through a cluster's API server.
#[derive(Debug, Clone)]
pub struct KubernetesDiscovery {
    /// The Prometheus program: upstream's, built with Kubernetes discovery
    /// ([`crate::cluster::Upstream::prometheus`]); Debian's leaves it out.
    pub prometheus: PathBuf,
    /// `https://<address>:6443`
    pub api_server: String,
    /// The cluster's CA certificate, which signed the API server's.
    pub ca_file: PathBuf,
    /// A service account's token allowed to list and watch the agent's
    /// namespace's pods (re-read by Prometheus as it changes).
    pub token_file: PathBuf,
    /// The agent's namespace (`meshdrift`).
    pub namespace: String,
    /// The agent pods' label that names them, as `name=value`
    /// (`app.kubernetes.io/name=meshdrift`).
    pub selector: String,
    /// Whether scrapes send the token too (agents run with
    /// `--auth kubernetes`, the token granted their paths).
    pub scrape_with_token: bool,
}

impl KubernetesDiscovery {
    /// The `meshdrift` job: role `pod` in the namespace, the agent's pods'
    /// `metrics` port only, `node` from the pod's node.
    fn scrape_config(&self) -> String {
        let token = self.token_file.display();
        let (label, value) = self
            .selector
            .split_once('=')
            .unwrap_or((self.selector.as_str(), ""));
        let meta_label = format!("__meta_kubernetes_pod_label_{}", sanitize_label(label));
        let scrape_authorization = if self.scrape_with_token {
            format!("    authorization:\n      credentials_file: {token}\n")
        } else {
            String::new()
        };
        format!(
            "  - job_name: meshdrift\n{scrape_authorization}\
             \x20   kubernetes_sd_configs:\n\
             \x20     - role: pod\n\
             \x20       api_server: {api}\n\
             \x20       namespaces:\n          names: [{namespace}]\n\
             \x20       authorization:\n          credentials_file: {token}\n\
             \x20       tls_config:\n          ca_file: {ca}\n\
             \x20   relabel_configs:\n\
             \x20     - source_labels: [{meta_label}, __meta_kubernetes_pod_container_port_name]\n\
             \x20       regex: '{value};metrics'\n\
             \x20       action: keep\n\
             \x20     - source_labels: [__meta_kubernetes_pod_phase]\n\
             \x20       regex: Running\n\
             \x20       action: keep\n\
             \x20     - source_labels: [__meta_kubernetes_pod_node_name]\n\
             \x20       target_label: node\n\
             \x20     - source_labels: [__meta_kubernetes_pod_name]\n\
             \x20       target_label: pod\n",
            api = self.api_server,
            namespace = self.namespace,
            ca = self.ca_file.display(),
        )
    }
}

/// A Kubernetes label name as Prometheus's discovery spells it in
/// `__meta_kubernetes_pod_label_<name>`: every character outside
/// `[a-zA-Z0-9_]` an underscore.
fn sanitize_label(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
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
        Self::start_with_token(dir, target, rule_files, None)
    }

    /// As [`Prometheus::start`], scraping with the bearer token in
    /// `token_file` (a service account's, for an agent run with
    /// `--auth kubernetes`), re-read by Prometheus at every scrape.
    pub fn start_with_token(
        dir: &Path,
        target: SocketAddr,
        rule_files: &[PathBuf],
        token_file: Option<&Path>,
    ) -> Result<Self> {
        let authorization = token_file.map_or_else(String::new, |path| {
            format!(
                "    authorization:\n      credentials_file: {}\n",
                path.display()
            )
        });
        let job = format!(
            "  - job_name: meshdrift\n{authorization}    static_configs:\n      - targets: ['{target}']\n"
        );
        Self::launch(dir, Path::new("prometheus"), &job, rule_files, true)
    }

    /// Starts Prometheus in `dir` finding the agents as a cluster's
    /// Prometheus does: the API server's pods (`kubernetes_sd_configs`, role
    /// `pod`) in the agent's namespace, kept when they are the agent's and
    /// only on its `metrics` port, each target labelled with its pod's
    /// `node` (as the ServiceMonitor's relabelling does); job `meshdrift`,
    /// scraped and evaluated every second.
    pub fn start_discovering(
        dir: &Path,
        discovery: &KubernetesDiscovery,
        rule_files: &[PathBuf],
    ) -> Result<Self> {
        if !discovery.prometheus.is_file() {
            return Err(LabError::invalid(
                "Prometheus with Kubernetes discovery",
                format!(
                    "{} is missing: `cargo xtask setup` builds it from tools/prometheus",
                    discovery.prometheus.display()
                ),
            ));
        }
        // Debian's promtool knows no kubernetes_sd_configs either: the
        // program itself refuses a bad file, and its log says why.
        Self::launch(
            dir,
            &discovery.prometheus,
            &discovery.scrape_config(),
            rule_files,
            false,
        )
    }

    fn launch(
        dir: &Path,
        program: &Path,
        scrape_config: &str,
        rule_files: &[PathBuf],
        check: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
        let listen = free_loopback_port()?;
        let rules = rule_files
            .iter()
            .map(|path| format!("  - {}\n", path.display()))
            .collect::<String>();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rules}\
             scrape_configs:\n{scrape_config}"
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| LabError::io("writing", &config_path, e))?;
        if check {
            check_config(&config_path)?;
        }
        let log = dir.join("prometheus.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| LabError::io("creating", &log, e))?;
        let child = Command::new(program)
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
        let mut prometheus = Self {
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

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if ureq::get(&format!("{}/-/ready", self.url())).call().is_ok() {
                return Ok(());
            }
            // Exited (a configuration it refuses): its log says why, now.
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
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

    /// The active targets (`/api/v1/targets`): each with its `labels`,
    /// `health` (`up`, `down`, `unknown`) and `lastError`.
    pub fn active_targets(&self) -> Result<Vec<Value>> {
        let value = self.api("/api/v1/targets?state=active")?;
        Ok(value["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default())
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
        let value = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        Ok(value["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|text| text.parse().ok()))
    }

    /// The series an instant query returns now (each with its `metric`
    /// labels and `value`), empty when nothing matches. A query Prometheus
    /// rejects, or one whose result is a scalar or a string rather than
    /// series, is an error that carries Prometheus's own message.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let url = format!("{}/api/v1/query?query={}", self.url(), url_encode(expr));
        let unanswered = |detail: String| LabError::parse("Prometheus API response", detail);
        // A rejected query is answered 400 with its reason in the body: read it.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(QUERY_TIMEOUT))
            .build()
            .into();
        let body = agent
            .get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .map_err(|e| unanswered(format!("{url}: {e}")))?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| unanswered(format!("{url}: {e}: {body}")))?;
        if answer["status"] != "success" {
            return Err(LabError::invalid(
                "PromQL query",
                format!(
                    "{expr}: {} {}",
                    answer["errorType"].as_str().unwrap_or("error"),
                    answer["error"].as_str().unwrap_or(&body)
                ),
            ));
        }
        let data = &answer["data"];
        match (data["resultType"].as_str(), data["result"].as_array()) {
            (Some("vector" | "matrix"), Some(series)) => Ok(series.clone()),
            (Some(other), _) => Err(LabError::invalid(
                "PromQL query",
                format!("{expr}: returns a {other}, not series"),
            )),
            (None, _) => Err(unanswered(format!("{url}: no result in {body}"))),
        }
    }
}

/// `promtool check config` of the file.
fn check_config(config_path: &Path) -> Result<()> {
    let check = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(config_path)
        .output()
        .map_err(|source| LabError::Spawn {
            command: "promtool check config".to_owned(),
            source,
        })?;
    if !check.status.success() {
        return Err(LabError::Config {
            program: "prometheus",
            path: config_path.to_path_buf(),
            stderr: String::from_utf8_lossy(&check.stdout).into_owned()
                + &String::from_utf8_lossy(&check.stderr),
        });
    }
    Ok(())
}

/// `text` as one URL query component.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `GET url` and its body parsed as JSON; `what` names the document in errors.
pub fn get_json(url: &str, what: &'static str) -> Result<Value> {
    get_json_with_token(url, what, None)
}

/// As [`get_json`], sending `token` as a bearer token when there is one.
pub fn get_json_with_token(url: &str, what: &'static str, token: Option<&str>) -> Result<Value> {
    let parse_error = |detail: String| LabError::Parse {
        what,
        detail: format!("{url}: {detail}"),
    };
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let body = request
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
