//! `cargo xtask demo`: the frontend example in the lab, judged by meshdrift
//! with a real Prometheus evaluating the shipped alert rules.
//!
//! By default the lab runs a real Kubernetes control plane (etcd,
//! kube-apiserver, the controllers, the scheduler and kube-proxy, built from
//! tools/), the example's objects are applied to it, and the agent is
//! installed from `deploy/kubernetes` and reads the API server with its
//! service account; `--manifests` runs `meshdrift run --manifests` instead.
//! The lab is wired like a mesh: sidecars intercept with Istio's nat rules,
//! applications dial the Service's cluster IP, kube-proxy's rules DNAT it.
//! On the control plane the cluster has two nodes, each with its own agent
//! pod from the DaemonSet (attached to that node's cgroups) and Prometheus
//! finds both through the API server. The client workload has a pod on each
//! node: `client` on node-1 follows the declared 50/50 but reuses its
//! connections past the declared `maxRequestsPerConnection`, `client-b` on
//! node-2 runs a stale 90/10; the servers are on node-2, and `legacy`, a pod
//! without a sidecar on node-1, sends plaintext to the cluster IP. meshdrift
//! must judge the workload once from both agents' counters
//! (`MeshdriftSplitDrift`), name `client-b` (`MeshdriftStaleProxy`, the
//! agents' reports, `meshdrift report --prometheus`), and flag the bypass,
//! the mTLS violation and the traffic-policy violation. With `--manifests`
//! (one node, no control plane) the one client's sidecar runs the stale
//! 80/20. `--healthy` runs every sidecar at the declared weights, within the
//! request limit, with everything meshed: nothing may be flagged.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use meshdrift_lab::{
    prometheus::Prometheus,
    scenario::{Frontend, FrontendConfig, Inventory},
    stale_sidecar::StaleClient,
};
use serde_json::Value;

use crate::cmd;

const EXAMPLE: &str = "deploy/examples/frontend";
const RULES: &str = "deploy/prometheus/rules.yaml";
/// The demo cannot wait minutes: its copy of the rules fires after this long.
const DEMO_FOR: &str = "5s";
const DRIFT_ALERT: &str = "MeshdriftSplitDrift";
const STALE_ALERT: &str = "MeshdriftStaleProxy";
const VIOLATION_ALERT: &str = "MeshdriftMtlsViolation";
const BYPASS_ALERT: &str = "MeshdriftSidecarBypass";
const POLICY_ALERT: &str = "MeshdriftPolicyViolation";
/// What the demo's DestinationRule declares as
/// `connectionPool.http.maxRequestsPerConnection`: the stale sidecar reuses
/// its connections without limit, the healthy one closes them at this count.
const MAX_REQUESTS_PER_CONNECTION: u32 = 50;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run the proxy at the declared weights with mTLS only: nothing may be flagged.
    #[arg(long)]
    pub healthy: bool,
    /// Requests to send through the client's proxy.
    #[arg(long, default_value_t = 600)]
    pub requests: usize,
    /// Exit at the end instead of keeping the lab up until Ctrl-C (the default when
    /// standard input is not a terminal).
    #[arg(long)]
    pub no_wait: bool,
    /// Run the agent on the example's manifests (`meshdrift run --manifests`)
    /// instead of a real control plane.
    #[arg(long)]
    pub manifests: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let binary = cmd::build_meshdrift()?;
    meshdrift_lab::install_signal_cleanup().context("installing the Ctrl-C cleanup")?;
    // On the real control plane the cluster has two nodes, an agent on each.
    let two_nodes = !args.manifests;

    let scenario = match (args.healthy, two_nodes) {
        (true, _) => {
            "healthy: the client's sidecars follow the declared 50/50 over mTLS, everything meshed"
        }
        (false, true) => {
            "drift: of the client workload's two pods, client on node-1 follows the declared 50/50 but \
             reuses its connections past the declared maxRequestsPerConnection, and client-b on \
             node-2 runs a stale 90/10; a pod without a sidecar sends plaintext to the Service"
        }
        (false, false) => {
            "drift: the client's sidecar runs a stale 80/20 against the declared 50/50 and reuses its \
             connections past the declared maxRequestsPerConnection, and a pod without a sidecar \
             sends plaintext to the Service"
        }
    };
    step(&format!("scenario — {scenario}"));
    let inventory = if args.manifests {
        step(
            "building the lab (pods client, frontend-v1, frontend-v2 with sidecars, legacy without; \
             kube-proxy rules for the Service) and starting `meshdrift run --manifests`",
        );
        Inventory::Manifests
    } else {
        step(
            "building a two-node lab (node-1: client and legacy; node-2: frontend-v1 and \
             frontend-v2, sidecars on all but legacy), starting a real control plane (etcd, \
             kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy on each node; \
             Istio's CRDs), applying the example to it, and installing meshdrift with its Helm \
             chart (deploy/helm/meshdrift) behind the cluster's authentication \
             (auth.mode=kubernetes): one agent per node, each attached to its node's cgroups",
        );
        Inventory::KUBERNETES
    };
    let frontend = Frontend::start(FrontendConfig {
        inventory,
        legacy_plaintext: !args.healthy,
        declared_max_requests_per_connection: Some(MAX_REQUESTS_PER_CONNECTION),
        proxy_requests_per_connection: args.healthy.then_some(MAX_REQUESTS_PER_CONNECTION),
        // On the real control plane, as users run it: only callers the API
        // server allows read the report and the metrics.
        auth: !args.manifests,
        server_node: if two_nodes { 2 } else { 1 },
        ..FrontendConfig::new(
            root.join(EXAMPLE),
            binary.clone(),
            if args.healthy || two_nodes {
                (50, 50)
            } else {
                (80, 20)
            },
        )
    })?;
    let stale = if two_nodes {
        step(&format!(
            "adding the client workload's second pod, client-b, on node-2 with a sidecar at {}",
            if args.healthy {
                "the declared 50/50"
            } else {
                "a stale 90/10"
            }
        ));
        Some(StaleClient::start(
            &frontend,
            "client-b",
            16,
            2,
            if args.healthy { (50, 50) } else { (90, 10) },
        )?)
    } else {
        None
    };
    let agents: Vec<String> = match frontend.agent_pods().as_slice() {
        [] => vec![frontend.agent_url.clone()],
        pods => pods.iter().map(|pod| pod.url.clone()).collect(),
    };
    step(&format!("agents serving {}", agents.join(", ")));

    let rules = demo_rules(&root.join(RULES), &frontend.lab.dir().join("rules.yaml"))?;
    let prometheus = if two_nodes {
        step(
            "starting Prometheus with the shipped alert rules, finding the agents through the API \
             server (kubernetes_sd_configs) and scraping with the token of its service account \
             monitoring/prometheus (granted get on /metrics)",
        );
        frontend.discovering_prometheus(&[rules])?
    } else {
        step("starting Prometheus with the shipped alert rules");
        Prometheus::start_with_token(
            &frontend.lab.dir().join("prometheus"),
            frontend.agent_listen,
            &[rules],
            frontend.agent_token_file.as_deref(),
        )?
    };

    let senders = if stale.is_some() { 2 } else { 1 };
    step(&format!(
        "sending {} requests from each client pod to the Service's cluster IP (its sidecar takes them)",
        args.requests
    ));
    let progress = |sent: usize, total: usize| {
        let filled = sent * 30 / total.max(1);
        eprint!(
            "\r[demo] [{}{}] {sent}/{total} requests",
            "#".repeat(filled),
            ".".repeat(30 - filled)
        );
        let _ = std::io::stderr().flush();
    };
    frontend.send(args.requests, progress)?;
    eprintln!();
    if let Some(stale) = &stale {
        stale.send(&frontend, args.requests)?;
        progress(args.requests, args.requests);
        eprintln!(" (client-b)");
    }

    step(
        "waiting until every request is counted (pooled connections report at each 10 s sweep) and the verdicts settle",
    );
    let healthy = args.healthy;
    let sent = (args.requests * senders) as u64;
    let (reports, settled) = wait_reports(&frontend, Duration::from_secs(45), |reports| {
        let counted: u64 = reports
            .iter()
            .flat_map(|report| report["splits"].as_array().cloned().unwrap_or_default())
            .filter(|split| split["source"]["name"] == "client")
            .filter_map(|split| split["samples"].as_u64())
            .sum();
        let flagged = |list: &str, flag: &str| reports.iter().any(|r| any(r, list, flag));
        let policy_violation = reports.iter().any(|report| {
            report["policies"]
                .as_array()
                .is_some_and(|rows| rows.iter().any(|row| row["verdict"] == "violation"))
        });
        let bypassed = reports.iter().any(|report| {
            report["bypass"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        });
        let drift = if two_nodes {
            flagged("pods", "drift")
        } else {
            flagged("splits", "drift")
        };
        counted >= sent
            && (healthy
                || (drift && flagged("transport", "violation") && policy_violation && bypassed))
    })?;
    if !settled {
        eprintln!("[demo] warning: the verdicts did not settle within 45 s; showing what there is");
    }
    println!();
    for url in &agents {
        let mut report_command = Command::new(&binary);
        report_command.args(["report", "--url", url, "--output", "table"]);
        if let Some(token) = &frontend.agent_token_file {
            report_command.arg("--token-file").arg(token);
        }
        cmd::run(&mut report_command)?;
        println!();
    }
    step("asking Prometheus which alerts fire");
    let mut outcome = Ok(());
    if healthy {
        std::thread::sleep(Duration::from_secs(8));
        let firing: Vec<_> = prometheus
            .alerts()?
            .into_iter()
            .filter(|a| a.state == "firing")
            .collect();
        if firing.is_empty() {
            println!("  no alert fires: the mesh does what it declares.");
        } else {
            for alert in &firing {
                println!("  FIRING {}: {}", alert.name, alert.annotations["summary"]);
            }
            outcome = Err(anyhow::anyhow!("the healthy scenario fired alerts"));
        }
        let flagged = reports.iter().any(|report| {
            any(report, "splits", "drift")
                || any(report, "pods", "drift")
                || any(report, "transport", "violation")
                || report["bypass"]
                    .as_array()
                    .is_some_and(|rows| !rows.is_empty())
        });
        if flagged {
            outcome = Err(anyhow::anyhow!("the healthy scenario was flagged"));
        }
    } else {
        let mut expected = vec![DRIFT_ALERT];
        if two_nodes {
            expected.push(STALE_ALERT);
        }
        expected.extend([VIOLATION_ALERT, BYPASS_ALERT, POLICY_ALERT]);
        for name in expected {
            match prometheus.wait_for_firing(name, Duration::from_secs(60))? {
                Some(alert) => println!(
                    "  FIRING {name}: {}",
                    alert.annotations["summary"].as_str().unwrap_or("")
                ),
                None => {
                    println!("  {name} did not fire within 60 s");
                    outcome = Err(anyhow::anyhow!("alert {name} did not fire"));
                }
            }
        }
    }

    if two_nodes {
        // After the alerts: Prometheus then holds the agents' pod verdicts too.
        println!();
        step(
            "the cluster's verdict from Prometheus: every agent's counters summed, per node and per pod",
        );
        cmd::run(Command::new(&binary).args([
            "report",
            "--prometheus",
            &prometheus.url(),
            "--range",
            "10m",
            "--output",
            "table",
        ]))?;
    }

    let saved = root.join("target/demo/report.html");
    let page = if two_nodes {
        save_cluster_page(&binary, &prometheus.url(), &saved)?
    } else {
        save_page(
            &frontend.agent_url,
            frontend.agent_token_file.as_deref(),
            &saved,
        )?
    };
    println!();
    for url in &agents {
        println!("  report page:  {url}/");
    }
    println!(
        "  {} report:  {}",
        if two_nodes { "cluster" } else { "saved" },
        page.display()
    );
    println!("  metrics:      {}/metrics", agents.join("/metrics, "));
    if let Some(token) = &frontend.agent_token_file {
        println!(
            "  token:        curl -H \"Authorization: Bearer $(cat {})\" {}/report",
            token.display(),
            frontend.agent_url
        );
    }
    println!("  Prometheus:   {}/alerts", prometheus.url());
    if two_nodes {
        println!(
            "  cluster view: {} report --prometheus {}",
            binary.display(),
            prometheus.url()
        );
    }
    if let Some(cluster) = &frontend.cluster {
        println!(
            "  cluster:      {} get pods -A -o wide --kubeconfig {}",
            cluster.kubectl.binary().display(),
            cluster.kubectl.kubeconfig().display()
        );
    }
    if !args.no_wait && std::io::stdin().is_terminal() {
        println!();
        println!("The lab stays up: press Ctrl-C to tear it down.");
        meshdrift_lab::wait_for_signal().context("waiting for Ctrl-C")?;
    }
    drop(prometheus);
    drop(stale);
    drop(frontend);
    outcome
}

/// Every agent's report (each node's), until `settled` holds or `timeout` passes.
fn wait_reports(
    frontend: &Frontend,
    timeout: Duration,
    settled: impl Fn(&[Value]) -> bool,
) -> anyhow::Result<(Vec<Value>, bool)> {
    let deadline = Instant::now() + timeout;
    loop {
        let reports = match frontend.agent_pods().as_slice() {
            [] => vec![frontend.report()?],
            pods => pods
                .iter()
                .map(|pod| pod.report(frontend.agent_token()))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if settled(&reports) {
            return Ok((reports, true));
        }
        if Instant::now() >= deadline {
            return Ok((reports, false));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The cluster's report page, rendered by `meshdrift report --prometheus`.
fn save_cluster_page(binary: &Path, prometheus: &str, path: &Path) -> anyhow::Result<PathBuf> {
    let output = Command::new(binary)
        .args(["report", "--prometheus", prometheus, "--range", "10m"])
        .args(["--output", "html"])
        .output()
        .context("rendering the cluster's report page")?;
    if !output.status.success() {
        bail!(
            "meshdrift report --prometheus failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn step(what: &str) {
    eprintln!("[demo] {what}");
}

fn any(report: &Value, list: &str, flag: &str) -> bool {
    report[list]
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item[flag] == true))
}

/// The shipped rules with every `for:` shortened, so alerts fire within the demo.
fn demo_rules(shipped: &Path, copy: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(shipped)
        .with_context(|| format!("reading {}", shipped.display()))?;
    let shortened: String = text
        .lines()
        .map(|line| match line.split_once("for:") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: {DEMO_FOR}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    std::fs::write(copy, shortened).with_context(|| format!("writing {}", copy.display()))?;
    Ok(copy.to_path_buf())
}

fn save_page(agent_url: &str, token_file: Option<&Path>, path: &Path) -> anyhow::Result<PathBuf> {
    let mut curl = Command::new("curl");
    curl.args(["--silent", "--fail", "--max-time", "10"]);
    if let Some(file) = token_file {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the token in {}", file.display()))?;
        curl.args(["--oauth2-bearer", token.trim()]);
    }
    let output = curl
        .arg(format!("{agent_url}/"))
        .output()
        .context("fetching the report page")?;
    if !output.status.success() {
        bail!("the agent did not serve its report page");
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}
