//! The Istio policy model: what the mesh configuration declares.
//!
//! Pure: manifests in ([`crate::model::Objects`] and the
//! [`crate::inventory::Index`]), expectation out. The semantics follow Istio's
//! own code, not intuition: `docs/istio-semantics.md` states each rule with
//! its source, and each module cites the rules it reproduces.

pub mod check;
mod cidr;
mod destination_rule;
mod expectation;
pub mod host;
mod matching;
mod mtls;
mod peer_authentication;
mod policies;
mod store;
pub mod traffic;
mod visibility;

pub use check::check;
pub use destination_rule::{MergedRule, TlsLevel, cluster_tls, endpoint_tls_mode};
pub use expectation::{
    Candidate, DestinationExpectation, EndpointExpectation, ExpectError, Expectation, ExpectedTls,
    RouteRef, TlsExpectation, TlsSource, normalised_weights, resolve_client_host,
};
pub use policies::{Policies, PolicyCounts, VirtualServiceEntry};
pub use store::PolicyStore;

/// Istio's root namespace: mesh-wide DestinationRules and PeerAuthentications live here.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The implicit gateway name of sidecars.
pub const MESH_GATEWAY: &str = "mesh";
