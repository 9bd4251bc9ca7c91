//! `cargo xtask demo`: the frontend v1/v2 example in the lab, real mTLS traffic
//! through a client-side HAProxy, and what meshdrift saw per subset.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use meshdrift_lab::{AgentProcess, Curl, Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls};
use serde_json::Value;

use crate::cmd;

const EXAMPLE: &str = "deploy/examples/frontend";
/// The example's manifests place its pods in this /24; the demo moves them into the lab's.
const EXAMPLE_SUBNET_PREFIX: &str = "10.213.0.";
const HOST: &str = "frontend.default.svc.cluster.local";
const SERVICE_PORT: u16 = 80;
const MTLS_PORT: u16 = 8443;
const PLAIN_PORT: u16 = 8080;
const PROXY_PORT: u16 = 15001;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Requests to send through the client's proxy.
    #[arg(long, default_value_t = 600)]
    pub requests: usize,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    cmd::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["build", "--quiet", "-p", "meshdrift-agent", "--bin", "meshdrift"]),
    )?;
    let binary = root.join("target/debug/meshdrift");
    meshdrift_lab::install_signal_cleanup().context("installing the Ctrl-C cleanup")?;

    step("building the lab: pods client, frontend-v1, frontend-v2");
    let lab = Lab::new("demo")?;
    let client = lab.add_pod_at("client", 10)?;
    let v1 = lab.add_pod_at("frontend-v1", 11)?;
    let v2 = lab.add_pod_at("frontend-v2", 12)?;
    let _servers = [("v1", &v1), ("v2", &v2)]
        .into_iter()
        .map(|(name, pod)| {
            Nginx::builder(name)
                .http(PLAIN_PORT)
                .tls(MTLS_PORT)
                .verify_client(true)
                .dns_name(HOST)
                .start(pod)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifests = place_example_in_lab(&root.join(EXAMPLE), &lab)?;

    step("asking meshdrift what the manifests declare for default/client -> frontend:80");
    let declared = declared_weights(&binary, &manifests)?;
    for (subset, weight) in &declared {
        println!("    declared: subset {subset:<4} {:>5.1} %", weight * 100.0);
    }

    step("starting the agent (eBPF programs on the cgroup v2 root)");
    let manifests_arg = manifests.to_string_lossy().into_owned();
    let agent = AgentProcess::start(
        &binary,
        &["observe", "--output", "json", "--manifests", &manifests_arg],
        "observing TCP flows",
        Duration::from_secs(60),
    )?;

    step("starting the client's proxy: HAProxy with the declared weights, Istio SNI/ALPN and a client certificate");
    let mut proxy = client_proxy(&client, &[("v1", &v1), ("v2", &v2)], &declared)?;

    step(&format!("sending {} requests through the proxy", args.requests));
    send_with_progress(&proxy, &client, args.requests)?;
    let stats = proxy.stats()?;
    // Closing the proxy closes its pooled upstream connections: each reports its final counters.
    proxy.process().terminate(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let output = agent.stop(Duration::from_secs(30))?;
    if !output.status.success() {
        bail!("the agent failed ({}):\n{}", output.status, output.stderr.join("\n"));
    }

    let flows: Vec<Value> = output
        .stdout
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let rows = per_subset(&flows, &client);
    println!();
    println!("Observed by meshdrift (kernel evidence) next to HAProxy's own counters:");
    println!();
    println!(
        "  {:<7} {:<22} {:>11} {:>14} {:>14} {:>9} {:>9}  {}",
        "SUBSET", "POD", "CONNECTIONS", "REQUESTS SEEN", "HAPROXY REQS", "SHARE", "DECLARED", "TRANSPORT"
    );
    let total: u64 = rows.values().map(|row| row.requests).sum();
    for (subset, row) in &rows {
        let haproxy = stats.server(subset).map_or(0, |server| server.stot);
        let declared_share = declared.get(subset).copied().unwrap_or(0.0);
        println!(
            "  {:<7} {:<22} {:>11} {:>14} {:>14} {:>8.1}% {:>8.1}%  {}",
            subset,
            row.pod,
            row.connections,
            row.requests,
            haproxy,
            row.requests as f64 * 100.0 / total.max(1) as f64,
            declared_share * 100.0,
            row.transports.join(",")
        );
    }
    if let Some(summary) = flows.iter().find(|flow| flow["event"] == "summary") {
        println!();
        println!("  lost records: {}", summary["lost_total"]);
    }
    println!();
    println!("Each row counts the client pod's upstream connections by the subset named in their SNI;");
    println!("requests are request/response exchanges counted in the kernel.");
    drop(lab);
    Ok(())
}

fn step(what: &str) {
    eprintln!("[demo] {what}");
}

/// Copies the example's manifests, moving its pod IPs into the lab's subnet.
fn place_example_in_lab(example: &Path, lab: &Lab) -> anyhow::Result<PathBuf> {
    let dir = lab.dir().join("manifests");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lab_prefix = format!("10.213.{}.", lab.id());
    let entries = std::fs::read_dir(example).with_context(|| format!("reading {}", example.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let name = path.file_name().context("manifest without a file name")?;
            std::fs::write(dir.join(name), text.replace(EXAMPLE_SUBNET_PREFIX, &lab_prefix))?;
        }
    }
    Ok(dir)
}

/// Subset → weight, from `meshdrift explain`.
fn declared_weights(binary: &Path, manifests: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let output = Command::new(binary)
        .args(["explain", "--manifests"])
        .arg(manifests)
        .args(["--from", "default/client", "--to", "frontend:80", "--output", "json"])
        .output()
        .context("running meshdrift explain")?;
    if !output.status.success() {
        bail!("meshdrift explain failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let explained: Value = serde_json::from_slice(&output.stdout).context("parsing meshdrift explain's JSON")?;
    let weights: BTreeMap<String, f64> = explained["destinations"]
        .as_array()
        .context("explain gave no destinations")?
        .iter()
        .filter_map(|destination| Some((destination["subset"].as_str()?.to_owned(), destination["weight"].as_f64()?)))
        .collect();
    if weights.is_empty() {
        bail!("the example declares no subsets for frontend:80");
    }
    Ok(weights)
}

fn client_proxy(client: &Pod, servers: &[(&str, &Pod)], declared: &BTreeMap<String, f64>) -> anyhow::Result<Haproxy> {
    let mut builder = Haproxy::builder(PROXY_PORT, ProxyMode::Http);
    for (subset, pod) in servers {
        let weight = declared.get(*subset).map_or(0, |share| (share * 100.0).round() as u32);
        builder = builder.server(
            Upstream::new(subset, SocketAddr::new(pod.ipv4().into(), MTLS_PORT), weight)
                .tls(UpstreamTls::istio_http(SERVICE_PORT, subset, HOST, "client")),
        );
    }
    Ok(builder.start(client)?)
}

fn send_with_progress(proxy: &Haproxy, client: &Pod, requests: usize) -> anyhow::Result<()> {
    const BATCH: usize = 50;
    let mut sent = 0;
    while sent < requests {
        let batch = BATCH.min(requests - sent);
        let report = Curl::new(&proxy.url(false)).count(batch).run(client)?;
        if report.count_status(200) != batch {
            bail!("some requests through the proxy failed: {:?}", report.status_counts());
        }
        sent += batch;
        let filled = sent * 30 / requests;
        eprint!("\r[demo] [{}{}] {sent}/{requests} requests", "#".repeat(filled), ".".repeat(30 - filled));
        let _ = std::io::stderr().flush();
    }
    eprintln!();
    Ok(())
}

#[derive(Default)]
struct SubsetRow {
    pod: String,
    connections: u64,
    requests: u64,
    transports: Vec<String>,
}

/// The client pod's closed upstream connections, by the subset in their SNI.
fn per_subset(flows: &[Value], client: &Pod) -> BTreeMap<String, SubsetRow> {
    let client_ip = client.ipv4().to_string();
    let mut rows: BTreeMap<String, SubsetRow> = BTreeMap::new();
    for flow in flows {
        let from_client = flow["src"].as_str().is_some_and(|src| src.starts_with(&format!("{client_ip}:")));
        if flow["event"] != "close" || flow["role"] != "client" || !from_client {
            continue;
        }
        let Some(subset) = flow["sni_subset"].as_str() else {
            continue;
        };
        let row = rows.entry(subset.to_owned()).or_default();
        row.pod = flow["dst_pod"].as_str().unwrap_or("?").to_owned();
        row.connections += 1;
        row.requests += flow["exchanges"].as_u64().unwrap_or(0);
        if let Some(transport) = flow["transport"].as_str() {
            if !row.transports.iter().any(|known| known == transport) {
                row.transports.push(transport.to_owned());
            }
        }
    }
    rows
}
