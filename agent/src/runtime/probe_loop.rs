//! The probe loop `run` and `observe` share: the attached kernel programs,
//! their records decoded and joined into observed flows.

use crate::{
    pipeline::{FlowJoiner, ObservedFlow},
    probe::{LossCounters, Probe, ProbeConfig, ProbeError, ProbeEvent},
};

/// Open flows remembered at most by the joiner; closes lost on a large scale
/// cannot grow memory beyond this.
const MAX_OPEN_FLOWS: usize = 1 << 20;

pub struct ProbeLoop {
    probe: Probe,
    joiner: FlowJoiner,
    records: Vec<ProbeEvent>,
}

impl ProbeLoop {
    /// Loads and attaches the kernel programs. Needs a tokio runtime.
    pub fn attach(config: &ProbeConfig) -> Result<Self, ProbeError> {
        Ok(Self {
            probe: Probe::attach(config)?,
            joiner: FlowJoiner::new(MAX_OPEN_FLOWS),
            records: Vec::with_capacity(1024),
        })
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Open flows remembered now.
    pub fn flows_tracked(&self) -> usize {
        self.joiner.tracked()
    }

    /// Flows the joiner forgot because its table was full.
    pub fn joiner_evicted(&self) -> u64 {
        self.joiner.evicted()
    }

    /// Lost records, kernel and user space.
    pub fn losses(&self) -> Result<LossCounters, ProbeError> {
        self.probe.losses()
    }

    /// Waits for kernel records and appends the flow updates and closes they
    /// carry to `out`.
    pub async fn read(&mut self, out: &mut Vec<ObservedFlow>) -> Result<(), ProbeError> {
        self.probe.read_events(&mut self.records).await?;
        out.extend(
            self.records
                .drain(..)
                .filter_map(|record| self.joiner.push(record)),
        );
        Ok(())
    }
}
