//! The kube source: the declared world read from the Kubernetes API.
//!
//! Reflectors watch Pods, Services, EndpointSlices, Namespaces and Istio's
//! ServiceEntries, VirtualServices, DestinationRules and PeerAuthentications
//! cluster-wide
//! (attribution needs destination pods on every node), and a snapshot of
//! [`Objects`] is published whenever they change.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use meshdrift::inventory::kube::KubeSource;
//! let client = KubeSource::connect().await?;
//! let (mut snapshots, _handle) = KubeSource::start(client).await?;
//! while snapshots.changed().await.is_ok() {
//!     let Some(objects) = snapshots.borrow_and_update().clone() else { continue };
//!     let _index = meshdrift::inventory::Index::build(&objects);
//! }
//! # Ok(()) }
//! ```

mod istio;
mod progress;
mod prune;
mod snapshot;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use tokio::task::JoinHandle;

use crate::model::{DestinationRule, Objects, PeerAuthentication, ServiceEntry, VirtualService};
use istio::{
    DESTINATION_RULE, IstioKind, PEER_AUTHENTICATION, SERVICE_ENTRY, Typed, VIRTUAL_SERVICE,
};
use progress::{Kind, Progress, Reporter};
use snapshot::Stores;
use watch::IstioTiming;

/// Snapshots: `None` until every kind has completed its first list.
pub type Snapshots = tokio::sync::watch::Receiver<Option<Arc<Objects>>>;

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot configure a Kubernetes client")]
    Connect(#[source] kube::Error),
    #[error("the kube source needs a running tokio runtime")]
    NoRuntime,
}

#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// The shortest time between two snapshots.
    pub min_interval: Duration,
    /// How often an Istio kind that is not served is looked for again.
    pub crd_recheck: Duration,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            min_interval: Duration::from_secs(1),
            crd_recheck: Duration::from_secs(60),
        }
    }
}

pub struct KubeSource;

impl KubeSource {
    /// A client from the in-cluster service account, or the kubeconfig
    /// outside a cluster.
    pub async fn connect() -> Result<Client, KubeSourceError> {
        Client::try_default()
            .await
            .map_err(KubeSourceError::Connect)
    }

    /// Starts watching with the default options.
    pub async fn start(client: Client) -> Result<(Snapshots, KubeSourceHandle), KubeSourceError> {
        Self::start_with(client, KubeSourceOptions::default()).await
    }

    /// Starts watching. The watchers run until the handle is dropped or shut down.
    pub async fn start_with(
        client: Client,
        options: KubeSourceOptions,
    ) -> Result<(Snapshots, KubeSourceHandle), KubeSourceError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| KubeSourceError::NoRuntime)?;
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(Progress::default());
        let report = |kind| Reporter::new(kind, progress_tx.clone());
        let mut tasks = Vec::new();

        let pods = Writer::<Pod>::default();
        let services = Writer::<Service>::default();
        let endpoint_slices = Writer::<EndpointSlice>::default();
        let namespaces = Writer::<Namespace>::default();
        let service_entries = istio_writer::<ServiceEntry>(&SERVICE_ENTRY);
        let virtual_services = istio_writer::<VirtualService>(&VIRTUAL_SERVICE);
        let destination_rules = istio_writer::<DestinationRule>(&DESTINATION_RULE);
        let peer_authentications = istio_writer::<PeerAuthentication>(&PEER_AUTHENTICATION);
        let stores = Stores {
            pods: pods.as_reader(),
            services: services.as_reader(),
            endpoint_slices: endpoint_slices.as_reader(),
            namespaces: namespaces.as_reader(),
            service_entries: service_entries.as_reader(),
            virtual_services: virtual_services.as_reader(),
            destination_rules: destination_rules.as_reader(),
            peer_authentications: peer_authentications.as_reader(),
        };

        let c = || client.clone();
        tasks.push(runtime.spawn(watch::core(
            Api::all(c()),
            pods,
            prune::pod,
            report(Kind::Pod),
        )));
        tasks.push(runtime.spawn(watch::core(
            Api::all(c()),
            services,
            prune::service,
            report(Kind::Service),
        )));
        tasks.push(runtime.spawn(watch::core(
            Api::all(c()),
            endpoint_slices,
            prune::endpoint_slice,
            report(Kind::EndpointSlice),
        )));
        tasks.push(runtime.spawn(watch::core(
            Api::all(c()),
            namespaces,
            prune::namespace,
            report(Kind::Namespace),
        )));
        let timing = IstioTiming {
            recheck: options.crd_recheck,
            retry_max: Duration::from_secs(30),
        };
        tasks.push(runtime.spawn(watch::istio(
            c(),
            SERVICE_ENTRY,
            service_entries,
            report(Kind::ServiceEntry),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            VIRTUAL_SERVICE,
            virtual_services,
            report(Kind::VirtualService),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            DESTINATION_RULE,
            destination_rules,
            report(Kind::DestinationRule),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            PEER_AUTHENTICATION,
            peer_authentications,
            report(Kind::PeerAuthentication),
            timing,
        )));

        let (out, snapshots) = tokio::sync::watch::channel(None);
        tasks.push(runtime.spawn(snapshot::publish(
            stores,
            progress_rx,
            out,
            options.min_interval,
        )));
        Ok((snapshots, KubeSourceHandle { tasks }))
    }
}

fn istio_writer<T: Clone>(spec: &IstioKind) -> Writer<Typed<T>> {
    // The store keys objects by name and namespace; the version in its
    // resource does not matter, so the first one to try serves for all.
    Writer::new(spec.resource(spec.versions[0]))
}

/// Keeps the watchers running; dropping it stops them.
#[derive(Debug)]
pub struct KubeSourceHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSourceHandle {
    /// Stops every watcher and the snapshot publisher.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for KubeSourceHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
