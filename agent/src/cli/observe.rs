//! `meshdrift observe`: stream every TCP flow the kernel sees.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::duration::parse_duration,
    cli::output::{self, OutputError, Stdout},
    cli::terminal::TerminalText,
    inventory::{self, Index},
    pipeline::ObservedFlow,
    probe::{FlowKind, LossCounters, ProbeConfig},
    runtime::{ProbeLoop, Shutdown},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sudo meshdrift observe\n  \
    sudo meshdrift observe --output json --manifests deploy/examples/frontend\n\n\
    src/dst are the connection's client and server ends, whichever socket the record \
    is for; counters are cumulative for the flow. Long-lived flows report an update \
    every --update-interval while they carry traffic, and every flow reports once when \
    it closes. A connect that never reached ESTABLISHED is a `failed` line, refused \
    (answered by a reset) or timed out (its SYN was retransmitted). Loss counters are \
    printed on exit.")]
pub struct ObserveArgs {
    /// Output format: an aligned table, or one JSON object per line.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: ObserveFormat,
    /// Directory of Kubernetes manifests (Pods with status.podIP) used to name pods.
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// cgroup v2 directory to attach to [default: the hierarchy's root, from /proc/self/mountinfo].
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Interval between cumulative updates of a long-lived flow (`10s`, `500ms`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub update_interval: Duration,
    /// Kernel ring-buffer size in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = meshdrift_ebpf::DEFAULT_RING_BUFFER_BYTES)]
    pub ring_buffer_bytes: u32,
    /// Stop after this long (`30s`, `5m`) [default: run until Ctrl-C or SIGTERM].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObserveFormat {
    Table,
    Json,
}

pub fn run(args: ObserveArgs) -> anyhow::Result<ExitCode> {
    let index = match &args.manifests {
        Some(dir) => Some(load_index(dir)?),
        None => None,
    };
    let config = ProbeConfig {
        cgroup: args.cgroup.clone(),
        update_interval: args.update_interval,
        ring_buffer_bytes: args.ring_buffer_bytes,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(observe(config, args.output, index, args.duration))
}

fn load_index(dir: &std::path::Path) -> anyhow::Result<Index> {
    let outcome = inventory::files::load_dir(dir)?;
    for problem in &outcome.problems {
        output::warn(&format!("warning: {problem}"));
    }
    Ok(Index::from_objects(outcome.objects))
}

async fn observe(
    config: ProbeConfig,
    format: ObserveFormat,
    index: Option<Index>,
    duration: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let mut shutdown = Shutdown::install().context("installing the signal handlers")?;
    let mut probe_loop = ProbeLoop::attach(&config, true)?;
    output::warn(&format!(
        "meshdrift: observing TCP flows under cgroup {} (Ctrl-C to stop)",
        probe_loop.probe().cgroup().display()
    ));
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let mut printer = Printer::new(format, index);
    let mut flows = Vec::with_capacity(1024);
    let mut flows_seen: u64 = 0;
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            read = probe_loop.read(&mut flows) => {
                if let Err(err) = read {
                    break Err(err.into());
                }
                let printed = flows.drain(..).try_for_each(|flow| {
                    if flow.record.kind == FlowKind::Close {
                        flows_seen += 1;
                    }
                    printer.record(&flow)
                });
                if let Err(err) = printed.and_then(|()| printer.out.flush()) {
                    break Err(err.into());
                }
                // The reader went away (`| head`): nothing left to do.
                if printer.out.is_closed() {
                    break Ok(());
                }
            }
            () = shutdown.requested() => break Ok(()),
            () = &mut deadline => break Ok(()),
        }
    };
    let losses = probe_loop.losses();
    drop(probe_loop);
    printer.summary(&losses, flows_seen);
    outcome?;
    Ok(ExitCode::SUCCESS)
}

/// One line of `observe --output json`.
#[derive(Debug, Serialize)]
struct FlowLine<'a> {
    /// `update`, `close` or `failed`.
    event: &'static str,
    /// Why a `failed` connect failed: `refused` or `timed_out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'static str>,
    role: &'static str,
    src: String,
    dst: String,
    /// Where the client's packets really went when a nat rule in its own
    /// namespace rewrote `dst` (a sidecar's REDIRECT).
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_pod: Option<String>,
    transport: crate::wire::Transport,
    sni: Option<&'a str>,
    alpn: &'a [String],
    tls_versions: &'a [String],
    sni_host: Option<&'a str>,
    sni_port: Option<u16>,
    sni_subset: Option<&'a str>,
    /// Request turns: client data that follows server data.
    exchanges: u64,
    bytes_sent: u64,
    bytes_received: u64,
    /// Write bursts (data segments with PSH) of each end.
    client_pushes: u64,
    server_pushes: u64,
    /// TLS application-data records the client began, when known.
    client_records: Option<u64>,
    /// Open before the agent started: counted from then on, role inferred.
    adopted: bool,
    duration_ms: u64,
    cookie: u64,
    cgroup_id: u64,
    uid: u32,
}

#[derive(Debug, Serialize)]
struct SummaryLine {
    event: &'static str,
    flows_closed: u64,
    lost: LossCounters,
    lost_total: u64,
}

struct Printer {
    format: ObserveFormat,
    index: Option<Index>,
    out: Stdout,
    header_done: bool,
}

impl Printer {
    fn new(format: ObserveFormat, index: Option<Index>) -> Self {
        Self {
            format,
            index,
            out: Stdout::default(),
            header_done: false,
        }
    }

    fn pod_name(&self, addr: SocketAddr) -> Option<String> {
        let pod = self.index.as_ref()?.pod_by_ip(addr.ip())?;
        Some(format!("{}/{}", pod.namespace, pod.name))
    }

    fn record(&mut self, flow: &ObservedFlow) -> Result<(), OutputError> {
        let text = self.render(flow);
        self.out.write_str(&text)
    }

    /// The line (with the table's header before the first row) for one flow.
    fn render(&mut self, flow: &ObservedFlow) -> String {
        let record = &flow.record;
        let class = &flow.classification;
        let istio = class.istio.as_ref();
        let (event, failure) = match record.kind {
            FlowKind::Update => ("update", None),
            FlowKind::Close => ("close", None),
            FlowKind::ConnectFailed { timed_out: false } => ("failed", Some("refused")),
            FlowKind::ConnectFailed { timed_out: true } => ("failed", Some("timed_out")),
        };
        let line = FlowLine {
            event,
            failure,
            role: record.role.as_str(),
            src: record.client().to_string(),
            dst: record.server().to_string(),
            nat: record.nat.map(|to| to.to_string()),
            src_pod: self.pod_name(record.client()),
            dst_pod: self.pod_name(record.server()),
            transport: class.transport,
            sni: class.sni.as_deref(),
            alpn: &class.alpn,
            tls_versions: &class.tls_versions,
            sni_host: istio.map(|sni| sni.host.as_str()),
            sni_port: istio.map(|sni| sni.port),
            sni_subset: istio.and_then(|sni| sni.subset.as_deref()),
            exchanges: record.counters.requests,
            bytes_sent: record.bytes_sent(),
            bytes_received: record.bytes_received(),
            client_pushes: record.counters.client_pushes,
            server_pushes: record.counters.server_pushes,
            client_records: record.counters.client_records,
            adopted: record.adopted,
            duration_ms: record.duration_ms(),
            cookie: record.cookie,
            cgroup_id: record.cgroup_id,
            uid: record.uid,
        };
        match self.format {
            ObserveFormat::Json => json_line(&line),
            ObserveFormat::Table => self.table_row(&line),
        }
    }

    fn table_row(&mut self, line: &FlowLine<'_>) -> String {
        let mut out = TerminalText::default();
        if !self.header_done {
            self.header_done = true;
            out.line(format_args!(
                "{:<6} {:<6} {:<40} {:<40} {:<10} {:<8} {:>6} {:>10} {:>10} {:>8}  PODS",
                "EVENT",
                "ROLE",
                "SRC",
                "DST",
                "TRANSPORT",
                "SUBSET",
                "EXCH",
                "SENT",
                "RECEIVED",
                "MS"
            ));
        }
        let pods = match (&line.src_pod, &line.dst_pod) {
            (None, None) => String::new(),
            (src, dst) => format!(
                "{} -> {}",
                src.as_deref().unwrap_or("?"),
                dst.as_deref().unwrap_or("?")
            ),
        };
        if let Some(failure) = line.failure {
            // No transport, subset or counters: the connection never carried
            // a byte. Why it failed stands where its transport would.
            out.line(format_args!(
                "{:<6} {:<6} {:<40} {:<40} {:<10} {:<8} {:>6} {:>10} {:>10} {:>8}  {}",
                line.event,
                line.role,
                line.src,
                line.dst,
                failure.replace('_', " "),
                "-",
                "-",
                "-",
                "-",
                "-",
                pods
            ));
            return out.into_string();
        }
        out.line(format_args!(
            "{:<6} {:<6} {:<40} {:<40} {:<10} {:<8} {:>6} {:>10} {:>10} {:>8}  {}",
            line.event,
            line.role,
            line.src,
            line.dst,
            line.transport.to_string(),
            line.sni_subset.unwrap_or("-"),
            line.exchanges,
            line.bytes_sent,
            line.bytes_received,
            line.duration_ms,
            pods
        ));
        out.into_string()
    }

    fn summary(&mut self, losses: &LossCounters, flows_closed: u64) {
        match self.format {
            ObserveFormat::Json => {
                let line = SummaryLine {
                    event: "summary",
                    flows_closed,
                    lost: *losses,
                    lost_total: losses.total(),
                };
                // A failed write was reported when the stream stopped.
                let _ = self.out.write_str(&json_line(&line));
            }
            ObserveFormat::Table => {}
        }
        let _ = self.out.flush();
        output::warn(&format!(
            "meshdrift: {flows_closed} flows closed; lost records: {losses}"
        ));
    }
}

/// One JSON object and its newline.
fn json_line(line: &impl Serialize) -> String {
    // Plain structs of strings and numbers always serialise; say so if not.
    let json = serde_json::to_string(line)
        .unwrap_or_else(|err| serde_json::json!({ "error": err.to_string() }).to_string());
    json + "\n"
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        pipeline::FlowDelta,
        probe::{FlowCounters, FlowRecord, Role},
        wire,
    };

    fn observed(kind: FlowKind) -> ObservedFlow {
        ObservedFlow {
            record: FlowRecord {
                kind,
                cookie: 9,
                cgroup_id: 0,
                uid: 0,
                role: Role::Client,
                local: "10.0.0.1:40000".parse().unwrap(),
                remote: "10.0.0.2:8081".parse().unwrap(),
                start_ns: 0,
                time_ns: 0,
                counters: FlowCounters::default(),
                adopted: false,
                nat: None,
            },
            classification: Arc::new(wire::classify(&[])),
            delta: FlowDelta {
                counters: FlowCounters::default(),
                first: true,
            },
        }
    }

    #[test]
    fn a_failed_connect_is_its_own_line_with_why() {
        let mut table = Printer::new(ObserveFormat::Table, None);
        let refused = table.render(&observed(FlowKind::ConnectFailed { timed_out: false }));
        let row = refused.lines().nth(1).unwrap();
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            fields[..5],
            [
                "failed",
                "client",
                "10.0.0.1:40000",
                "10.0.0.2:8081",
                "refused"
            ],
            "{row}"
        );
        let timed_out = table.render(&observed(FlowKind::ConnectFailed { timed_out: true }));
        assert!(timed_out.starts_with("failed "), "{timed_out}");
        assert!(timed_out.contains(" timed out "), "{timed_out}");

        let mut json = Printer::new(ObserveFormat::Json, None);
        let line: serde_json::Value = serde_json::from_str(
            &json.render(&observed(FlowKind::ConnectFailed { timed_out: true })),
        )
        .unwrap();
        assert_eq!(line["event"], "failed");
        assert_eq!(line["failure"], "timed_out");
        assert_eq!(line["src"], "10.0.0.1:40000");
        assert_eq!(line["dst"], "10.0.0.2:8081");
        let close: serde_json::Value =
            serde_json::from_str(&json.render(&observed(FlowKind::Close))).unwrap();
        assert_eq!(close["event"], "close");
        assert!(close.get("failure").is_none());
    }
}
