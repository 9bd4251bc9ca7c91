//! `meshdrift run`: the agent's flags, turned into an [`AgentConfig`] for
//! [`runtime::run`](crate::runtime::run).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::duration::{parse_duration, parse_duration_or_zero},
    drift::DriftConfig,
    http::TlsFiles,
    probe::ProbeConfig,
    runtime::{self, AgentConfig, AuthMode},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    sudo meshdrift run --manifests deploy/examples/frontend\n  \
    curl -s localhost:9477/report | jq .splits\n\n\
    In a cluster with --auth kubernetes:\n  \
    curl -s -H \"Authorization: Bearer $(kubectl create token prometheus -n monitoring)\" \
    http://AGENT:9477/metrics\n\n\
    Drift is flagged only when the goodness-of-fit test (p < --alpha) and the practical \
    tolerance (a subset's share off by more than --tolerance) agree, after --min-samples. \
    Traffic to a subset declared at weight 0, or to a destination the route does not \
    declare, is flagged at once.")]
pub struct RunArgs {
    /// Directory of Kubernetes and Istio manifests (Pods with status.podIP, Services,
    /// VirtualServices, DestinationRules, PeerAuthentications); re-read when it changes.
    /// Without it the agent watches the Kubernetes API (in-cluster service account,
    /// else kubeconfig).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// Address of the HTTP server: /metrics, /report, / (report page), /healthz, /readyz.
    #[arg(long, default_value = "0.0.0.0:9477")]
    pub listen: SocketAddr,
    /// cgroup v2 directory to attach to [default: the hierarchy's root].
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// This node's name, shown in the report [default: the host name].
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Sliding window of the verdicts.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub window: Duration,
    /// After a declared split changes, traffic this long is not compared with the new
    /// weights (0s compares at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration_or_zero)]
    pub grace: Duration,
    /// Significance level of the goodness-of-fit test.
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// Practical tolerance: the absolute difference of a subset's share that matters.
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// Fewest requests (http routes) or connections (tcp/tls routes) before a split is tested.
    #[arg(long, default_value_t = DriftConfig::default().min_samples)]
    pub min_samples: u64,
    /// How often a long-lived flow reports its counters from the kernel.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub update_interval: Duration,
    /// How often the manifests directory (--manifests) is checked for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// Kernel ring-buffer size in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = meshdrift_ebpf::DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,
    /// Who may read /, /report and /metrics. `kubernetes`: callers send a bearer
    /// token, checked with a TokenReview and authorised with a SubjectAccessReview
    /// (verb get on the path as a non-resource URL); 401 without a valid token, 403
    /// without the grant. /healthz and /readyz stay open.
    #[arg(long, value_enum, default_value = "none")]
    pub auth: AuthMode,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key-file).
    #[arg(long, value_name = "FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --tls-cert-file.
    #[arg(long, value_name = "FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig {
        node: node_name(&args),
        manifests: args.manifests,
        reload_interval: args.reload_interval,
        listen: args.listen,
        auth: args.auth,
        tls: match (args.tls_cert_file, args.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        },
        drift: DriftConfig {
            window: args.window,
            grace: args.grace,
            alpha: args.alpha,
            tolerance: args.tolerance,
            min_samples: args.min_samples,
            ..DriftConfig::default()
        },
        probe: ProbeConfig {
            cgroup: args.cgroup,
            update_interval: args.update_interval,
            ring_buffer_bytes: args.ring_buffer_bytes,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Named after the agent, so `top -H` and profiles show whose threads they are.
        .thread_name("meshdrift")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(runtime::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn node_name(args: &RunArgs) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    })
}
