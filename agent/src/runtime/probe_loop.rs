//! The probe loop `run` and `observe` share: the attached kernel programs,
//! their records and sweeps of their flow map, joined into observed flows.
//!
//! Three things wake it: the kernel (only once its ring buffer fills past the
//! wakeup mark, so a busy node does not pay a wakeup per record), a short
//! poll that reads whatever queued below the mark, and the update interval,
//! at which the whole flow map is swept so that every open flow's counters
//! reach the tallies within one interval, also when the flow then idles.

use std::time::Duration;

use tokio::time::{Interval, MissedTickBehavior};

use crate::{
    pipeline::{FlowJoiner, ObservedFlow},
    probe::{
        FlowRecord, KernelLosses, LossCounters, Probe, ProbeConfig, ProbeError, ProbeEvent,
        monotonic_ns,
    },
};

/// Open flows remembered at most by the joiner; closes lost on a large scale
/// cannot grow memory beyond this.
const MAX_OPEN_FLOWS: usize = 1 << 20;

/// How often records queued below the wakeup mark are read: the delay of a
/// close record on a quiet node.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

pub struct ProbeLoop {
    probe: Probe,
    joiner: FlowJoiner,
    records: Vec<ProbeEvent>,
    swept: Vec<FlowRecord>,
    poll: Interval,
    sweep: Interval,
    /// The last loss counters read from the kernel, and failed reads.
    kernel_losses: KernelLosses,
    kernel_read_failed: u64,
    /// A complete sweep ended since [`ProbeLoop::take_swept`] last asked.
    swept_completely: bool,
}

impl ProbeLoop {
    /// Loads and attaches the kernel programs. Needs a tokio runtime. With
    /// `classify_servers` false, server sockets' first bytes are not
    /// classified (their flows are not judged).
    pub fn attach(config: &ProbeConfig, classify_servers: bool) -> Result<Self, ProbeError> {
        let probe = Probe::attach(config)?;
        let mut sweep = tokio::time::interval(config.update_interval);
        // A late sweep is not made up for: the next one reads the same counters.
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        sweep.reset();
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Self {
            probe,
            joiner: if classify_servers {
                FlowJoiner::new(MAX_OPEN_FLOWS)
            } else {
                FlowJoiner::new(MAX_OPEN_FLOWS).client_classification_only()
            },
            records: Vec::with_capacity(4096),
            swept: Vec::new(),
            poll,
            sweep,
            kernel_losses: KernelLosses::default(),
            kernel_read_failed: 0,
            swept_completely: false,
        })
    }

    /// Whether a complete sweep of the flow map ended since the last call:
    /// [`ProbeLoop::is_open`] then answers from it.
    pub fn take_swept(&mut self) -> bool {
        std::mem::take(&mut self.swept_completely)
    }

    /// Whether the flow of `cookie` was in the kernel's flow map at the last
    /// complete sweep (or opened since) and has not closed.
    pub fn is_open(&self, cookie: u64) -> bool {
        self.joiner.is_open(cookie)
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Open flows remembered now.
    pub fn flows_tracked(&self) -> usize {
        self.joiner.tracked()
    }

    /// Every loss so far, kernel and user space (`late` is the drift
    /// engine's to fill). A failed read of the kernel's counters is itself
    /// counted, and the last values read stand.
    pub fn losses(&mut self) -> LossCounters {
        match self.probe.losses() {
            Ok(kernel) => self.kernel_losses = kernel,
            Err(err) => {
                self.kernel_read_failed += 1;
                tracing::warn!(%err, "reading the kernel's loss counters failed");
            }
        }
        let joiner = self.joiner.losses();
        LossCounters {
            kernel: self.kernel_losses,
            flow_table_full: joiner.flow_table_full,
            close_unseen: joiner.close_unseen,
            late: 0,
            kernel_read_failed: self.kernel_read_failed,
        }
    }

    /// Waits for the next batch of kernel records, or the next sweep, and
    /// appends the flow updates and closes they carry to `out`.
    pub async fn read(&mut self, out: &mut Vec<ObservedFlow>) -> Result<(), ProbeError> {
        tokio::select! {
            woken = self.probe.wait_for_wakeup() => woken?,
            _ = self.poll.tick() => {}
            _ = self.sweep.tick() => {
                self.sweep_flows(out);
                return Ok(());
            }
        }
        self.drain(out);
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<ObservedFlow>) {
        self.probe.drain(&mut self.records);
        out.extend(
            self.records
                .drain(..)
                .filter_map(|record| self.joiner.push(record)),
        );
    }

    /// Reads every open flow's counters, then drains the ring buffer, and
    /// joins the two (see `FlowJoiner::sweep`).
    fn sweep_flows(&mut self, out: &mut Vec<ObservedFlow>) {
        let complete = match self.probe.sweep(monotonic_ns(), &mut self.swept) {
            Ok(()) => true,
            Err(err) => {
                self.kernel_read_failed += 1;
                tracing::warn!(%err, "sweeping the kernel's flow map failed; the next sweep tries again");
                false
            }
        };
        self.probe.drain(&mut self.records);
        self.joiner
            .sweep(self.swept.drain(..), self.records.drain(..), complete, out);
        self.swept_completely |= complete;
    }
}
