//! Where the agent gets the declared world: a directory of manifests (re-read
//! whole when it changes) or the Kubernetes API (watched). The agent first
//! receives a [`Mesh`] built off its event loop; from the Kubernetes API it
//! then receives each change, which it applies to that mesh in place (a pod
//! costs what it touches), and rebuilt policies when a policy object changes.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::sync::mpsc;

use crate::{
    attribution::Mesh,
    findings::{Finding, Severity, codes},
    inventory::{
        Index, files,
        kube::{Batches, KubeSource, KubeSourceHandle, KubeSourceOptions, Listed, SourceHealth},
    },
    model::{Change, Objects},
    policy::{self, Policies, PolicyStore},
};

/// One load of the declared world.
pub struct Declared {
    pub mesh: Arc<Mesh>,
    /// Problems met while loading (unparsable files, ...), reported as findings.
    pub load_findings: Vec<Finding>,
}

/// What the agent is told about the declared world.
pub enum DeclaredUpdate {
    /// A whole declared world: the first load, or a manifest directory re-read.
    Replace(Declared),
    /// Inventory objects changed: apply them to the mesh in place.
    Inventory(Vec<Change>),
    /// A policy object changed: the policies, rebuilt.
    Policies(Box<Policies>),
}

/// The updates, in order; the first is always a [`DeclaredUpdate::Replace`].
pub type DeclaredFeed = mpsc::Receiver<DeclaredUpdate>;

/// Keeps the source's background work alive; dropping it stops the watching.
pub struct SourceGuard {
    _kube: Option<KubeSourceHandle>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loads `dir` now (failing loudly if it cannot be read), then re-reads it
/// whenever a file's name, size or modification time changes.
pub fn files(dir: PathBuf, poll: Duration) -> anyhow::Result<(DeclaredFeed, SourceGuard)> {
    let mut fingerprint = manifest_fingerprint(&dir);
    let first = load_files(&dir)?;
    let (sender, feed) = mpsc::channel(1);
    sender
        .try_send(DeclaredUpdate::Replace(first))
        .map_err(|_| anyhow::anyhow!("the agent stopped before the first load"))?;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll);
        loop {
            tick.tick().await;
            let current = manifest_fingerprint(&dir);
            if current == fingerprint {
                continue;
            }
            fingerprint = current;
            let dir_for_load = dir.clone();
            match tokio::task::spawn_blocking(move || load_files(&dir_for_load)).await {
                Ok(Ok(declared)) => {
                    tracing::info!(dir = %dir.display(), "manifests changed; reloaded");
                    if sender
                        .send(DeclaredUpdate::Replace(declared))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(Err(err)) => {
                    tracing::warn!(error = %format!("{err:#}"), "reloading manifests failed; keeping the previous ones")
                }
                Err(err) => tracing::warn!(%err, "the manifest loader stopped unexpectedly"),
            }
        }
    });
    Ok((feed, SourceGuard { _kube: None, task }))
}

/// Watches the Kubernetes API (in-cluster service account, else kubeconfig);
/// what keeps a kind from listing is told to `health`.
pub async fn kubernetes(health: SourceHealth) -> anyhow::Result<(DeclaredFeed, SourceGuard)> {
    let client = KubeSource::connect()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or kubeconfig); pass --manifests DIR to run without a cluster")?;
    let options = KubeSourceOptions {
        health,
        ..KubeSourceOptions::default()
    };
    let (batches, handle) = KubeSource::start_with(client, options)
        .await
        .context("watching the Kubernetes API")?;
    Ok(from_batches(batches, Some(handle)))
}

/// The agent's feed from the kube source's batches: the index is built off
/// the event loop until every kind has listed, then handed over with the
/// policies; later inventory changes are passed on as they come, and policy
/// changes rebuild the policies here.
pub fn from_batches(
    mut batches: Batches,
    handle: Option<KubeSourceHandle>,
) -> (DeclaredFeed, SourceGuard) {
    let (sender, feed) = mpsc::channel(16);
    let task = tokio::task::spawn_blocking(move || {
        let mut index = Index::default();
        let mut store = PolicyStore::default();
        let mut listed = Listed::default();
        while !listed.all() {
            let Some(batch) = batches.blocking_recv() else {
                return;
            };
            for change in &batch {
                listed.note(change);
                index.apply(change);
                store.apply(change);
            }
        }
        index.shrink_to_fit();
        let policies = store.build();
        let findings = policy::check(&index, &policies);
        tracing::info!(pods = index.pod_count(), "inventory loaded");
        let first = Declared {
            mesh: Arc::new(Mesh::new(index, policies, findings)),
            load_findings: Vec::new(),
        };
        if sender
            .blocking_send(DeclaredUpdate::Replace(first))
            .is_err()
        {
            return;
        }
        while let Some(batch) = batches.blocking_recv() {
            let mut policies_changed = false;
            let mut inventory = Vec::new();
            for change in batch {
                if change.kind().is_policy() {
                    policies_changed |= store.apply(&change);
                } else {
                    inventory.push(change);
                }
            }
            if !inventory.is_empty()
                && sender
                    .blocking_send(DeclaredUpdate::Inventory(inventory))
                    .is_err()
            {
                return;
            }
            if policies_changed
                && sender
                    .blocking_send(DeclaredUpdate::Policies(Box::new(store.build())))
                    .is_err()
            {
                return;
            }
        }
    });
    (
        feed,
        SourceGuard {
            _kube: handle,
            task,
        },
    )
}

fn declared_from(objects: &Objects) -> Declared {
    Declared {
        mesh: Arc::new(Mesh::build(objects)),
        load_findings: Vec::new(),
    }
}

fn load_files(dir: &Path) -> anyhow::Result<Declared> {
    let outcome = files::load_dir(dir)
        .with_context(|| format!("loading manifests from {}", dir.display()))?;
    let load_findings = outcome
        .problems
        .iter()
        .map(|problem| Finding {
            code: codes::LOAD_PROBLEM.to_owned(),
            severity: Severity::Error,
            resource: problem.file.display().to_string(),
            message: problem.detail(),
        })
        .collect();
    Ok(Declared {
        load_findings,
        ..declared_from(&outcome.objects)
    })
}

/// Names, sizes and modification times of the manifest files: cheap to compare.
fn manifest_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut entries = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if let Ok(children) = std::fs::read_dir(&path) {
                pending.extend(children.filter_map(|child| child.ok().map(|c| c.path())));
            }
        } else {
            entries.push((path, metadata.len(), metadata.modified().ok()));
        }
    }
    entries.sort();
    entries
}
