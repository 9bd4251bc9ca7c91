//! The stand-in Kubernetes API server (shared with the benchmarks through
//! the testkit) and what the kube source's tests wait for.

pub use meshdrift_testkit::apiserver::*;

use std::sync::Arc;
use std::time::Duration;

/// Waits (a few seconds at most) for a snapshot that satisfies `ready`.
pub async fn snapshot_where(
    snapshots: &mut meshdrift::inventory::kube::Snapshots,
    what: &str,
    ready: impl Fn(&meshdrift::model::Objects) -> bool,
) -> Arc<meshdrift::model::Objects> {
    let wait = async {
        loop {
            if let Some(objects) = snapshots.borrow_and_update().clone()
                && ready(&objects)
            {
                return objects;
            }
            snapshots.changed().await.expect("source running");
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no snapshot with {what} within 10 s"))
}
