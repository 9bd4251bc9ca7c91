//! The kube source: the declared world read from the Kubernetes API.
//!
//! Watchers follow Pods, Services, EndpointSlices, Namespaces and Istio's
//! ServiceEntries, VirtualServices, DestinationRules and PeerAuthentications
//! cluster-wide (attribution needs destination pods on every node), and
//! deliver every change as it happens, in batches: [`Change`]s, each object
//! already in the slim form the index keeps. The source keeps no object: a
//! full Pod is about 5 KB, and every agent watches every pod.
//!
//! Every kind is first listed (`Listing`, its objects, `Listed`); once all
//! have been, batches come at most one per `min_interval`, so a rollout of
//! hundreds of pods costs a few updates.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use meshdrift::inventory::{Index, kube::KubeSource};
//! let client = KubeSource::connect().await?;
//! let (mut batches, _handle) = KubeSource::start(client).await?;
//! let mut index = Index::default();
//! while let Some(batch) = batches.recv().await {
//!     for change in &batch {
//!         index.apply(change);
//!     }
//! }
//! # Ok(()) }
//! ```

mod batch;
mod health;
mod istio;
mod prune;
mod watch;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::Api;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::{self, Change, Kind, NamespaceInfo, Object};
use istio::{DESTINATION_RULE, PEER_AUTHENTICATION, SERVICE_ENTRY, Typed, VIRTUAL_SERVICE};
use watch::{IstioTiming, Watched};

pub use batch::Listed;
pub use health::SourceHealth;

/// Batches of changes, in the order they happened.
pub type Batches = mpsc::Receiver<Vec<Change>>;

#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error("cannot configure a Kubernetes client")]
    Connect(#[source] kube::Error),
    #[error("the kube source needs a running tokio runtime")]
    NoRuntime,
}

#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// The shortest time between two batches once every kind has listed.
    pub min_interval: Duration,
    /// How often an Istio kind that is not served is looked for again.
    pub crd_recheck: Duration,
    /// Where each kind's failures to list or watch are told (for readiness).
    pub health: SourceHealth,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            min_interval: Duration::from_secs(1),
            crd_recheck: Duration::from_secs(60),
            health: SourceHealth::default(),
        }
    }
}

pub struct KubeSource;

/// Changes a watcher may get ahead of the batcher by.
const WATCHER_BUFFER: usize = 1024;

impl KubeSource {
    /// A client from the in-cluster service account, or the kubeconfig
    /// outside a cluster.
    pub async fn connect() -> Result<Client, KubeSourceError> {
        Client::try_default()
            .await
            .map_err(KubeSourceError::Connect)
    }

    /// Starts watching with the default options.
    pub async fn start(client: Client) -> Result<(Batches, KubeSourceHandle), KubeSourceError> {
        Self::start_with(client, KubeSourceOptions::default()).await
    }

    /// Starts watching. The watchers run until the handle is dropped or the
    /// batches' receiver is.
    pub async fn start_with(
        client: Client,
        options: KubeSourceOptions,
    ) -> Result<(Batches, KubeSourceHandle), KubeSourceError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| KubeSourceError::NoRuntime)?;
        let (changes_tx, changes) = mpsc::channel(WATCHER_BUFFER);
        let tx = || changes_tx.clone();
        let c = || client.clone();
        let health = options.health.clone();
        let mut tasks = vec![
            runtime.spawn(watch::core(
                Api::<Pod>::all(c()),
                Watched {
                    kind: Kind::Pod,
                    convert: |pod| Some(Object::Pod(Box::new(model::Pod::from(&pod)))),
                    health: health.clone(),
                },
                |_| {},
                tx(),
            )),
            runtime.spawn(watch::core(
                Api::<Service>::all(c()),
                Watched {
                    kind: Kind::Service,
                    convert: |service| Some(Object::Service(Box::new(service))),
                    health: health.clone(),
                },
                prune::service,
                tx(),
            )),
            runtime.spawn(watch::core(
                Api::<EndpointSlice>::all(c()),
                Watched {
                    kind: Kind::EndpointSlice,
                    convert: |slice| Some(Object::EndpointSlice(Box::new(slice))),
                    health: health.clone(),
                },
                prune::endpoint_slice,
                tx(),
            )),
            runtime.spawn(watch::core(
                Api::<Namespace>::all(c()),
                Watched {
                    kind: Kind::Namespace,
                    convert: |namespace| NamespaceInfo::of(&namespace).map(Object::Namespace),
                    health: health.clone(),
                },
                prune::namespace,
                tx(),
            )),
        ];
        let timing = IstioTiming {
            recheck: options.crd_recheck,
            retry_max: Duration::from_secs(30),
        };
        tasks.push(runtime.spawn(watch::istio(
            c(),
            SERVICE_ENTRY,
            Watched {
                kind: Kind::ServiceEntry,
                convert: |typed: Typed<model::ServiceEntry>| {
                    typed.value.map(|v| Object::ServiceEntry(Box::new(v)))
                },
                health: health.clone(),
            },
            tx(),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            VIRTUAL_SERVICE,
            Watched {
                kind: Kind::VirtualService,
                convert: |typed: Typed<model::VirtualService>| {
                    typed.value.map(|v| Object::VirtualService(Box::new(v)))
                },
                health: health.clone(),
            },
            tx(),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            DESTINATION_RULE,
            Watched {
                kind: Kind::DestinationRule,
                convert: |typed: Typed<model::DestinationRule>| {
                    typed.value.map(|v| Object::DestinationRule(Box::new(v)))
                },
                health: health.clone(),
            },
            tx(),
            timing,
        )));
        tasks.push(runtime.spawn(watch::istio(
            c(),
            PEER_AUTHENTICATION,
            Watched {
                kind: Kind::PeerAuthentication,
                convert: |typed: Typed<model::PeerAuthentication>| {
                    typed.value.map(|v| Object::PeerAuthentication(Box::new(v)))
                },
                health: health.clone(),
            },
            tx(),
            timing,
        )));
        drop(changes_tx);
        let (out, batches) = mpsc::channel(1);
        tasks.push(runtime.spawn(batch::run(changes, out, options.min_interval)));
        Ok((batches, KubeSourceHandle { tasks }))
    }
}

/// Keeps the watchers running; dropping it stops them.
#[derive(Debug)]
pub struct KubeSourceHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSourceHandle {
    /// Stops every watcher and the batcher.
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
