//! The stand-in Kubernetes API server (shared with the benchmarks through
//! the testkit), and a mirror of what the agent keeps from the kube source.

pub use meshdrift_testkit::apiserver::*;

use std::time::Duration;

use meshdrift::attribution::Mesh;
use meshdrift::inventory::kube::{KubeSource, KubeSourceOptions};
use meshdrift::runtime::{DeclaredFeed, DeclaredUpdate, from_batches};
use tokio::time::Instant;

/// The declared world as the agent keeps it: one whole load, then changes
/// applied in place.
pub struct Mirror {
    feed: DeclaredFeed,
    _guard: Box<dyn std::any::Any + Send>,
    pub mesh: Option<Mesh>,
    /// Whole loads received (the first, and any later rebuild).
    pub loads: usize,
    /// When each update after the first load arrived.
    pub updates: Vec<Instant>,
}

impl Mirror {
    pub async fn start(server: &ApiServer, options: KubeSourceOptions) -> Mirror {
        let (batches, handle) = KubeSource::start_with(server.client(), options)
            .await
            .unwrap();
        let (feed, guard) = from_batches(batches, Some(handle));
        Mirror {
            feed,
            _guard: Box::new(guard),
            mesh: None,
            loads: 0,
            updates: Vec::new(),
        }
    }

    fn take(&mut self, update: DeclaredUpdate) {
        match update {
            DeclaredUpdate::Replace(declared) => {
                self.loads += 1;
                let mesh = std::sync::Arc::try_unwrap(declared.mesh)
                    .unwrap_or_else(|_| panic!("the first load's mesh is shared"));
                self.mesh = Some(mesh);
            }
            DeclaredUpdate::Inventory(changes) => {
                self.updates.push(Instant::now());
                let mesh = self.mesh.as_mut().expect("a load before changes");
                for change in &changes {
                    mesh.index.apply(change);
                }
                mesh.refresh_inventory();
            }
            DeclaredUpdate::Policies(policies) => {
                self.updates.push(Instant::now());
                let mesh = self.mesh.as_mut().expect("a load before changes");
                mesh.policies = *policies;
                mesh.refresh_inventory();
            }
        }
    }

    /// Waits (a few seconds at most) until the mesh satisfies `ready`.
    pub async fn wait(&mut self, what: &str, ready: impl Fn(&Mesh) -> bool) -> &Mesh {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.mesh.as_ref().is_some_and(&ready) {
            match tokio::time::timeout_at(deadline, self.feed.recv()).await {
                Ok(Some(update)) => self.take(update),
                Ok(None) => panic!("the feed stopped before {what}"),
                Err(_) => panic!("no mesh with {what} within 10 s"),
            }
        }
        self.mesh.as_ref().unwrap()
    }

    /// Whether an update arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.feed.recv()).await {
            Ok(Some(update)) => {
                self.take(update);
                false
            }
            _ => true,
        }
    }
}
