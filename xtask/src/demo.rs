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
//! By default the client's sidecar runs a stale 80/20 configuration against
//! the declared 50/50 and reuses its connections past the declared
//! `maxRequestsPerConnection`, and `legacy`, a pod without a sidecar, sends
//! plaintext to the cluster IP: meshdrift must flag the drift, the bypass,
//! the mTLS violation and the traffic-policy violation, and the alerts must
//! fire. `--healthy` runs the sidecar at the declared weights, within the
//! request limit, with everything meshed: nothing may be flagged.

use std::{
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use meshdrift_lab::{
    prometheus::Prometheus,
    scenario::{Frontend, FrontendConfig, Inventory},
};
use serde_json::Value;

use crate::cmd;

const EXAMPLE: &str = "deploy/examples/frontend";
const RULES: &str = "deploy/prometheus/rules.yaml";
/// The demo cannot wait minutes: its copy of the rules fires after this long.
const DEMO_FOR: &str = "5s";
const DRIFT_ALERT: &str = "MeshdriftSplitDrift";
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

    let scenario = if args.healthy {
        "healthy: the client's sidecar follows the declared 50/50 over mTLS, everything meshed"
    } else {
        "drift: the client's sidecar runs a stale 80/20 against the declared 50/50 and reuses its connections past the declared maxRequestsPerConnection, and a pod without a sidecar sends plaintext to the Service"
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
            "building the lab (pods client, frontend-v1, frontend-v2 with sidecars, legacy without), \
             starting a real control plane (etcd, kube-apiserver, kube-controller-manager, \
             kube-scheduler, kube-proxy; Istio's CRDs), applying the example to it, and installing \
             meshdrift with its Helm chart (deploy/helm/meshdrift) behind the cluster's \
             authentication (auth.mode=kubernetes)",
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
        ..FrontendConfig::new(
            root.join(EXAMPLE),
            binary.clone(),
            if args.healthy { (50, 50) } else { (80, 20) },
        )
    })?;
    step(&format!("agent serving {}", frontend.agent_url));

    step(match &frontend.agent_token_file {
        Some(_) => {
            "starting Prometheus with the shipped alert rules, scraping with the token of its \
             service account monitoring/prometheus (granted get on /metrics)"
        }
        None => "starting Prometheus with the shipped alert rules",
    });
    let rules = demo_rules(&root.join(RULES), &frontend.lab.dir().join("rules.yaml"))?;
    let prometheus = Prometheus::start_with_token(
        &frontend.lab.dir().join("prometheus"),
        frontend.agent_listen,
        &[rules],
        frontend.agent_token_file.as_deref(),
    )?;

    step(&format!(
        "sending {} requests from the client to the Service's cluster IP (its sidecar takes them)",
        args.requests
    ));
    frontend.send(args.requests, |sent, total| {
        let filled = sent * 30 / total.max(1);
        eprint!(
            "\r[demo] [{}{}] {sent}/{total} requests",
            "#".repeat(filled),
            ".".repeat(30 - filled)
        );
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();

    step(
        "waiting until every request is counted (pooled connections report at each 10 s sweep) and the verdicts settle",
    );
    let healthy = args.healthy;
    let sent = args.requests as u64;
    let (report, settled) = frontend.wait_report(Duration::from_secs(30), |report| {
        let tested = report["splits"].as_array().is_some_and(|splits| {
            splits.iter().any(|split| {
                split["source"]["name"] == "client"
                    && split["p_value"].is_number()
                    && split["samples"].as_u64().is_some_and(|n| n >= sent)
            })
        });
        tested
            && (healthy
                || (any(report, "splits", "drift")
                    && any(report, "transport", "violation")
                    && report["policies"]
                        .as_array()
                        .is_some_and(|rows| rows.iter().any(|row| row["verdict"] == "violation"))
                    && report["bypass"]
                        .as_array()
                        .is_some_and(|rows| !rows.is_empty())))
    })?;
    if !settled {
        eprintln!("[demo] warning: the verdicts did not settle within 30 s; showing what there is");
    }
    println!();
    let mut report_command = Command::new(&binary);
    report_command.args(["report", "--url", &frontend.agent_url, "--output", "table"]);
    if let Some(token) = &frontend.agent_token_file {
        report_command.arg("--token-file").arg(token);
    }
    cmd::run(&mut report_command)?;

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
        let bypassed = report["bypass"]
            .as_array()
            .is_some_and(|rows| !rows.is_empty());
        if any(&report, "splits", "drift") || any(&report, "transport", "violation") || bypassed {
            outcome = Err(anyhow::anyhow!("the healthy scenario was flagged"));
        }
    } else {
        for name in [DRIFT_ALERT, VIOLATION_ALERT, BYPASS_ALERT, POLICY_ALERT] {
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

    let page = save_page(
        &frontend.agent_url,
        frontend.agent_token_file.as_deref(),
        &root.join("target/demo/report.html"),
    )?;
    println!();
    println!(
        "  report page:  {}/   (saved to {})",
        frontend.agent_url,
        page.display()
    );
    println!("  metrics:      {}/metrics", frontend.agent_url);
    if let Some(token) = &frontend.agent_token_file {
        println!(
            "  token:        curl -H \"Authorization: Bearer $(cat {})\" {}/report",
            token.display(),
            frontend.agent_url
        );
    }
    println!("  Prometheus:   {}/alerts", prometheus.url());
    if let Some(cluster) = &frontend.cluster {
        println!(
            "  cluster:      {} get pods -A --kubeconfig {}",
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
    drop(frontend);
    outcome
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
