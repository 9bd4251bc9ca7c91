//! The running agent: waits for the declared world, attaches the probe, and
//! turns kernel events into verdicts served over HTTP until a signal stops it.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use super::{
    Shutdown,
    agent::Agent,
    declared::{self, DeclaredUpdate},
    keeper::Keeper,
    probe_loop::ProbeLoop,
};
use crate::{
    drift::{DriftConfig, DriftEngine},
    export::Metrics,
    http::{self, AppState, Blockers, ServeOptions, TlsFiles, auth},
    inventory::kube::SourceHealth,
    pipeline::ObservedFlow,
    probe::{LossCounters, ProbeConfig},
};

/// Who may read the report and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone who reaches the port (keep it behind a NetworkPolicy).
    #[default]
    None,
    /// Callers the Kubernetes API server authenticates (TokenReview) and
    /// authorises (SubjectAccessReview) for the path.
    Kubernetes,
}

/// Everything the agent needs to know; the CLI fills it from its flags.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// A directory of manifests, re-read when it changes; the Kubernetes API when `None`.
    pub manifests: Option<PathBuf>,
    /// How often the manifest directory is checked for changes.
    pub reload_interval: Duration,
    /// Address of the HTTP server.
    pub listen: SocketAddr,
    /// Who may read the report and the metrics.
    pub auth: AuthMode,
    /// Serve HTTPS with these files instead of HTTP.
    pub tls: Option<TlsFiles>,
    /// This node's name, shown in the report.
    pub node: String,
    pub drift: DriftConfig,
    pub probe: ProbeConfig,
}

/// How often the report (and the gauges derived from it) is refreshed.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a kernel record waits before it is attributed when the
/// inventory comes from the API server: the watch delivers a change a
/// little after it happened and the source batches changes once a second,
/// so a pod created (or deleted) just before a connection is in the
/// inventory by the time that connection is attributed.
const INVENTORY_SETTLE: Duration = Duration::from_secs(2);

/// Runs the agent until SIGINT or SIGTERM; detaches everything before returning.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install().context("installing the signal handlers")?;
    // Before anything waits on the API server: a missing capability is the
    // first and only thing said.
    crate::probe::check_capabilities()?;
    let serve_options = serve_options(&config).await?;
    let engine = DriftEngine::new(config.drift.clone()).context("invalid drift settings")?;
    let health = SourceHealth::default();
    let (mut declared_feed, _source) = match &config.manifests {
        Some(dir) => declared::files(dir.clone(), config.reload_interval)?,
        None => declared::kubernetes(health.clone()).await?,
    };
    let metrics = Arc::new(Metrics::new());
    let mut agent = Agent::new(config.node.clone(), engine, Arc::clone(&metrics));
    agent.set_update_interval(config.probe.update_interval);
    let (mut state, publisher) = AppState::new(
        agent.report(LossCounters::default(), 0),
        Arc::clone(&metrics),
    );
    state.blockers = Blockers::new(move || health.problems());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, state.clone(), serve_options, async {
        let _ = http_stopped.await;
    }));

    if config.manifests.is_none() {
        eprintln!(
            "meshdrift: waiting for the first list of Pods, Services, EndpointSlices, Namespaces and Istio resources"
        );
    }
    let mut keeper = Keeper::default();
    let first = tokio::select! {
        first = declared_feed.recv() => {
            first.context("the inventory source stopped before its first load")?
        }
        () = shutdown.requested() => return Ok(()),
    };
    if !matches!(first, DeclaredUpdate::Replace(_)) {
        anyhow::bail!("the inventory source began with a change, not a whole load");
    }
    keeper.receive(&mut agent, first);
    let mut probe_loop = ProbeLoop::attach(&config.probe, false)?;
    agent.counting_since(probe_loop.probe().attached_at());
    state.set_ready(true);
    eprintln!(
        "meshdrift: agent running on node {} — observing TCP flows under cgroup {}, serving http://{}/ (Ctrl-C to stop)",
        agent.node(),
        probe_loop.probe().cgroup().display(),
        config.listen
    );

    let mut publish_tick = tokio::time::interval(PUBLISH_INTERVAL);
    let mut flows = Vec::with_capacity(1024);
    let mut waiting = Waiting::new(if config.manifests.is_some() {
        Duration::ZERO
    } else {
        INVENTORY_SETTLE
    });
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            read = probe_loop.read(&mut flows) => {
                if let Err(err) = read {
                    break Err(err.into());
                }
                waiting.extend(flows.drain(..));
                waiting.consume_due(&mut agent);
                if probe_loop.take_swept() {
                    // A record still waiting speaks for its connection.
                    let pending = waiting.cookies();
                    agent.forget_vanished_connections(|cookie| {
                        probe_loop.is_open(cookie) || pending.contains(&cookie)
                    });
                }
            }
            _ = publish_tick.tick() => {
                waiting.consume_due(&mut agent);
                keeper.tick(&agent);
                if state.blockers.now().is_empty() {
                    metrics.inventory_synced(std::time::SystemTime::now());
                }
                let losses = probe_loop.losses();
                publisher.publish(agent.report(losses, probe_loop.flows_tracked()));
            }
            update = declared_feed.recv() => {
                let Some(update) = update else {
                    break Err(anyhow::anyhow!("the inventory source stopped"));
                };
                keeper.receive(&mut agent, update);
            }
            findings = keeper.checked() => keeper.finish_check(&mut agent, findings),
            () = shutdown.requested() => break Ok(()),
        }
    };
    state.set_ready(false);
    let losses = probe_loop.losses();
    drop(probe_loop);
    let _ = stop_http.send(());
    if let Ok(Err(err)) = server.await {
        tracing::warn!(%err, "HTTP server stopped with an error");
    }
    eprintln!("meshdrift: stopped; lost records: {losses}");
    outcome
}

/// The certificate and the API server client the HTTP server needs, loaded
/// before the agent waits for anything, so a wrong file or a missing
/// client is said at start.
async fn serve_options(config: &AgentConfig) -> anyhow::Result<ServeOptions> {
    let tls = match &config.tls {
        Some(files) => Some(http::load_tls(files).await?),
        None => None,
    };
    let gate = match config.auth {
        AuthMode::None => None,
        AuthMode::Kubernetes => {
            let client = kube::Client::try_default().await.context(
                "--auth kubernetes reviews callers' tokens with the API server, but no client \
                 could be set up (in-cluster service account or kubeconfig)",
            )?;
            Some(Arc::new(auth::Gate::new(auth::KubeReviewer::new(client))))
        }
    };
    Ok(ServeOptions { gate, tls })
}

/// Kernel records waiting for the inventory to catch up, oldest first.
struct Waiting {
    delay: Duration,
    queue: std::collections::VecDeque<(std::time::Instant, ObservedFlow)>,
}

impl Waiting {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            queue: std::collections::VecDeque::new(),
        }
    }

    fn extend(&mut self, flows: impl Iterator<Item = ObservedFlow>) {
        let due = std::time::Instant::now() + self.delay;
        self.queue.extend(flows.map(|flow| (due, flow)));
    }

    /// The sockets with a record still waiting.
    fn cookies(&self) -> foldhash::HashSet<u64> {
        self.queue
            .iter()
            .map(|(_, flow)| flow.record.cookie)
            .collect()
    }

    /// Attributes every record whose wait is over, in arrival order.
    fn consume_due(&mut self, agent: &mut Agent) {
        let now = std::time::Instant::now();
        while self.queue.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, flow)) = self.queue.pop_front() {
                agent.consume(&flow);
            }
        }
    }
}
