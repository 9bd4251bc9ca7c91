//! Who is who: pods by IP and labels, services by FQDN, their ports and
//! endpoints.
//!
//! Sources (`files`, later the kube reflectors) only produce [`Objects`]; the
//! [`Index`] built from them is what the rest of meshdrift reads.

pub mod files;
mod index;
pub mod kube;
mod labels;
mod protocol;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::policy::model::{DestinationRule, PeerAuthentication, VirtualService};

pub use index::{
    EndpointInfo, EndpointPort, EndpointSource, Index, PodId, PodInfo, ServiceInfo,
    ServicePortInfo, TLS_MODE_LABEL, TargetPort,
};
pub use labels::{Labels, selector_matches};
pub use protocol::{PortProtocol, RouteKind};

/// The cluster DNS domain every Service name lives under.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Everything a source loaded, typed, before indexing.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub namespaces: Vec<Namespace>,
    pub virtual_services: Vec<VirtualService>,
    pub destination_rules: Vec<DestinationRule>,
    pub peer_authentications: Vec<PeerAuthentication>,
}

impl Objects {
    /// How many objects of the kinds meshdrift understands were loaded.
    pub fn len(&self) -> usize {
        self.pods.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.namespaces.len()
            + self.virtual_services.len()
            + self.destination_rules.len()
            + self.peer_authentications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
