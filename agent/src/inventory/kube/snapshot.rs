//! Turns the reflector stores into [`Objects`] snapshots: the first once
//! every kind has listed, then one per burst of changes, at most one per
//! `min_interval` so a rollout of hundreds of pods costs a few rebuilds.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use super::istio::Typed;
use super::progress::Progress;
use crate::model::{
    self, DestinationRule, Objects, PeerAuthentication, ServiceEntry, VirtualService,
};

/// Read sides of the reflector stores.
pub(crate) struct Stores {
    pub(crate) pods: Store<Pod>,
    pub(crate) services: Store<Service>,
    pub(crate) endpoint_slices: Store<EndpointSlice>,
    pub(crate) namespaces: Store<Namespace>,
    pub(crate) service_entries: Store<Typed<ServiceEntry>>,
    pub(crate) virtual_services: Store<Typed<VirtualService>>,
    pub(crate) destination_rules: Store<Typed<DestinationRule>>,
    pub(crate) peer_authentications: Store<Typed<PeerAuthentication>>,
}

impl Stores {
    pub(crate) fn objects(&self) -> Objects {
        Objects {
            // Kept as the model's slim pods: a snapshot of every pod of the cluster.
            pods: sorted(&self.pods)
                .iter()
                .map(|p| model::Pod::from(&**p))
                .collect(),
            services: owned(&self.services),
            endpoint_slices: owned(&self.endpoint_slices),
            namespaces: owned(&self.namespaces),
            service_entries: typed(&self.service_entries),
            virtual_services: typed(&self.virtual_services),
            destination_rules: typed(&self.destination_rules),
            peer_authentications: typed(&self.peer_authentications),
        }
    }
}

/// Store contents in namespace/name order: stores are hash maps, and the
/// index keeps the first of two pods claiming one IP, so order must not
/// depend on hashing.
fn sorted<K: Resource + Clone>(store: &Store<K>) -> Vec<Arc<K>>
where
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    let mut items = store.state();
    items.sort_by(|a, b| {
        let key = |o: &Arc<K>| (o.meta().namespace.clone(), o.meta().name.clone());
        key(a).cmp(&key(b))
    });
    items
}

fn owned<K: Resource + Clone>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Clone + Eq + std::hash::Hash,
{
    sorted(store).iter().map(|o| K::clone(o)).collect()
}

fn typed<T: Clone>(store: &Store<Typed<T>>) -> Vec<T> {
    sorted(store)
        .iter()
        .filter_map(|o| o.value.clone())
        .collect()
}

/// Publishes snapshots until every receiver is gone.
pub(crate) async fn publish(
    stores: Stores,
    mut progress: watch::Receiver<Progress>,
    out: watch::Sender<Option<Arc<Objects>>>,
    min_interval: Duration,
) {
    let mut published: Option<(u64, Instant)> = None;
    loop {
        let current = *progress.borrow_and_update();
        let pending = published.is_none_or(|(changes, _)| changes != current.changes);
        if current.all_ready() && pending {
            if let Some((_, at)) = published {
                tokio::time::sleep_until(at + min_interval).await;
            }
            // Changes that arrived while waiting are in the stores already.
            let current = *progress.borrow_and_update();
            let objects = stores.objects();
            debug!(objects = objects.len(), "inventory snapshot");
            out.send_replace(Some(Arc::new(objects)));
            published = Some((current.changes, Instant::now()));
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { return },
            () = out.closed() => return,
        }
    }
}
