//! Gathers the watchers' changes into batches for the consumer: as fast as
//! it takes them until every kind has listed, then at most one batch per
//! `min_interval`, so a burst of changes (a rollout) costs a few updates.
//! Changes keep arriving while a batch waits: watchers are never held up.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{Change, Kind};

/// Which kinds have completed their first list.
#[derive(Debug, Clone, Default)]
pub struct Listed(BTreeSet<Kind>);

impl Listed {
    pub fn note(&mut self, change: &Change) {
        if let Change::Listed(kind) = change {
            self.0.insert(*kind);
        }
    }

    pub fn all(&self) -> bool {
        Kind::ALL.iter().all(|kind| self.0.contains(kind))
    }
}

/// Most changes in one batch before every kind has listed: the consumer
/// starts indexing while the lists go on.
const FIRST_LIST_BATCH: usize = 4096;

pub(crate) async fn run(
    mut changes: mpsc::Receiver<Change>,
    out: mpsc::Sender<Vec<Change>>,
    min_interval: Duration,
) {
    let mut listed = Listed::default();
    let mut last: Option<Instant> = None;
    loop {
        let Some(first) = changes.recv().await else {
            return;
        };
        let mut batch = vec![first];
        if listed.all()
            && let Some(at) = last
        {
            let deadline = at + min_interval;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    change = changes.recv() => match change {
                        Some(change) => batch.push(change),
                        None => break,
                    },
                }
            }
        }
        while listed.all() || batch.len() < FIRST_LIST_BATCH {
            match changes.try_recv() {
                Ok(change) => batch.push(change),
                Err(_) => break,
            }
        }
        for change in &batch {
            listed.note(change);
        }
        if out.send(batch).await.is_err() {
            return;
        }
        last = Some(Instant::now());
    }
}
