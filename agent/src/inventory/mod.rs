//! Who is who: pods by IP and labels, services (Kubernetes Services and
//! ServiceEntry hosts) by name, their ports and endpoints.
//!
//! Sources (`files`, the `kube` reflectors) only produce [`crate::model::Objects`];
//! the [`Index`] built from them is what the rest of meshdrift reads.

pub mod files;
mod index;
pub mod kube;
mod protocol;
mod service_entry;
pub mod sidecar;

pub use index::{
    EndpointInfo, EndpointPort, EndpointSource, Index, PodId, PodInfo, ServiceInfo, ServiceOrigin,
    ServicePortInfo, TLS_MODE_LABEL, TargetPort,
};
pub use protocol::{PortProtocol, RouteKind};

/// The cluster DNS domain every Service name lives under.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
