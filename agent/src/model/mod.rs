//! The Kubernetes and Istio objects meshdrift reads, as typed data: the leaf
//! that both the inventory (who is who) and the policy engine (what is
//! declared) build on. Sources (manifest files, the Kubernetes API) produce
//! [`Objects`] (or, watching, one [`Change`] at a time); nothing here knows where they came from or what they mean for
//! traffic.

pub mod ambient;
mod change;
pub mod istio;
mod labels;
mod meta;
pub mod pod;
pub mod traffic_policy;

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::{Deserialize, Deserializer};

pub use change::{Change, Kind, NamespaceInfo, Object, ObjectKey};
pub use istio::{DestinationRule, PeerAuthentication, ServiceEntry, VirtualService};
pub use labels::{LabelLookup, Labels, selector_matches};
pub use meta::{config_order, namespace_of};
pub use pod::Pod;

/// Deserialises `null` as the type's default, so `hosts:` alone means "no hosts".
pub(crate) fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Everything a source loaded, typed, before indexing.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub namespaces: Vec<Namespace>,
    pub service_entries: Vec<ServiceEntry>,
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
            + self.service_entries.len()
            + self.virtual_services.len()
            + self.destination_rules.len()
            + self.peer_authentications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
