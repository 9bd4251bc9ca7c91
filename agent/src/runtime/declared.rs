//! Where the agent gets the declared world: a directory of manifests (re-read
//! when it changes) or the Kubernetes API (watched). Either way the agent
//! receives a freshly built [`Mesh`] with the problems met loading it;
//! building runs off the agent's event loop.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::sync::watch;

use crate::{
    attribution::Mesh,
    findings::{Finding, Severity, codes},
    inventory::{
        files,
        kube::{KubeSource, KubeSourceHandle},
    },
    model::Objects,
};

/// One load of the declared world.
pub struct Declared {
    pub mesh: Arc<Mesh>,
    /// Problems met while loading (unparsable files, ...), reported as findings.
    pub load_findings: Vec<Finding>,
}

/// The latest declared world; `None` until the first load completes.
pub type DeclaredFeed = watch::Receiver<Option<Arc<Declared>>>;

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
    let (sender, feed) = watch::channel(Some(Arc::new(first)));
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
                    if sender.send(Some(Arc::new(declared))).is_err() {
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

/// Watches the Kubernetes API (in-cluster service account, else kubeconfig).
pub async fn kubernetes() -> anyhow::Result<(DeclaredFeed, SourceGuard)> {
    let client = KubeSource::connect()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or kubeconfig); pass --manifests DIR to run without a cluster")?;
    let (mut snapshots, handle) = KubeSource::start(client)
        .await
        .context("watching the Kubernetes API")?;
    let (sender, feed) = watch::channel(None);
    let task = tokio::spawn(async move {
        loop {
            let objects = snapshots.borrow_and_update().clone();
            if let Some(objects) = objects {
                match tokio::task::spawn_blocking(move || declared_from(&objects)).await {
                    Ok(declared) => {
                        if sender.send(Some(Arc::new(declared))).is_err() {
                            return;
                        }
                    }
                    Err(err) => tracing::warn!(%err, "building the inventory failed"),
                }
            }
            if snapshots.changed().await.is_err() {
                return;
            }
        }
    });
    Ok((
        feed,
        SourceGuard {
            _kube: Some(handle),
            task,
        },
    ))
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
