//! Who is who: pods by IP and labels, services (Kubernetes Services and
//! ServiceEntry hosts) by name, their ports and endpoints.
//!
//! Sources produce [`crate::model::Objects`] (`files`) or one
//! [`crate::model::Change`] at a time (`kube`); the [`Index`] built and kept
//! up to date from them is what the rest of meshdrift reads.

pub mod files;
mod index;
pub mod kube;
mod names;
mod pod;
mod postings;
mod protocol;
mod service;
mod service_entry;
pub mod sidecar;
mod slab;

pub use index::{Index, InventoryCounts, PodId};
pub use names::{Name, PodLabels};
pub use pod::{PodInfo, TLS_MODE_LABEL};
pub use protocol::{PortProtocol, RouteKind};
pub use service::{
    EndpointInfo, EndpointPort, EndpointSource, ServiceInfo, ServiceOrigin, ServicePortInfo,
    TargetPort,
};

/// The cluster DNS domain every Service name lives under.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
