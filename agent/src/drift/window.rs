//! Per-key tallies in time buckets: what one client workload sent to one host and
//! port, by destination, transport and expected transport. Buckets older than the
//! window are dropped, and the distinct unexpected destinations a key remembers
//! are capped, so memory stays bounded by workloads × hosts × subsets.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet};

use crate::observation::{Destination, ExpectedTransport, Observation};
use crate::wire::Transport;

/// Distinct unexpected destinations remembered per key; more are summed under
/// [`OVERFLOW_DESTINATION`] so a client spraying addresses cannot grow memory.
pub(crate) const MAX_UNEXPECTED_PER_KEY: usize = 32;
pub(crate) const OVERFLOW_DESTINATION: &str = "(other unexpected destinations)";

/// Where a tallied increment went.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    Subset(Option<String>),
    Unexpected { destination: String, reason: String },
}

impl Target {
    pub fn from_destination(destination: &Destination) -> Self {
        match destination {
            Destination::Subset { subset } => Target::Subset(subset.clone()),
            Destination::Unexpected {
                destination,
                reason,
            } => Target::Unexpected {
                destination: destination.clone(),
                reason: reason.clone(),
            },
        }
    }

    pub fn to_destination(&self) -> Destination {
        match self {
            Target::Subset(subset) => Destination::Subset {
                subset: subset.clone(),
            },
            Target::Unexpected {
                destination,
                reason,
            } => Destination::Unexpected {
                destination: destination.clone(),
                reason: reason.clone(),
            },
        }
    }
}

/// One tally line within a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Cell {
    pub target: Target,
    pub transport: Transport,
    pub expected: Option<ExpectedTransport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub requests: u64,
    /// The part of `requests` that is estimated rather than counted.
    pub estimated: u64,
    pub connections: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn of(observation: &Observation) -> Self {
        Self {
            requests: observation.requests,
            estimated: if observation.estimated {
                observation.requests
            } else {
                0
            },
            connections: observation.connections,
            bytes: observation.bytes,
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.estimated = self.estimated.saturating_add(other.estimated);
        self.connections = self.connections.saturating_add(other.connections);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    pub fn is_zero(&self) -> bool {
        self.requests == 0 && self.connections == 0 && self.bytes == 0
    }
}

/// The buckets of one key, by bucket index (`floor(at / bucket)`).
#[derive(Debug, Default)]
pub(crate) struct KeyWindow {
    buckets: BTreeMap<i64, HashMap<Cell, Counts>>,
    unexpected: HashSet<(String, String)>,
}

impl KeyWindow {
    pub fn add(&mut self, index: i64, mut cell: Cell, counts: Counts) {
        if let Target::Unexpected {
            destination,
            reason,
        } = &cell.target
        {
            let known = self
                .unexpected
                .contains(&(destination.clone(), reason.clone()));
            if !known {
                if self.unexpected.len() >= MAX_UNEXPECTED_PER_KEY {
                    cell.target = Target::Unexpected {
                        destination: OVERFLOW_DESTINATION.to_owned(),
                        reason: format!(
                            "more than {MAX_UNEXPECTED_PER_KEY} distinct unexpected destinations from this client; the rest are summed here"
                        ),
                    };
                } else {
                    self.unexpected
                        .insert((destination.clone(), reason.clone()));
                }
            }
        }
        self.buckets
            .entry(index)
            .or_default()
            .entry(cell)
            .or_default()
            .add(counts);
    }

    /// Drops buckets before `first_kept`.
    pub fn expire(&mut self, first_kept: i64) {
        self.buckets = self.buckets.split_off(&first_kept);
        self.unexpected = self
            .buckets
            .values()
            .flat_map(|cells| cells.keys())
            .filter_map(|cell| match &cell.target {
                Target::Unexpected {
                    destination,
                    reason,
                } if destination != OVERFLOW_DESTINATION => {
                    Some((destination.clone(), reason.clone()))
                }
                _ => None,
            })
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Index of the oldest bucket held.
    pub fn first_bucket(&self) -> Option<i64> {
        self.buckets.keys().next().copied()
    }

    /// The buckets from index `from` up to `end` (exclusive), in order.
    pub fn buckets_between(
        &self,
        from: i64,
        end: i64,
    ) -> impl Iterator<Item = (i64, &HashMap<Cell, Counts>)> {
        self.buckets
            .range(from..end.max(from))
            .map(|(index, cells)| (*index, cells))
    }

    /// Sums of every cell over buckets from index `from` on.
    pub fn totals_from(&self, from: i64) -> HashMap<Cell, Counts> {
        let mut totals: HashMap<Cell, Counts> = HashMap::new();
        for cells in self.buckets.range(from..).map(|(_, cells)| cells) {
            for (cell, counts) in cells {
                totals.entry(cell.clone()).or_default().add(*counts);
            }
        }
        totals
    }

    #[cfg(test)]
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unexpected(name: &str) -> Cell {
        Cell {
            target: Target::Unexpected {
                destination: name.to_owned(),
                reason: "not in any subset".to_owned(),
            },
            transport: Transport::Http,
            expected: None,
        }
    }

    const ONE: Counts = Counts {
        requests: 1,
        estimated: 0,
        connections: 1,
        bytes: 10,
    };

    #[test]
    fn expire_drops_old_buckets_only() {
        let mut window = KeyWindow::default();
        for index in 0..10 {
            window.add(index, unexpected("a"), ONE);
        }
        window.expire(7);
        assert_eq!(window.bucket_count(), 3);
        let totals = window.totals_from(i64::MIN);
        assert_eq!(totals[&unexpected("a")].requests, 3);
        window.expire(100);
        assert!(window.is_empty());
    }

    #[test]
    fn distinct_unexpected_destinations_are_capped() {
        let mut window = KeyWindow::default();
        for i in 0..(MAX_UNEXPECTED_PER_KEY + 10) {
            window.add(0, unexpected(&format!("10.0.0.{i}")), ONE);
        }
        let totals = window.totals_from(0);
        assert_eq!(totals.len(), MAX_UNEXPECTED_PER_KEY + 1);
        let overflow: u64 = totals
            .iter()
            .filter(|(cell, _)| {
                matches!(&cell.target, Target::Unexpected { destination, .. } if destination == OVERFLOW_DESTINATION)
            })
            .map(|(_, counts)| counts.connections)
            .sum();
        assert_eq!(overflow, 10);
        // A destination already known keeps its own line.
        window.add(1, unexpected("10.0.0.0"), ONE);
        assert_eq!(
            window.totals_from(0)[&unexpected("10.0.0.0")].connections,
            2
        );
    }
}
