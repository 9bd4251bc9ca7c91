//! Transport verdicts: what the policy expects on the wire for an endpoint
//! against what the first client bytes showed, counted per connection.

use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::observation::{
    ExpectedTransport, SplitKey, TransportOutcome, Workload, judge_transport,
};
use crate::report::TransportVerdict;

use super::window::{Cell, Counts, Target};

#[derive(Debug, Default)]
struct Group {
    /// Connections by observed transport.
    observed: BTreeMap<String, u64>,
    violations: u64,
    mismatches: u64,
    violating_traffic: bool,
    mismatching_traffic: bool,
}

impl Group {
    fn add(&mut self, cell: &Cell, counts: &Counts) {
        *self
            .observed
            .entry(cell.transport.as_str().to_owned())
            .or_default() += counts.connections;
        // Connections are counted once, when the flow's account opens; later
        // increments (connections == 0) still show the transport in use within the
        // window, so a pooled plaintext connection opened before the window keeps
        // its verdict flagged even though it adds nothing to the counts.
        match judge_transport(cell.expected, cell.transport) {
            TransportOutcome::Violation => {
                self.violations += counts.connections;
                self.violating_traffic = true;
            }
            TransportOutcome::Mismatch => {
                self.mismatches += counts.connections;
                self.mismatching_traffic = true;
            }
            TransportOutcome::Expected | TransportOutcome::Neutral => {}
        }
    }
}

type GroupKey = (Workload, String, Option<String>, Option<ExpectedTransport>);

/// Transport verdicts being assembled, one per source workload, host, subset and
/// expected transport (the policy expects per endpoint, so one subset may hold
/// endpoints with and without sidecars). Ports are summed.
#[derive(Debug, Default)]
pub(crate) struct TransportGroups(BTreeMap<GroupKey, Group>);

impl TransportGroups {
    /// Adds one key's window totals. Unexpected destinations are grouped under
    /// subset `None`: traffic to the host outside its declared subsets, where a
    /// plaintext flow is no less a violation.
    pub fn add(&mut self, key: &SplitKey, totals: &HashMap<Cell, Counts>) {
        for (cell, counts) in totals {
            if counts.is_zero() {
                continue;
            }
            let subset = match &cell.target {
                Target::Subset(subset) => subset.clone(),
                Target::Unexpected { .. } => None,
            };
            self.0
                .entry((key.source.clone(), key.host.clone(), subset, cell.expected))
                .or_default()
                .add(cell, counts);
        }
    }

    pub fn into_verdicts(self) -> Vec<TransportVerdict> {
        self.0
            .into_iter()
            .map(
                |((source, host, subset, expected), group)| TransportVerdict {
                    source,
                    host,
                    subset,
                    expected,
                    observed: group.observed,
                    violation: group.violating_traffic,
                    mismatch: group.mismatching_traffic,
                    violations: group.violations,
                    mismatches: group.mismatches,
                },
            )
            .collect()
    }
}
