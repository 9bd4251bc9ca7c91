//! The agent's state between kernel events: attribution, the drift engine and
//! the metrics, and the report assembled from them.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use super::declared::Declared;
use crate::{
    attribution::{Attribution, Attributor, Mesh},
    drift::DriftEngine,
    export::Metrics,
    findings::Finding,
    pipeline::ObservedFlow,
    probe::{LossCounters, monotonic_ns},
    report::{AgentHealth, Report},
    traffic::{TrafficConfig, TrafficJudge},
};

/// What the agent keeps between kernel events. The event loop drives it; the
/// pipeline benchmark drives it with synthetic records.
pub struct Agent {
    node: String,
    started: Instant,
    window: Duration,
    engine: DriftEngine,
    traffic: TrafficJudge,
    attributor: Attributor,
    metrics: Arc<Metrics>,
    load_findings: Vec<Finding>,
    excluded: BTreeMap<String, u64>,
    counting_since: Option<String>,
}

impl Agent {
    pub fn new(node: String, engine: DriftEngine, metrics: Arc<Metrics>) -> Self {
        let started = Instant::now();
        let mut attributor = Attributor::new(Arc::new(Mesh::empty()));
        attributor.set_clock_origin(monotonic_ns());
        let drift = engine.config();
        let traffic = TrafficJudge::new(TrafficConfig {
            window: drift.window,
            alpha: drift.alpha,
            tolerance: drift.tolerance,
            min_samples: drift.min_samples,
            ..TrafficConfig::default()
        });
        Self {
            node,
            started,
            window: engine.config().window,
            engine,
            traffic,
            attributor,
            metrics,
            load_findings: Vec::new(),
            excluded: BTreeMap::new(),
            counting_since: None,
        }
    }

    /// How often the flow map is swept: the traffic checks wait one sweep
    /// (and a second) before they judge the order of events.
    pub fn set_update_interval(&mut self, interval: Duration) {
        let config = TrafficConfig {
            settle: interval + Duration::from_secs(1),
            ..self.traffic.config().clone()
        };
        self.traffic = TrafficJudge::new(config);
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn use_declared(&mut self, declared: &Declared) {
        self.attributor.set_mesh(Arc::clone(&declared.mesh));
        self.load_findings = declared.load_findings.clone();
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        self.attributor.mesh()
    }

    /// The mesh to update in place, unless something else holds it.
    pub fn mesh_mut(&mut self) -> Option<&mut Mesh> {
        self.attributor.mesh_mut()
    }

    /// Seconds since the agent started: the drift engine's clock.
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Attributes one observed flow and tallies what it carried.
    pub fn consume(&mut self, flow: &ObservedFlow) {
        let now = self.now();
        match self.attributor.attribute(flow, now) {
            Attribution::Counted {
                observation,
                declared,
                connection,
            } => {
                self.engine.declare(&observation.key, &declared, now);
                self.engine.observe(&observation);
                self.metrics.record(&observation);
                if let Some(connection) = connection {
                    self.traffic.observe(&connection);
                }
            }
            Attribution::FailedAttempt { connection } => self.traffic.observe(&connection),
            Attribution::Bypass { observation } => {
                self.engine.observe(&observation);
                self.metrics.record(&observation);
            }
            // Shown in the report, kept out of the metrics the split,
            // transport and bypass alerts read.
            Attribution::Ambient { observation } => self.engine.observe(&observation),
            Attribution::Excluded {
                reason,
                first: true,
            } => {
                *self.excluded.entry(reason.as_str().to_owned()).or_default() += 1;
            }
            Attribution::Excluded { .. } | Attribution::ServerSide | Attribution::Pending => {}
        }
    }

    /// Forgets the open connections the kernel's flow map no longer holds
    /// although their close record was lost, so they stop counting as open.
    pub fn forget_vanished_connections(&mut self, is_open: impl Fn(u64) -> bool) {
        let now = self.now();
        self.traffic.retain_open(now, is_open);
    }

    /// Records when the kernel programs began to count.
    pub fn counting_since(&mut self, attached_at: std::time::SystemTime) {
        self.counting_since = Some(rfc3339_millis(attached_at));
    }

    /// The verdicts over the window ending now, with the agent's health.
    pub fn report(&mut self, mut losses: LossCounters, flows_tracked: usize) -> Report {
        losses.late = self.engine.late_dropped();
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
            bypass: snapshot.bypass,
            ambient: snapshot.ambient,
            policies: self.traffic.snapshot(now),
            findings,
            agent: AgentHealth {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: self.started.elapsed().as_secs(),
                counting_since: self.counting_since.clone(),
                lost_events: losses.by_reason(),
                flows_tracked: flows_tracked as u64,
                inventory: mesh.inventory.clone(),
                excluded_flows: self.excluded.clone(),
            },
            pods: snapshot.pods,
            nodes: Vec::new(),
        }
    }
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// RFC 3339 in UTC with milliseconds: `2026-12-01T21:04:05.123Z`.
fn rfc3339_millis(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_else(|_| "unknown".to_owned())
}
