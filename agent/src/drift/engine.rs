//! The engine: keeps each key's buckets and declared split, moves the policy
//! generation when the declaration changes, and assembles the snapshot.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use tracing::{debug, info, warn};

use crate::observation::{BypassReason, DeclaredSplit, Destination, Observation, SplitKey};
use crate::report::{
    AmbientRow, BypassRow, PodSplitVerdict, ServiceDestination, SplitVerdict, TransportVerdict,
    UnexpectedDestination,
};
use crate::wire::Transport;

use super::pods::PodSplits;
use super::sequential::SequentialConfig;
use super::split::{self, Phase, SplitCounts};
use super::track::SequentialTrack;
use super::transport::TransportGroups;
use super::window::{Cell, Counts, KeyWindow, Target};
use super::{DriftConfig, DriftConfigError};

/// The verdicts over the current window, sorted deterministically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriftSnapshot {
    /// By source workload, host and port; only keys with a declared split.
    pub splits: Vec<SplitVerdict>,
    /// By source workload, host, subset and expected transport.
    pub transport: Vec<TransportVerdict>,
    /// By source workload, host, port, destination and reason.
    pub unexpected: Vec<UnexpectedDestination>,
    /// By source workload, host, port, subset, reason and transport.
    pub bypass: Vec<BypassRow>,
    /// By source workload, host, port, subset and transport.
    pub ambient: Vec<AmbientRow>,
    /// Window totals by source workload, host, port, destination and transport:
    /// requests, connections and bytes (the secondary, byte-weighted view).
    pub tallies: Vec<Tally>,
    /// Each client pod's own split, by pod, host and port.
    pub pods: Vec<PodSplitVerdict>,
}

/// Window totals of one line of traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub key: SplitKey,
    pub destination: Destination,
    pub transport: Transport,
    pub requests: u64,
    pub connections: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub(super) struct Declaration {
    pub split: DeclaredSplit,
    pub generation: String,
    /// When the generation began, if the agent saw it change.
    pub changed_at: Option<f64>,
    /// Start of the comparison: the change plus the grace period, or minus
    /// infinity for the first declaration the agent learns (nothing says the
    /// policy just changed, and traffic cannot predate the agent).
    pub compare_from: f64,
    last_declared: f64,
    /// First bucket compared: the first whole one after `compare_from`.
    pub first_bucket: i64,
    /// The sequential test of the generation, which decides drift.
    track: SequentialTrack,
}

#[derive(Debug, Default)]
struct KeyState {
    window: KeyWindow,
    declaration: Option<Declaration>,
}

/// Tallies observations and judges them against declared splits. Not
/// thread-safe by itself: the caller owns it (one task, or behind a lock).
#[derive(Debug)]
pub struct DriftEngine {
    config: DriftConfig,
    /// The sequential test's settings: one batch per bucket.
    sequential: SequentialConfig,
    bucket_seconds: f64,
    window_seconds: f64,
    keys: HashMap<SplitKey, KeyState>,
    /// Each client pod's own split, judged like the key's.
    pods: PodSplits,
    /// Traffic around the proxies: its own windows, so no split counts it.
    bypass: HashMap<(SplitKey, BypassReason), KeyWindow>,
    /// Traffic of ambient-mode clients: shown, never judged.
    ambient: HashMap<SplitKey, KeyWindow>,
    /// First bucket index still kept; older observations are dropped on arrival.
    first_kept: i64,
    late_dropped: u64,
}

impl DriftEngine {
    /// An engine with `config`, once it is checked.
    pub fn new(config: DriftConfig) -> Result<Self, DriftConfigError> {
        config.validate()?;
        let sequential = SequentialConfig {
            batch: config.bucket,
            tolerance: config.tolerance,
            ..SequentialConfig::default()
        };
        sequential
            .validate()
            .map_err(|e| DriftConfigError::Sequential(e.to_string()))?;
        Ok(Self {
            bucket_seconds: config.bucket.as_secs_f64(),
            window_seconds: config.window.as_secs_f64(),
            config,
            sequential,
            keys: HashMap::new(),
            pods: PodSplits::default(),
            bypass: HashMap::new(),
            ambient: HashMap::new(),
            first_kept: i64::MIN,
            late_dropped: 0,
        })
    }

    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// The sequential test's settings, derived from the engine's.
    pub fn sequential_config(&self) -> &SequentialConfig {
        &self.sequential
    }

    /// Keys (source workload, host, port) held now.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Observations dropped because they arrived older than the window.
    pub fn late_dropped(&self) -> u64 {
        self.late_dropped
    }

    /// Sets or refreshes the declared split of `key` at `now_seconds`. When its
    /// generation key changes, the key enters a new policy generation: traffic
    /// before the change plus the grace period is not compared with the new
    /// weights.
    pub fn declare(&mut self, key: &SplitKey, declared: &DeclaredSplit, now_seconds: f64) {
        if !now_seconds.is_finite() {
            warn!(%now_seconds, "drift: ignoring a declaration with a time that is not finite");
            return;
        }
        // The same declaration arrives with every observation: recognise it
        // without formatting its generation key or cloning the split key.
        if let Some(current) = self
            .keys
            .get_mut(key)
            .and_then(|state| state.declaration.as_mut())
            && current.split == *declared
        {
            current.last_declared = current.last_declared.max(now_seconds);
            return;
        }
        let generation = declared.generation_key();
        let state = self.keys.entry(key.clone()).or_default();
        match &mut state.declaration {
            Some(current) if current.generation == generation => {
                current.split = declared.clone();
                current.last_declared = current.last_declared.max(now_seconds);
            }
            Some(current) => {
                info!(
                    source = %key.source,
                    host = %key.host,
                    port = key.port,
                    from = %current.generation,
                    to = %generation,
                    "drift: declared split changed; starting a new policy generation"
                );
                let compare_from = now_seconds + self.config.grace.as_secs_f64();
                let first_bucket = ceil_index(compare_from, self.bucket_seconds);
                *current = Declaration {
                    split: declared.clone(),
                    generation,
                    changed_at: Some(now_seconds),
                    compare_from,
                    last_declared: now_seconds,
                    first_bucket,
                    track: SequentialTrack::new(declared, &self.sequential, first_bucket),
                };
            }
            None => {
                // From the first traffic the window holds, or from now: quiet
                // batches before any traffic would only dilute the p-value.
                let now_bucket = (now_seconds / self.bucket_seconds).floor() as i64;
                let first_bucket = state
                    .window
                    .first_bucket()
                    .map_or(now_bucket, |first| first.min(now_bucket));
                state.declaration = Some(Declaration {
                    split: declared.clone(),
                    generation,
                    changed_at: None,
                    compare_from: f64::NEG_INFINITY,
                    last_declared: now_seconds,
                    first_bucket,
                    track: SequentialTrack::new(declared, &self.sequential, first_bucket),
                });
            }
        }
    }

    /// Tallies one attributed increment of traffic.
    pub fn observe(&mut self, observation: &Observation) {
        let Some(index) = self.bucket_index(observation.at_seconds) else {
            warn!(
                at_seconds = observation.at_seconds,
                "drift: ignoring an observation with a time that is not finite"
            );
            return;
        };
        if index < self.first_kept {
            self.late_dropped += 1;
            debug!(
                at_seconds = observation.at_seconds,
                "drift: dropping an observation older than the window"
            );
            return;
        }
        let cell = Cell {
            target: Target::from_destination(&observation.destination),
            transport: observation.transport,
            expected: observation.expected_transport,
        };
        if let Some(reason) = observation.bypass {
            self.bypass
                .entry((observation.key.clone(), reason))
                .or_default()
                .add(index, cell, Counts::of(observation));
            return;
        }
        if observation.ambient {
            self.ambient
                .entry(observation.key.clone())
                .or_default()
                .add(index, cell, Counts::of(observation));
            return;
        }
        if let Some(pod) = &observation.source_pod {
            self.pods.add(
                pod,
                &observation.key,
                index,
                cell.clone(),
                Counts::of(observation),
            );
        }
        // Look up before inserting: the key is cloned only the first time.
        let state = match self.keys.get_mut(&observation.key) {
            Some(state) => state,
            None => self.keys.entry(observation.key.clone()).or_default(),
        };
        state.window.add(index, cell, Counts::of(observation));
    }

    /// Drops buckets that left the window, and keys with neither traffic nor a
    /// declaration refreshed within it, so memory stays bounded.
    pub fn expire(&mut self, now_seconds: f64) {
        let Some(first) = self.first_index_in_window(now_seconds) else {
            return;
        };
        // Whole buckets go to the sequential tests before the window lets
        // them go.
        if let Some(end) = self.bucket_index(now_seconds) {
            for state in self.keys.values_mut() {
                if let Some(declaration) = &mut state.declaration {
                    declaration.track.catch_up(&state.window, end);
                }
            }
            let keys = &self.keys;
            let sequential = &self.sequential;
            self.pods.catch_up(end, sequential, |key| {
                keys.get(key).and_then(|state| state.declaration.as_ref())
            });
        }
        self.first_kept = self.first_kept.max(first);
        let oldest_declaration = now_seconds - self.window_seconds;
        let first_kept = self.first_kept;
        self.keys.retain(|_, state| {
            state.window.expire(first_kept);
            let declared_recently = state
                .declaration
                .as_ref()
                .is_some_and(|d| d.last_declared >= oldest_declaration);
            !state.window.is_empty() || declared_recently
        });
        self.bypass.retain(|_, window| {
            window.expire(first_kept);
            !window.is_empty()
        });
        self.ambient.retain(|_, window| {
            window.expire(first_kept);
            !window.is_empty()
        });
        self.pods.expire(first_kept);
        let keys = &self.keys;
        self.pods.retain_keys(|key| keys.contains_key(key));
    }

    /// The verdicts over the window ending at `now_seconds`.
    pub fn snapshot(&self, now_seconds: f64) -> DriftSnapshot {
        let Some(first) = self.first_index_in_window(now_seconds) else {
            return DriftSnapshot::default();
        };
        let mut snapshot = DriftSnapshot::default();
        let mut transport_groups = TransportGroups::default();
        let mut unexpected: BTreeMap<(&SplitKey, String, String), Counts> = BTreeMap::new();

        for (key, state) in &self.keys {
            let totals = state.window.totals_from(first);
            transport_groups.add(key, &totals);
            let mut tallies: BTreeMap<(Target, &'static str), (Transport, Counts)> =
                BTreeMap::new();
            for (cell, counts) in &totals {
                if let Target::Unexpected {
                    destination,
                    reason,
                } = &cell.target
                {
                    unexpected
                        .entry((key, destination.clone(), reason.clone()))
                        .or_default()
                        .add(*counts);
                }
                tallies
                    .entry((cell.target.clone(), cell.transport.as_str()))
                    .or_insert((cell.transport, Counts::default()))
                    .1
                    .add(*counts);
            }
            snapshot
                .tallies
                .extend(
                    tallies
                        .into_iter()
                        .map(|((target, _), (transport, c))| Tally {
                            key: key.clone(),
                            destination: target.to_destination(),
                            transport,
                            requests: c.requests,
                            connections: c.connections,
                            bytes: c.bytes,
                        }),
                );

            if let Some(declaration) = &state.declaration {
                snapshot.splits.push(self.split_verdict(
                    key,
                    &state.window,
                    declaration,
                    &declaration.track,
                    first,
                    now_seconds,
                ));
            }
        }
        snapshot.pods = self.pods.verdicts(|pod, key, window, started| {
            let declaration = self.keys.get(key)?.declaration.as_ref()?;
            // A pod first seen since the last expire, or whose key's policy
            // generation changed since, is judged by a fresh test.
            let fresh;
            let track = match started {
                Some((generation, track)) if *generation == declaration.generation => track,
                _ => {
                    fresh = SequentialTrack::new(
                        &declaration.split,
                        &self.sequential,
                        declaration.first_bucket,
                    );
                    &fresh
                }
            };
            Some(PodSplitVerdict {
                pod: pod.to_owned(),
                split: self.split_verdict(key, window, declaration, track, first, now_seconds),
            })
        });

        for ((key, reason), window) in &self.bypass {
            let totals = window.totals_from(first);
            transport_groups.add(key, &totals);
            snapshot
                .bypass
                .extend(by_subset_and_transport(&totals).into_iter().map(
                    |((subset, transport), c)| BypassRow {
                        source: key.source.clone(),
                        destination: ServiceDestination {
                            host: key.host.clone(),
                            port: key.port,
                            subset,
                        },
                        reason: *reason,
                        transport: transport.to_owned(),
                        connections: c.connections,
                        requests: c.requests,
                    },
                ));
        }
        for (key, window) in &self.ambient {
            snapshot.ambient.extend(
                by_subset_and_transport(&window.totals_from(first))
                    .into_iter()
                    .map(|((subset, transport), c)| AmbientRow {
                        source: key.source.clone(),
                        destination: ServiceDestination {
                            host: key.host.clone(),
                            port: key.port,
                            subset,
                        },
                        transport: transport.to_owned(),
                        connections: c.connections,
                        requests: c.requests,
                    }),
            );
        }
        snapshot.ambient.sort_by(|a, b| {
            (&a.source, &a.destination, &a.transport).cmp(&(
                &b.source,
                &b.destination,
                &b.transport,
            ))
        });
        snapshot.bypass.sort_by(|a, b| {
            (
                &a.source,
                &a.destination.host,
                a.destination.port,
                &a.destination.subset,
                a.reason,
                &a.transport,
            )
                .cmp(&(
                    &b.source,
                    &b.destination.host,
                    b.destination.port,
                    &b.destination.subset,
                    b.reason,
                    &b.transport,
                ))
        });
        snapshot.transport = transport_groups.into_verdicts();
        snapshot.unexpected = unexpected
            .into_iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|((key, destination, reason), c)| UnexpectedDestination {
                source: key.source.clone(),
                host: key.host.clone(),
                port: key.port,
                destination,
                reason,
                connections: c.connections,
                requests: c.requests,
            })
            .collect();
        snapshot
            .splits
            .sort_by(|a, b| (&a.source, &a.host, a.port).cmp(&(&b.source, &b.host, b.port)));
        snapshot.tallies.sort_by(|a, b| {
            (
                &a.key,
                destination_order(&a.destination),
                a.transport.as_str(),
            )
                .cmp(&(
                    &b.key,
                    destination_order(&b.destination),
                    b.transport.as_str(),
                ))
        });
        snapshot
    }

    fn split_verdict(
        &self,
        key: &SplitKey,
        window: &KeyWindow,
        declaration: &Declaration,
        track: &SequentialTrack,
        first_in_window: i64,
        now_seconds: f64,
    ) -> SplitVerdict {
        // Only whole buckets that start at or after the end of the grace period
        // are compared: a bucket straddling it may hold traffic routed by the
        // previous generation.
        let compare_from_index = if declaration.compare_from == f64::NEG_INFINITY {
            first_in_window
        } else {
            ceil_index(declaration.compare_from, self.bucket_seconds).max(first_in_window)
        };
        let mut counts = SplitCounts::default();
        for (cell, c) in window.totals_from(compare_from_index) {
            match cell.target {
                Target::Subset(subset) => counts.by_subset.entry(subset).or_default().add(c),
                Target::Unexpected { destination, .. } => {
                    counts.unexpected.entry(destination).or_default().add(c)
                }
            }
        }
        // Whole buckets the track has not read yet (no expire since they
        // ended) are read by a copy, so a snapshot never depends on when the
        // last expire ran.
        let caught_up;
        let track = match self.bucket_index(now_seconds) {
            Some(end) if track.next_bucket() < end => {
                let mut copy = track.clone();
                copy.catch_up(window, end);
                caught_up = copy;
                &caught_up
            }
            _ => track,
        };
        split::verdict(
            key,
            &declaration.split,
            &counts,
            Phase {
                changed_at: declaration.changed_at,
                compare_from: declaration.compare_from,
                now: now_seconds,
            },
            &self.config,
            Some(track),
        )
    }

    fn bucket_index(&self, at_seconds: f64) -> Option<i64> {
        at_seconds
            .is_finite()
            .then(|| (at_seconds / self.bucket_seconds).floor() as i64)
    }

    /// Index of the first whole bucket inside the window ending at `now`.
    fn first_index_in_window(&self, now_seconds: f64) -> Option<i64> {
        now_seconds
            .is_finite()
            .then(|| ceil_index(now_seconds - self.window_seconds, self.bucket_seconds))
    }
}

fn ceil_index(at_seconds: f64, bucket_seconds: f64) -> i64 {
    // Tolerate rounding so a time on a bucket boundary maps to that bucket.
    let raw = at_seconds / bucket_seconds;
    let nearest = raw.round();
    if (raw - nearest).abs() < 1e-9 {
        nearest as i64
    } else {
        raw.ceil() as i64
    }
}

/// A window's totals by the subset reached and the transport seen, without
/// the lines that carried nothing.
fn by_subset_and_transport(
    totals: &HashMap<Cell, Counts>,
) -> BTreeMap<(Option<String>, &'static str), Counts> {
    let mut rows: BTreeMap<(Option<String>, &'static str), Counts> = BTreeMap::new();
    for (cell, counts) in totals {
        let subset = match &cell.target {
            Target::Subset(subset) => subset.clone(),
            Target::Unexpected { .. } => None,
        };
        rows.entry((subset, cell.transport.as_str()))
            .or_default()
            .add(*counts);
    }
    rows.retain(|_, c| !c.is_zero());
    rows
}

fn destination_order(destination: &Destination) -> (u8, Option<&str>, &str) {
    match destination {
        Destination::Subset { subset } => (0, subset.as_deref(), ""),
        Destination::Unexpected {
            destination,
            reason,
        } => (1, Some(destination.as_str()), reason.as_str()),
    }
}
