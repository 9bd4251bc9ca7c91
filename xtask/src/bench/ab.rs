//! The same traffic with and without the agent, alternating A/B over rounds:
//! pod-to-pod bulk throughput, new connections and keep-alive requests, both
//! direct and through HAProxy's mTLS, with the kernel's own run time of each
//! program while the agent is attached.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use meshdrift_lab::{
    AgentProcess, Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls, Wrk,
    iperf::{Iperf3Server, iperf3_bits_per_sec},
    prometheus::free_loopback_port,
};
use serde_json::Value;

use super::stats::{Summary, summary};

const HOST: &str = "server.default.svc.cluster.local";
const PLAIN_PORT: u16 = 8080;
const MTLS_PORT: u16 = 8443;
const POOLED_PROXY_PORT: u16 = 16001;
const NEW_CONNECTION_PROXY_PORT: u16 = 16002;
const IPERF_PORT: u16 = 5201;
/// The file the bulk runs download through the proxy.
const BULK_BYTES: u64 = 64 << 20;

/// One kind of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    Bulk,
    NewConnections,
    KeepAlive,
    ProxiedBulk,
    ProxiedNewConnections,
    ProxiedKeepAlive,
}

impl Workload {
    pub const ALL: [Workload; 6] = [
        Workload::Bulk,
        Workload::NewConnections,
        Workload::KeepAlive,
        Workload::ProxiedBulk,
        Workload::ProxiedNewConnections,
        Workload::ProxiedKeepAlive,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk pod→pod throughput (iperf3)",
            Workload::NewConnections => "new connections/s (wrk, `Connection: close`, nginx)",
            Workload::KeepAlive => "keep-alive requests/s (wrk, nginx)",
            Workload::ProxiedBulk => "bulk through HAProxy mTLS (wrk, 64 MiB responses)",
            Workload::ProxiedNewConnections => {
                "new mTLS connections/s through HAProxy (one upstream connection per request)"
            }
            Workload::ProxiedKeepAlive => "keep-alive requests/s through HAProxy mTLS (pooled)",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Workload::Bulk | Workload::ProxiedBulk => "Gbit/s",
            _ => "/s",
        }
    }
}

/// One run of a workload.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Per workload: the rounds without and with the agent (the kernel's
/// statistics off, so they cost the agent nothing), then one pass with the
/// agent and the statistics on: each program's run time and count, and the
/// traffic of that pass.
#[derive(Debug, Default)]
pub struct AbResults {
    pub without: BTreeMap<Workload, Vec<Sample>>,
    pub with: BTreeMap<Workload, Vec<Sample>>,
    pub ns_per_run: BTreeMap<Workload, BTreeMap<String, (u64, u64)>>,
    pub stats_pass: BTreeMap<Workload, Sample>,
}

impl AbResults {
    /// Ratio with/without per round (rounds pair up in order), summarised.
    pub fn ratio(
        &self,
        workload: Workload,
        metric: impl Fn(&Sample) -> Option<f64>,
    ) -> Option<Summary> {
        let with = self.with.get(&workload)?;
        let without = self.without.get(&workload)?;
        let ratios: Vec<f64> = with
            .iter()
            .zip(without)
            .filter_map(|(w, wo)| Some(metric(w)? / metric(wo)?))
            .collect();
        summary(&ratios)
    }

    pub fn values(
        &self,
        with: bool,
        workload: Workload,
        metric: impl Fn(&Sample) -> Option<f64>,
    ) -> Option<Summary> {
        let runs = if with { &self.with } else { &self.without };
        let values: Vec<f64> = runs.get(&workload)?.iter().filter_map(metric).collect();
        summary(&values)
    }
}

pub struct AbLab {
    _lab: Lab,
    client: Pod,
    server: Pod,
    _nginx: Nginx,
    pooled: Haproxy,
    new_connections: Haproxy,
    _iperf: Iperf3Server,
    manifests: PathBuf,
}

impl AbLab {
    pub fn start() -> anyhow::Result<Self> {
        let lab = Lab::new("bench").context("creating the lab")?;
        let client = lab.add_pod_at("client", 10)?;
        // Thousands of new connections a second from one client: reuse ports
        // in TIME_WAIT, and have all of them.
        client.sysctl(&[
            ("net/ipv4/tcp_tw_reuse", "1"),
            ("net/ipv4/ip_local_port_range", "1024 65535"),
        ])?;
        let server = lab.add_pod_at("server", 11)?;
        let nginx = Nginx::builder("server")
            .http(PLAIN_PORT)
            .tls(MTLS_PORT)
            .verify_client(true)
            .dns_name(HOST)
            .workers(1)
            .bulk(BULK_BYTES)
            .start(&server)?;
        let upstream = || {
            Upstream::new("v1", SocketAddr::new(server.ip(false), MTLS_PORT), 100)
                .tls(UpstreamTls::istio_http(80, "v1", HOST, "client"))
        };
        let pooled = Haproxy::builder(POOLED_PROXY_PORT, ProxyMode::Http)
            .server(upstream())
            .start(&client)?;
        let new_connections = Haproxy::builder(NEW_CONNECTION_PROXY_PORT, ProxyMode::Http)
            .server(upstream())
            .reuse(false)
            .start(&client)?;
        let iperf = Iperf3Server::start(&server, IPERF_PORT)?;
        let manifests = lab.dir().join("manifests");
        write_manifests(&manifests, &client, &server)?;
        Ok(Self {
            _lab: lab,
            client,
            server,
            _nginx: nginx,
            pooled,
            new_connections,
            _iperf: iperf,
            manifests,
        })
    }

    pub fn manifests(&self) -> &Path {
        &self.manifests
    }

    pub fn client(&self) -> &Pod {
        &self.client
    }

    pub fn plain_url(&self) -> String {
        self.server.url("http", false, PLAIN_PORT)
    }

    pub fn run(&self, workload: Workload, duration: Duration) -> anyhow::Result<Sample> {
        let wrk = |url: &str, close: bool, connections: u32| {
            Wrk::new(url)
                .threads(1)
                .connections(connections)
                .duration(duration)
                .new_connection_per_request(close)
                .run(&self.client)
        };
        let from_wrk = |report: meshdrift_lab::WrkReport, bytes: bool| -> anyhow::Result<Sample> {
            if report.socket_errors > 0 || report.non_2xx_3xx > 0 {
                anyhow::bail!(
                    "{workload:?}: {} socket errors and {} failed responses",
                    report.socket_errors,
                    report.non_2xx_3xx
                );
            }
            Ok(Sample {
                rate: if bytes {
                    report.bytes_per_sec * 8.0 / 1e9
                } else {
                    report.requests_per_sec
                },
                p50_ms: Some(report.latency_p50.as_secs_f64() * 1e3),
                p99_ms: Some(report.latency_p99.as_secs_f64() * 1e3),
            })
        };
        match workload {
            Workload::Bulk => Ok(Sample {
                rate: iperf3_bits_per_sec(
                    &self.client,
                    self.server.ip(false),
                    IPERF_PORT,
                    duration,
                )? / 1e9,
                ..Sample::default()
            }),
            Workload::NewConnections => from_wrk(wrk(&self.plain_url(), true, 16)?, false),
            Workload::KeepAlive => from_wrk(wrk(&self.plain_url(), false, 16)?, false),
            Workload::ProxiedBulk => {
                let url = format!("{}bulk", self.pooled.url(false));
                from_wrk(wrk(&url, false, 1)?, true)
            }
            Workload::ProxiedNewConnections => {
                from_wrk(wrk(&self.new_connections.url(false), false, 16)?, false)
            }
            Workload::ProxiedKeepAlive => from_wrk(wrk(&self.pooled.url(false), false, 16)?, false),
        }
    }
}

/// The agent as `meshdrift run` on the bench lab's manifests.
pub fn start_agent(
    meshdrift: &Path,
    manifests: &Path,
) -> anyhow::Result<(AgentProcess, SocketAddr)> {
    let listen = free_loopback_port()?;
    let agent = AgentProcess::start(
        meshdrift,
        &[
            "run",
            "--manifests",
            &manifests.display().to_string(),
            "--listen",
            &listen.to_string(),
        ],
        "agent running",
        Duration::from_secs(60),
    )?;
    Ok((agent, listen))
}

/// Run time and run count of each of meshdrift's programs, from the kernel's
/// statistics (`bpftool prog show`, with `kernel.bpf_stats_enabled=1`).
pub fn program_stats() -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    let programs: Value =
        serde_json::from_slice(&output.stdout).context("parsing bpftool's JSON")?;
    let mut out = BTreeMap::new();
    for program in programs.as_array().into_iter().flatten() {
        let Some(name) = program["name"]
            .as_str()
            .filter(|n| n.starts_with("meshdrift_"))
        else {
            continue;
        };
        let time = program["run_time_ns"].as_u64().unwrap_or(0);
        let count = program["run_cnt"].as_u64().unwrap_or(0);
        let entry = out.entry(name.to_owned()).or_insert((0, 0));
        entry.0 += time;
        entry.1 += count;
    }
    Ok(out)
}

fn write_manifests(dir: &Path, client: &Pod, server: &Pod) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\n  namespace: default\n  labels: {{app: client, security.istio.io/tlsMode: istio}}\n\
         spec:\n  containers: [{{name: client, image: client}}]\nstatus:\n  podIP: {client}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: server\n  namespace: default\n  labels: {{app: server, version: v1, security.istio.io/tlsMode: istio}}\n\
         spec:\n  containers: [{{name: server, image: server, ports: [{{name: http, containerPort: {PLAIN_PORT}}}]}}]\nstatus:\n  podIP: {server}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: server\n  namespace: default\n\
         spec:\n  selector: {{app: server}}\n  ports:\n    - {{name: http, port: 80, targetPort: {PLAIN_PORT}}}\n    - {{name: http-mtls, port: {MTLS_PORT}, targetPort: {MTLS_PORT}}}\n",
        client = client.ipv4(),
        server = server.ipv4(),
    );
    std::fs::write(dir.join("bench.yaml"), yaml)?;
    Ok(())
}
