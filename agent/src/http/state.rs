//! What the handlers read: the latest report, the metrics and readiness. The
//! drift engine writes through a [`ReportPublisher`]; handlers only read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use crate::export::Metrics;
use crate::report::Report;

/// Shared state of the HTTP handlers. Cloning is cheap (reference counts).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The latest published report; a watch channel so a reader never blocks the writer.
    pub report: watch::Receiver<Arc<Report>>,
    pub metrics: Arc<Metrics>,
    /// Set by `cli` once the inventory is loaded and the probe attached.
    pub ready: Arc<AtomicBool>,
    /// Why it is not ready yet, when the source can say (a kind it may not
    /// list, an API server it cannot reach).
    pub blockers: Blockers,
}

/// What keeps the agent from being ready, asked when `/readyz` is.
#[derive(Clone)]
pub struct Blockers(Arc<dyn Fn() -> Vec<String> + Send + Sync>);

impl Blockers {
    pub fn new(blockers: impl Fn() -> Vec<String> + Send + Sync + 'static) -> Self {
        Blockers(Arc::new(blockers))
    }

    pub fn now(&self) -> Vec<String> {
        (self.0)()
    }
}

impl Default for Blockers {
    fn default() -> Self {
        Blockers::new(Vec::new)
    }
}

impl std::fmt::Debug for Blockers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Blockers").field(&self.now()).finish()
    }
}

impl AppState {
    /// State serving `initial` until the returned publisher publishes another report.
    /// Readiness starts false.
    pub fn new(initial: Report, metrics: Arc<Metrics>) -> (AppState, ReportPublisher) {
        metrics.update(&initial);
        let (sender, report) = watch::channel(Arc::new(initial));
        let state = AppState {
            report,
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            blockers: Blockers::default(),
        };
        (state, ReportPublisher { sender, metrics })
    }

    /// The latest report, without holding the channel's lock while rendering it.
    pub fn latest(&self) -> Arc<Report> {
        self.report.borrow().clone()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The writing side: publishes a report to the handlers and refreshes the gauges
/// from it in the same step, so `/metrics` and `/report` tell the same story.
#[derive(Debug)]
pub struct ReportPublisher {
    sender: watch::Sender<Arc<Report>>,
    metrics: Arc<Metrics>,
}

impl ReportPublisher {
    pub fn publish(&self, report: Report) {
        self.metrics.update(&report);
        self.sender.send_replace(Arc::new(report));
    }

    /// Another reader of the published reports (for a second server, or tests).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Report>> {
        self.sender.subscribe()
    }
}
