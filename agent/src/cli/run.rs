//! `meshdrift run`: the agent. Observes every TCP flow on the node, attributes
//! it to a declared split, keeps the drift verdicts, and serves them.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    attribution::{Attribution, Attributor, Mesh},
    cli::{
        duration::parse_duration,
        source::{self, Declared},
    },
    drift::{DriftConfig, DriftEngine},
    export::Metrics,
    http::{self, AppState},
    pipeline::FlowJoiner,
    probe::{LossCounters, Probe, ProbeConfig},
    report::{AgentHealth, Finding, Report},
};

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    sudo meshdrift run --manifests deploy/examples/frontend\n  \
    curl -s localhost:9477/report | jq .splits\n\n\
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
    /// After a declared split changes, traffic this long is not compared with the new weights.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
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
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(agent(args))?;
    Ok(ExitCode::SUCCESS)
}

struct Agent {
    node: String,
    started: Instant,
    window: Duration,
    engine: DriftEngine,
    attributor: Attributor,
    joiner: FlowJoiner,
    metrics: Arc<Metrics>,
    load_findings: Vec<Finding>,
    excluded: BTreeMap<String, u64>,
}

impl Agent {
    fn use_declared(&mut self, declared: &Declared) {
        self.attributor.set_mesh(Arc::clone(&declared.mesh));
        self.load_findings = declared.load_findings.clone();
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn report(&mut self, losses: &LossCounters) -> Report {
        let now = self.now();
        self.engine.expire(now);
        let snapshot = self.engine.snapshot(now);
        let mesh = Arc::clone(self.attributor.mesh());
        let mut findings = self.load_findings.clone();
        findings.extend(mesh.findings.iter().cloned());
        findings.extend(self.attributor.findings());
        Report {
            generated_at: rfc3339_now(),
            node: self.node.clone(),
            window_seconds: self.window.as_secs(),
            splits: snapshot.splits,
            transport: snapshot.transport,
            unexpected: snapshot.unexpected,
            findings,
            agent: AgentHealth {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: self.started.elapsed().as_secs(),
                lost_events: BTreeMap::from([
                    ("ringbuf_full".to_owned(), losses.ringbuf_full),
                    (
                        "payload_ringbuf_full".to_owned(),
                        losses.payload_ringbuf_full,
                    ),
                    ("flow_map_insert".to_owned(), losses.flow_map_insert),
                    ("flow_evicted".to_owned(), losses.flow_evicted),
                    ("malformed".to_owned(), losses.malformed),
                ]),
                flows_tracked: self.joiner.tracked() as u64,
                inventory: mesh.inventory.clone(),
                excluded_flows: self.excluded.clone(),
            },
        }
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn node_name(args: &RunArgs) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    })
}

async fn agent(args: RunArgs) -> anyhow::Result<()> {
    let drift_config = DriftConfig {
        window: args.window,
        grace: args.grace,
        alpha: args.alpha,
        tolerance: args.tolerance,
        min_samples: args.min_samples,
        ..DriftConfig::default()
    };
    // Signal streams created once buffer a signal that arrives while events are
    // being processed; a fresh `ctrl_c()` future per loop turn could miss it.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    let engine = DriftEngine::new(drift_config).context("invalid drift settings")?;
    let (mut declared_feed, _source) = match &args.manifests {
        Some(dir) => source::files(dir.clone(), args.reload_interval)?,
        None => source::kubernetes().await?,
    };
    let metrics = Arc::new(Metrics::new());
    let mut agent = Agent {
        node: node_name(&args),
        started: Instant::now(),
        window: args.window,
        engine,
        attributor: Attributor::new(Arc::new(Mesh::empty())),
        joiner: FlowJoiner::new(1 << 20),
        metrics: Arc::clone(&metrics),
        load_findings: Vec::new(),
        excluded: BTreeMap::new(),
    };
    let (state, publisher) =
        AppState::new(agent.report(&LossCounters::default()), Arc::clone(&metrics));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state.clone(), async {
        let _ = http_stopped.await;
    }));

    if declared_feed.borrow().is_none() {
        eprintln!(
            "meshdrift: waiting for the first list of Pods, Services, EndpointSlices, Namespaces and Istio resources"
        );
    }
    let first = tokio::select! {
        first = declared_feed.wait_for(Option::is_some) => {
            first.context("the inventory source stopped before its first load")?.clone()
        }
        _ = sigint.recv() => return Ok(()),
        _ = sigterm.recv() => return Ok(()),
    };
    if let Some(declared) = first {
        agent.use_declared(&declared);
    }
    let mut probe = Probe::attach(&ProbeConfig {
        cgroup: args.cgroup.clone(),
        update_interval: args.update_interval,
        ring_buffer_bytes: args.ring_buffer_bytes,
    })?;
    state.set_ready(true);
    eprintln!(
        "meshdrift: agent running on node {} — observing TCP flows under cgroup {}, serving http://{}/ (Ctrl-C to stop)",
        agent.node,
        probe.cgroup().display(),
        args.listen
    );

    let mut publish_tick = tokio::time::interval(Duration::from_secs(1));
    let mut events = Vec::with_capacity(1024);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            read = probe.read_events(&mut events) => {
                if let Err(err) = read {
                    break Err(err.into());
                }
                let now = agent.now();
                for event in events.drain(..) {
                    let Some(flow) = agent.joiner.push(event) else { continue };
                    match agent.attributor.attribute(&flow, now) {
                        Attribution::Counted { observation, declared } => {
                            agent.engine.declare(&observation.key, &declared, now);
                            agent.engine.observe(&observation);
                            agent.metrics.record(&observation);
                        }
                        Attribution::Excluded { reason, first: true } => {
                            *agent.excluded.entry(reason.as_str().to_owned()).or_default() += 1;
                        }
                        Attribution::Excluded { .. } | Attribution::ServerSide => {}
                    }
                }
            }
            _ = publish_tick.tick() => {
                let losses = probe.losses().unwrap_or_default();
                publisher.publish(agent.report(&losses));
            }
            changed = declared_feed.changed() => {
                if changed.is_err() {
                    break Err(anyhow::anyhow!("the inventory source stopped"));
                }
                let latest = declared_feed.borrow_and_update().clone();
                if let Some(declared) = latest {
                    agent.use_declared(&declared);
                }
            }
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };
    state.set_ready(false);
    let losses = probe.losses().unwrap_or_default();
    drop(probe);
    let _ = stop_http.send(());
    if let Ok(Err(err)) = server.await {
        tracing::warn!(%err, "HTTP server stopped with an error");
    }
    eprintln!(
        "meshdrift: stopped; lost records: ring buffer full {}, payload ring buffer full {}, flow map insert {}, flow evicted {}, malformed {}",
        losses.ringbuf_full,
        losses.payload_ringbuf_full,
        losses.flow_map_insert,
        losses.flow_evicted,
        losses.malformed
    );
    outcome
}
