//! `cargo xtask lab up|down`: a lab to poke at by hand, and the broom for
//! whatever labs left behind.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use meshdrift_lab::{
    Haproxy, ProxyMode,
    scenario::{Frontend, FrontendConfig, PLAIN_PORT},
};

use crate::cmd;

const EXAMPLE: &str = "deploy/examples/frontend";

#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Build the frontend example as the demo runs it (sidecars with Istio's
    /// interception rules, kube-proxy's rules for the Service, a `legacy` pod
    /// without a sidecar), print how to reach it, and keep it until Ctrl-C.
    /// The agent is not started: run it by hand against the printed manifests.
    Up {
        /// Weight of subset v1 in the client's sidecar.
        #[arg(long, default_value_t = 50)]
        v1_weight: u32,
        /// Weight of subset v2 in the client's sidecar.
        #[arg(long, default_value_t = 50)]
        v2_weight: u32,
    },
    /// Remove what earlier labs left behind (namespaces, veths, bridges,
    /// cgroups, work directories) once their owner process is gone.
    Down {
        /// Also remove labs whose owner still runs.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    match cmd {
        LabCommand::Up {
            v1_weight,
            v2_weight,
        } => up(v1_weight, v2_weight),
        LabCommand::Down { force } => down(force),
    }
}

fn up(v1_weight: u32, v2_weight: u32) -> anyhow::Result<()> {
    // Until the lab is up, Ctrl-C tears down whatever exists and exits.
    meshdrift_lab::install_signal_cleanup().context("installing the Ctrl-C hook")?;
    let binary = cmd::build_meshdrift()?;
    let frontend = Frontend::start(FrontendConfig {
        agent_at_start: false,
        ..FrontendConfig::new(
            cmd::workspace_root().join(EXAMPLE),
            binary.clone(),
            (v1_weight, v2_weight),
        )
    })
    .context("building the frontend lab (needs root)")?;
    let proxy = frontend
        .proxy()
        .context("the client's sidecar is not running")?;
    print_summary(&frontend, proxy, &binary.display().to_string())?;
    let signal = wait_printing_stats(proxy)?;
    println!("\nsignal {signal}: tearing the lab down");
    drop(frontend);
    println!("lab removed");
    Ok(())
}

/// Waits for Ctrl-C; meanwhile prints HAProxy's per-server counters
/// whenever they change, so traffic sent by hand shows up here.
fn wait_printing_stats(proxy: &Haproxy) -> anyhow::Result<i32> {
    let mut last = String::new();
    loop {
        if let Some(signal) = meshdrift_lab::wait_for_signal_timeout(Duration::from_secs(2))? {
            return Ok(signal);
        }
        let Ok(stats) = proxy.stats() else { continue };
        let unit = if proxy.mode() == ProxyMode::Http {
            "requests"
        } else {
            "sessions"
        };
        let line = stats
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{}: {} {unit} over {} connection(s)",
                    s.name, s.stot, s.connect
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            println!("client's sidecar: {line}");
            last = line;
        }
    }
}

fn print_summary(frontend: &Frontend, proxy: &Haproxy, binary: &str) -> anyhow::Result<()> {
    let lab = &frontend.lab;
    let mut out = String::new();
    writeln!(
        out,
        "lab {} is up: {} and {}, routed through node namespace {}; frontend's cluster IP {}",
        lab.id(),
        lab.ipv4_subnet(),
        lab.ipv6_subnet(),
        lab.node_netns(),
        frontend.cluster_ip
    )?;
    writeln!(
        out,
        "work dir {} (set MESHDRIFT_LAB_KEEP=1 to keep it)\n",
        lab.dir().display()
    )?;
    writeln!(
        out,
        "{:<13} {:<20} {:<15} {:<20} {:>10}  runs",
        "pod", "netns", "ipv4", "ipv6", "cgroup id"
    )?;
    let pods = [
        (
            &frontend.client,
            "sidecar: HAProxy :15001 out (uid 1337) -> v1/v2 :8080, Istio mTLS",
        ),
        (
            &frontend.v1,
            "sidecar: nginx :15006 in (uid 1337); app nginx :8080",
        ),
        (
            &frontend.v2,
            "sidecar: nginx :15006 in (uid 1337); app nginx :8080",
        ),
        (&frontend.legacy, "no sidecar"),
    ];
    for (pod, runs) in pods {
        writeln!(
            out,
            "{:<13} {:<20} {:<15} {:<20} {:>10}  {runs}",
            pod.name(),
            pod.netns(),
            pod.ipv4().to_string(),
            pod.ipv6().to_string(),
            pod.cgroup_id()
        )?;
    }
    let (client, legacy, v1) = (&frontend.client, &frontend.legacy, &frontend.v1);
    writeln!(out, "\ntry:")?;
    writeln!(
        out,
        "  ip netns exec {} curl -s {}     # through the client's sidecar",
        client.netns(),
        frontend.service_url()
    )?;
    writeln!(
        out,
        "  ip netns exec {} curl -s {}     # no sidecar: kube-proxy picks v1 or v2",
        legacy.netns(),
        frontend.service_url()
    )?;
    writeln!(
        out,
        "  ip netns exec {} curl -s {}     # straight to a pod (its sidecar takes it in)",
        legacy.netns(),
        v1.url("http", false, PLAIN_PORT)
    )?;
    writeln!(
        out,
        "  ip netns exec {} iptables -t nat -S         # the sidecar's interception rules",
        client.netns()
    )?;
    writeln!(
        out,
        "  ip netns exec {} iptables -t nat -S   # kube-proxy's rules",
        lab.node_netns()
    )?;
    writeln!(
        out,
        "  {binary} run --manifests {}",
        frontend.manifests.display()
    )?;
    writeln!(
        out,
        "\nThe client sidecar's per-server counters (stats socket {}) print below as they change; Ctrl-C tears everything down.",
        proxy.socket_path().display()
    )?;
    print!("{out}");
    Ok(())
}

fn down(force: bool) -> anyhow::Result<()> {
    let report = if force {
        meshdrift_lab::cleanup_all()
    } else {
        meshdrift_lab::cleanup_stale()
    }
    .context("removing lab leftovers (needs root)")?;
    if report.removed.is_empty() && report.dirs.is_empty() {
        println!("no lab leftovers found");
    }
    for id in &report.removed {
        println!("removed lab {id} (netns, veths, bridge, cgroup)");
    }
    for dir in &report.dirs {
        println!("removed {}", dir.display());
    }
    for (id, pid) in &report.live {
        println!("left lab {id} alone: its owner (pid {pid}) still runs; stop it or use --force");
    }
    Ok(())
}
