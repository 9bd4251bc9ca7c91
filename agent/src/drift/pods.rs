//! Each client pod's own split. A pod runs on one node, so its node's agent
//! sees all of its traffic and can judge it alone: a workload whose pods
//! mostly follow the declared weights while one proxy is stale drifts a
//! little as a whole, and the stale pod drifts a lot on its own. The pod's
//! verdict is what names the proxy to restart.

use foldhash::HashMap;

use crate::observation::SplitKey;

use super::engine::Declaration;
use super::sequential::SequentialConfig;
use super::track::SequentialTrack;
use super::window::{Cell, Counts, KeyWindow};

/// Pod splits tracked at most; a node runs a few hundred pods, each talking
/// to a handful of weighted hosts. Traffic of pods beyond it is still counted
/// for their workload, only not judged per pod.
const MAX_POD_SPLITS: usize = 10_000;

#[derive(Debug)]
struct PodSplit {
    window: KeyWindow,
    /// The sequential test, for the policy generation named, once the key
    /// has a declaration.
    track: Option<(String, SequentialTrack)>,
}

/// The splits of every client pod seen, by key and pod (`namespace/name`):
/// keyed so that counting an increment allocates nothing once both are known.
#[derive(Debug, Default)]
pub(crate) struct PodSplits {
    splits: HashMap<SplitKey, HashMap<String, PodSplit>>,
    len: usize,
    untracked: u64,
}

impl PodSplits {
    pub fn add(&mut self, pod: &str, key: &SplitKey, index: i64, cell: Cell, counts: Counts) {
        if let Some(split) = self.splits.get_mut(key).and_then(|pods| pods.get_mut(pod)) {
            split.window.add(index, cell, counts);
            return;
        }
        if self.len >= MAX_POD_SPLITS {
            if self.untracked == 0 {
                tracing::warn!(
                    limit = MAX_POD_SPLITS,
                    "drift: too many client pod splits to judge each; new ones count for their workload only"
                );
            }
            self.untracked += 1;
            return;
        }
        let mut split = PodSplit {
            window: KeyWindow::default(),
            track: None,
        };
        split.window.add(index, cell, counts);
        self.splits
            .entry(key.clone())
            .or_default()
            .insert(pod.to_owned(), split);
        self.len += 1;
    }

    /// Feeds every pod's whole buckets before `end` to its test, starting a
    /// new test when its key's policy generation changed.
    pub fn catch_up<'a>(
        &mut self,
        end: i64,
        config: &SequentialConfig,
        declaration_of: impl Fn(&SplitKey) -> Option<&'a Declaration>,
    ) {
        for (key, pods) in &mut self.splits {
            let Some(declaration) = declaration_of(key) else {
                continue;
            };
            for split in pods.values_mut() {
                split.follow(declaration, config, end);
            }
        }
    }

    /// Drops the pods of keys `keep` refuses (keys the engine let go: no
    /// declaration left to judge them by, so a held verdict would never age).
    pub fn retain_keys(&mut self, keep: impl Fn(&SplitKey) -> bool) {
        self.splits.retain(|key, _| keep(key));
        self.len = self.splits.values().map(HashMap::len).sum();
    }

    /// Drops buckets before `first_kept`, and pods with neither traffic in
    /// the window nor a drift verdict still held.
    pub fn expire(&mut self, first_kept: i64) {
        for pods in self.splits.values_mut() {
            pods.retain(|_, split| {
                split.window.expire(first_kept);
                !split.window.is_empty()
                    || split.track.as_ref().is_some_and(|(_, track)| track.alarm())
            });
        }
        self.splits.retain(|_, pods| !pods.is_empty());
        self.len = self.splits.values().map(HashMap::len).sum();
    }

    /// One verdict per pod and key that `verdict` can judge (it is given the
    /// pod's test, when one was started), sorted by pod, then key.
    pub fn verdicts<T>(
        &self,
        verdict: impl Fn(&str, &SplitKey, &KeyWindow, Option<&(String, SequentialTrack)>) -> Option<T>,
    ) -> Vec<T> {
        let mut judged: Vec<((&str, &SplitKey), T)> = self
            .splits
            .iter()
            .flat_map(|(key, pods)| pods.iter().map(move |(pod, split)| (key, pod, split)))
            .filter_map(|(key, pod, split)| {
                let judged = verdict(pod, key, &split.window, split.track.as_ref())?;
                Some(((pod.as_str(), key), judged))
            })
            .collect();
        judged.sort_by_key(|(id, _)| *id);
        judged.into_iter().map(|(_, v)| v).collect()
    }
}

impl PodSplit {
    /// Reads the whole buckets before `end`, under a test of the key's
    /// current policy generation.
    fn follow(&mut self, declaration: &Declaration, config: &SequentialConfig, end: i64) {
        let current = self
            .track
            .as_ref()
            .is_some_and(|(generation, _)| *generation == declaration.generation);
        if !current {
            self.track = Some((
                declaration.generation.clone(),
                SequentialTrack::new(&declaration.split, config, declaration.first_bucket),
            ));
        }
        if let Some((_, track)) = &mut self.track {
            track.catch_up(&self.window, end);
        }
    }
}
