//! The criterion benchmarks of the agent crate: the user-space pipeline and
//! the policy engine; with them the inventory's scaling and the agent's
//! memory at 150 k pods fed by the stand-in Kubernetes API server and, in a
//! full run, by kube-apiserver and etcd of a lab cluster the 150 k pods are
//! written into (plain benchmarks that only print). Figures are read back
//! from criterion's own estimates and from the lines the benchmarks print
//! (`BENCH {json}`).

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::Context as _;
use meshdrift_lab::Lab;
use meshdrift_lab::cluster::{Cluster, ClusterConfig, Upstream};
use serde_json::Value;

use crate::cmd;

#[derive(Debug, Default)]
pub struct CriterionResults {
    /// Median nanoseconds per iteration, by benchmark id (`pipeline/record_to_tally`).
    pub median_ns: BTreeMap<String, f64>,
    /// What the benchmarks printed as `BENCH {json}` lines.
    pub printed: Vec<Value>,
}

impl CriterionResults {
    /// The value a benchmark printed for `what` (its `BENCH` line).
    pub fn printed_value(&self, what: &str) -> Option<&str> {
        self.printed
            .iter()
            .find(|line| line["what"] == what)
            .and_then(|line| line["value"].as_str())
    }
}

/// The leading number of a printed value (`"374.0 MiB, 373.5 MiB"` → 374.0).
pub fn leading_number(value: &str) -> Option<f64> {
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

/// `agent/benches/kube_agent.rs`: the agent's resident memory at 150 k pods.
pub const CLUSTER_RSS: &str = "agent RSS at 150 k pods via the Kubernetes API (peak, steady)";
/// `agent/benches/policy.rs`: what the inventory and the policies hold.
pub const HEAP_HELD: &str =
    "heap held at 150 k pods (inventory index, policies, policy objects kept for rebuilds)";

const BENCHES: [&str; 5] = [
    "pipeline/record_to_tally",
    "build/inventory_index_150k_pods_20k_services",
    "build/policies_20k_vs_20k_dr",
    "expectation_lookup",
    "pod_by_ip",
];

pub fn run(root: &Path, quick: bool) -> anyhow::Result<CriterionResults> {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .env(cmd::REQUIRE_EBPF.0, cmd::REQUIRE_EBPF.1)
        .args(["bench", "--quiet", "-p", "meshdrift-agent"]);
    // The scale benchmarks (150 k pods) take minutes; --quick leaves them to
    // the full run.
    let benches: &[&str] = if quick {
        &["pipeline"]
    } else {
        &["pipeline", "policy", "inventory", "kube_agent"]
    };
    for bench in benches {
        command.args(["--bench", bench]);
    }
    command.arg("--");
    if quick {
        command.arg("--quick");
    }
    // Dropped after the benchmarks: the cluster first, then its lab.
    let cluster = if quick {
        None
    } else {
        eprintln!("[bench]   a lab cluster for the agent at 150 k pods through kube-apiserver");
        let lab = Lab::new("bench-cluster").context("creating the cluster's lab")?;
        let cluster = Cluster::start(&lab, ClusterConfig::new(Upstream::locate()?))
            .context("starting the lab's control plane")?;
        command.env("MESHDRIFT_BENCH_KUBECONFIG", cluster.kubectl.kubeconfig());
        Some((cluster, lab))
    };
    eprintln!("[xtask] $ {}", cmd::render(&command));
    let output = command.output().context("running cargo bench")?;
    drop(cluster);
    if !output.status.success() {
        anyhow::bail!(
            "cargo bench failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let printed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH "))
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect();
    let mut median_ns = BTreeMap::new();
    let ids = if quick { &BENCHES[..1] } else { &BENCHES[..] };
    for id in ids {
        let path = root
            .join("target/criterion")
            .join(id)
            .join("new/estimates.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let estimates: Value = serde_json::from_str(&text)?;
        if let Some(ns) = estimates["median"]["point_estimate"].as_f64() {
            median_ns.insert((*id).to_owned(), ns);
        }
    }
    Ok(CriterionResults { median_ns, printed })
}

#[cfg(test)]
mod tests {
    use super::leading_number;

    #[test]
    fn the_leading_number_of_a_printed_value() {
        assert_eq!(leading_number("374.0 MiB, 373.5 MiB"), Some(374.0));
        assert_eq!(leading_number("6.3s"), Some(6.3));
        assert_eq!(leading_number("— MiB"), None);
    }
}
