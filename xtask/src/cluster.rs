//! `cargo xtask cluster up|down --dir DIR`: a real Kubernetes control plane
//! in a lab, left running in the background for trying meshdrift by hand;
//! with `--agent`, meshdrift installed on it (an agent pod on every node,
//! each attached to its node's cgroup subtree) and a Prometheus finding the
//! agents through the API server, evaluating the shipped rules.
//!
//! `up` starts a supervisor process (`cluster serve`, detached) that owns the
//! lab and the cluster, waits until it reports the cluster ready, prints
//! what runs and how to use it, and returns. `down` asks the supervisor to
//! stop (SIGTERM), which tears everything down, and waits for it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use meshdrift_lab::Lab;
use meshdrift_lab::cluster::{Cluster, ClusterConfig, Upstream, lab_agent_args};

use crate::upstream;

const SUPERVISOR_PID: &str = "supervisor.pid";
const READY: &str = "ready";
const LOG: &str = "cluster.log";
/// A cold cluster start on two busy cores: etcd, the API server, CRDs, node.
const UP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler
    /// and kube-proxy (built from tools/ by `cargo xtask setup`) in a lab,
    /// install Istio's CRDs, register the lab's node, and return once it is
    /// ready. Writes DIR/kubeconfig (admin) and DIR/bin/ (kubectl and the
    /// other programs); `cluster down --dir DIR` stops it all.
    Up {
        /// Where the kubeconfig, the programs and the supervisor's log go.
        #[arg(long)]
        dir: PathBuf,
        /// Nodes to register: each a network namespace of the lab (node-1
        /// at 10.213.<id>.1, node-k at 10.213.<id>.<248+k>, routed through
        /// node-1) with its own kube-proxy. Lab pods run on node-1 unless
        /// placed on another (`Lab::add_pod_on`).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
        nodes: u8,
        /// Also install meshdrift from deploy/kubernetes (the DaemonSet's
        /// pod on every node, the lab running this workspace's build of it)
        /// and start a Prometheus that discovers the agents through the API
        /// server (kubernetes_sd_configs) with deploy/prometheus/rules.yaml.
        #[arg(long)]
        agent: bool,
    },
    /// Stop what `cluster up --dir DIR` started and remove its lab.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
    /// The supervisor `up` starts in the background (not for direct use).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        nodes: u8,
        /// The meshdrift binary to install, when agents are wanted.
        #[arg(long)]
        meshdrift: Option<PathBuf>,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Up { dir, nodes, agent } => up(&dir, nodes, agent),
        ClusterCommand::Down { dir } => down(&dir),
        ClusterCommand::Serve {
            dir,
            nodes,
            meshdrift,
        } => serve(&dir, nodes, meshdrift.as_deref()),
    }
}

fn up(dir: &Path, nodes: u8, agent: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if let Some(pid) = running_supervisor(&dir) {
        bail!(
            "a cluster already runs for {} (supervisor pid {pid}): `cargo xtask cluster down --dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    let meshdrift = if agent {
        Some(crate::cmd::build_meshdrift()?)
    } else {
        None
    };
    let _ = std::fs::remove_file(dir.join(READY));
    let log = dir.join(LOG);
    let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    let mut command = Command::new(exe);
    command
        .args(["cluster", "serve", "--dir"])
        .arg(&dir)
        .arg(format!("--nodes={nodes}"));
    if let Some(binary) = &meshdrift {
        command.arg("--meshdrift").arg(binary);
    }
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // Its own session: the terminal's Ctrl-C and hang-up do not reach it.
    // SAFETY: setsid(2) is async-signal-safe and touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            nix_setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .context("starting the cluster's supervisor")?;
    std::fs::write(dir.join(SUPERVISOR_PID), child.id().to_string())?;
    eprintln!(
        "[cluster] starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy (log: {})",
        log.display()
    );
    let started = Instant::now();
    loop {
        if dir.join(READY).is_file() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the cluster did not come up ({status}); the end of {}:\n{}",
                log.display(),
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 30)
            );
        }
        if started.elapsed() > UP_TIMEOUT {
            let _ = child.kill();
            bail!(
                "the cluster was not ready within {UP_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let info = std::fs::read_to_string(dir.join(READY)).unwrap_or_default();
    println!(
        "cluster ready in {:.0} s\n{info}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn serve(dir: &Path, nodes: u8, meshdrift: Option<&Path>) -> anyhow::Result<()> {
    meshdrift_lab::install_signal_cleanup().context("installing the signal hook")?;
    let upstream = Upstream::locate()?;
    let lab = Lab::new("cluster").context("creating the lab (needs root)")?;
    let cluster = Cluster::start(&lab, ClusterConfig::new(upstream.clone()).nodes(nodes))
        .context("starting the control plane")?;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    for program in meshdrift_lab::cluster::PROGRAMS {
        let target = bin.join(program);
        let _ = std::fs::remove_file(&target);
        let source = upstream.bin(program);
        if std::fs::hard_link(&source, &target).is_err() {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        }
    }
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(cluster.kubectl.kubeconfig(), &kubeconfig)?;
    let (agents, prometheus) = match meshdrift {
        Some(binary) => {
            let agents = cluster
                .install_agents(&lab, binary, &lab_agent_args(&[]))
                .context("installing meshdrift")?;
            let rules = crate::cmd::workspace_root().join("deploy/prometheus/rules.yaml");
            let prometheus = cluster
                .discovering_prometheus(&lab.dir().join("prometheus"), None, &[rules])
                .context("starting Prometheus")?;
            (agents, Some(prometheus))
        }
        None => (Vec::new(), None),
    };
    let mut agent_info = String::new();
    for agent in &agents {
        agent_info.push_str(&format!(
            "  agent        {} on {}: {}/ (report page), {}/metrics\n",
            agent.name, agent.node_name, agent.url, agent.url
        ));
    }
    if let Some(prometheus) = &prometheus {
        agent_info.push_str(&format!(
            "  Prometheus   {} (finds the agents through the API server; shipped rules)\n  \
             cluster view meshdrift report --prometheus {}\n",
            prometheus.url(),
            prometheus.url()
        ));
    }
    let info = format!(
        "  API server   {server} (etcd, kube-apiserver, kube-controller-manager and kube-scheduler in lab pod {cp}, {cp_ip})\n\
         \x20 nodes        {nodes} (kube-proxy in iptables mode on each, the lab as their kubelet)\n\
         \x20 Istio CRDs   installed\n\
         \x20 kubeconfig   {kubeconfig} (cluster admin)\n\
         \x20 programs     {bin}/ (kubectl, kube-apiserver, …, etcd)\n\
         \x20 lab          {lab_dir} (logs in logs/)\n\
         {agent_info}\n\
         try:  {bin}/kubectl --kubeconfig {kubeconfig} get nodes,namespaces,crds\n\
         stop: cargo xtask cluster down --dir {dir}\n",
        server = cluster.server,
        cp = cluster.control_plane().name(),
        cp_ip = cluster.control_plane().ipv4(),
        nodes = cluster
            .nodes
            .iter()
            .map(|node| format!("{} {}", node.name, node.processes.ipv4()))
            .collect::<Vec<_>>()
            .join(", "),
        kubeconfig = kubeconfig.display(),
        bin = bin.display(),
        lab_dir = lab.dir().display(),
        dir = dir.display(),
    );
    std::fs::write(dir.join(READY), info)?;
    let signal = meshdrift_lab::wait_for_signal()?;
    eprintln!("[cluster] signal {signal}: stopping");
    let _ = std::fs::remove_file(dir.join(READY));
    drop(prometheus);
    drop(agents);
    drop(cluster);
    lab.teardown().context("removing the lab")?;
    let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID));
    eprintln!("[cluster] stopped");
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let Some(pid) = running_supervisor(dir) else {
        let report = meshdrift_lab::cleanup_stale()?;
        println!(
            "no cluster runs for {}{}",
            dir.display(),
            if report.removed.is_empty() {
                String::new()
            } else {
                format!("; removed leftovers of labs {:?}", report.removed)
            }
        );
        return Ok(());
    };
    // SAFETY: kill(2) with a pid read from the supervisor's own file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(120);
    while alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            meshdrift_lab::cleanup_stale()?;
            bail!("the supervisor (pid {pid}) did not stop in time: killed, leftovers removed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(dir.join(SUPERVISOR_PID));
    println!("cluster stopped; nothing of it runs any more");
    Ok(())
}

/// The supervisor's pid, if it still runs.
fn running_supervisor(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join(SUPERVISOR_PID))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0): look at its state too.
    let running = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z');
    // SAFETY: signal 0 only checks the pid.
    running && unsafe { libc::kill(pid, 0) } == 0
}

fn nix_setsid() {
    // SAFETY: see the caller.
    unsafe {
        libc::setsid();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Builds (or finds built) the upstream programs; the path `Upstream::locate`
/// looks in by default.
pub fn prerequisites() -> anyhow::Result<PathBuf> {
    let dir = upstream::default_dir();
    let built = upstream::build(&dir)?;
    eprintln!(
        "[setup] Kubernetes {} control plane, etcd, Helm {} and Istio's CRDs in {}",
        built.kubernetes_version,
        built.helm_version,
        dir.display()
    );
    Ok(dir)
}
