//! One change to the declared world, as a watching source sees it: an
//! object applied or deleted, and the start and end of a (re)list of a kind.
//! Consumers update what they derived from that kind alone, instead of
//! rebuilding from a whole [`Objects`](super::Objects) snapshot.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{DestinationRule, PeerAuthentication, Pod, ServiceEntry, VirtualService};

/// The kinds meshdrift reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    EndpointSlice,
    Namespace,
    ServiceEntry,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::ServiceEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
        }
    }

    /// The API resource, as RBAC rules name it (`endpointslices.discovery.k8s.io`).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices.discovery.k8s.io",
            Kind::Namespace => "namespaces",
            Kind::ServiceEntry => "serviceentries.networking.istio.io",
            Kind::VirtualService => "virtualservices.networking.istio.io",
            Kind::DestinationRule => "destinationrules.networking.istio.io",
            Kind::PeerAuthentication => "peerauthentications.security.istio.io",
        }
    }

    /// Istio's policy kinds, which the policy index reads; the others feed
    /// the inventory.
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Kind::VirtualService | Kind::DestinationRule | Kind::PeerAuthentication
        )
    }
}

/// Namespace and name; a Namespace's own key has an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What meshdrift reads of a Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    /// Its labels enroll its pods in Istio's ambient mode.
    pub ambient: bool,
}

impl NamespaceInfo {
    pub fn of(namespace: &k8s_openapi::api::core::v1::Namespace) -> Option<Self> {
        let name = namespace.metadata.name.clone()?;
        let ambient = namespace
            .metadata
            .labels
            .as_ref()
            .is_some_and(super::ambient::namespace_is_ambient);
        Some(NamespaceInfo { name, ambient })
    }
}

/// An object of one of the kinds, in the form meshdrift keeps (pods slim).
#[derive(Debug, Clone)]
pub enum Object {
    Pod(Box<Pod>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    /// A Namespace: its name and whether it enrolls its pods in ambient mode.
    Namespace(NamespaceInfo),
    ServiceEntry(Box<ServiceEntry>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
    PeerAuthentication(Box<PeerAuthentication>),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Namespace(_) => Kind::Namespace,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Change {
    /// A (re)list of the kind begins: what is not applied again before
    /// [`Change::Listed`] no longer exists.
    Listing(Kind),
    /// Created or modified.
    Applied(Object),
    Deleted(Kind, ObjectKey),
    /// The (re)list of the kind is complete.
    Listed(Kind),
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Change::Listing(kind) | Change::Listed(kind) | Change::Deleted(kind, _) => *kind,
            Change::Applied(object) => object.kind(),
        }
    }
}
