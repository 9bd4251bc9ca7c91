//! Services as the index keeps them (Kubernetes Services and ServiceEntry
//! hosts), their ports and endpoints, and the slim form of an EndpointSlice.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::CLUSTER_DOMAIN;
use super::PodId;
use super::names::{Interner, Name};
use super::protocol::PortProtocol;
use crate::model::Labels;

/// The label EndpointSlices use to name their Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
    pub protocol: PortProtocol,
}

/// Where a Service's endpoints came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointSource {
    EndpointSlices,
    /// Derived from the selector and pod labels, as the endpoints controller would.
    Selector,
    /// Listed in a ServiceEntry's `endpoints`: addresses, not pods.
    ServiceEntry,
    None,
}

/// What declared a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOrigin {
    /// A Kubernetes Service.
    Service,
    /// One host of an Istio ServiceEntry.
    ServiceEntry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointPort {
    pub service_port: u16,
    pub target_port: u16,
}

/// How an endpoint names its pod. Resolved when read
/// ([`Index::endpoint_pod`](super::Index::endpoint_pod)), so pods coming and
/// going never have to find the endpoints that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodLink {
    /// Derived from a selector: exactly this pod.
    Pod(PodId),
    /// An EndpointSlice's `targetRef` (namespace, name), else by address.
    Ref(Arc<(Name, Box<str>)>),
    /// By address only.
    Address,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub ready: bool,
    pub ports: Arc<[EndpointPort]>,
    pub(crate) link: PodLink,
}

impl EndpointInfo {
    /// The port a sidecar connects to on this endpoint for a Service port.
    pub fn target_port(&self, service_port: u16) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.service_port == service_port)
            .map(|p| p.target_port)
    }
}

#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub origin: ServiceOrigin,
    pub namespace: String,
    /// The Service's name, or the ServiceEntry's.
    pub name: String,
    /// `<name>.<namespace>.svc.cluster.local`, or the ServiceEntry host (a
    /// wildcard host keeps its `*.`).
    pub fqdn: String,
    /// `None` for a Service without selector.
    pub selector: Option<Labels>,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePortInfo>,
    pub endpoints: Vec<EndpointInfo>,
    pub endpoints_from: EndpointSource,
    /// No virtual IP (`clusterIP: None`): clients connect to the pods
    /// directly, and Istio decides auto mTLS for the Service as a whole.
    pub headless: bool,
    /// Outside the mesh (a ServiceEntry with `location: MESH_EXTERNAL`):
    /// clients never use auto mTLS toward it.
    pub mesh_external: bool,
    /// A ServiceEntry's `exportTo`, as written (empty: everywhere).
    pub export_to: Vec<String>,
}

impl ServiceInfo {
    pub fn port(&self, number: u16) -> Option<&ServicePortInfo> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// `Service namespace/name` or `ServiceEntry namespace/name`.
    pub fn describe(&self) -> String {
        match self.origin {
            ServiceOrigin::Service => format!("Service {}", self.key()),
            ServiceOrigin::ServiceEntry => format!("ServiceEntry {}", self.key()),
        }
    }

    /// The ports every selector-derived endpoint shares when no target
    /// port is a name; `None` when they depend on the pod.
    pub(crate) fn uniform_ports(&self) -> Option<Arc<[EndpointPort]>> {
        self.ports
            .iter()
            .map(|p| match p.target_port {
                TargetPort::Number(target_port) => Some(EndpointPort {
                    service_port: p.port,
                    target_port,
                }),
                TargetPort::Name(_) => None,
            })
            .collect()
    }
}

pub(crate) fn namespace_or_default(namespace: Option<&str>) -> &str {
    namespace.filter(|n| !n.is_empty()).unwrap_or("default")
}

/// A Kubernetes Service, without endpoints yet.
pub(crate) fn service_info(service: &Service) -> Option<ServiceInfo> {
    let name = service.metadata.name.clone()?;
    let namespace = namespace_or_default(service.metadata.namespace.as_deref()).to_owned();
    let spec = service.spec.clone().unwrap_or_default();
    let ports: Vec<ServicePortInfo> = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target_port = match p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(n).ok()?),
                Some(IntOrString::String(s)) => match s.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Name(s),
                },
                None => TargetPort::Number(port),
            };
            let protocol = PortProtocol::detect(
                p.app_protocol.as_deref(),
                p.name.as_deref(),
                p.protocol.as_deref(),
            );
            Some(ServicePortInfo {
                name: p.name,
                port,
                target_port,
                app_protocol: p.app_protocol,
                protocol,
            })
        })
        .collect();
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if cluster_ips.is_empty()
        && let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        cluster_ips.push(ip);
    }
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let selector = spec.selector.filter(|s| !s.is_empty());
    Some(ServiceInfo {
        origin: ServiceOrigin::Service,
        fqdn: format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}"),
        namespace,
        name,
        selector,
        cluster_ips,
        ports,
        endpoints: Vec::new(),
        endpoints_from: EndpointSource::None,
        headless,
        mesh_external: false,
        export_to: Vec::new(),
    })
}

/// An EndpointSlice as the index keeps it: its Service, its ports by name,
/// and each address with its readiness and pod reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceInfo {
    pub(crate) service: Box<str>,
    pub(crate) ports: Box<[(Box<str>, u16)]>,
    pub(crate) endpoints: Box<[(IpAddr, bool, PodLink)]>,
}

impl SliceInfo {
    /// The endpoints this slice gives a Service with these ports.
    pub(crate) fn endpoints_for(&self, ports: &[ServicePortInfo]) -> Vec<EndpointInfo> {
        let slice_ports: Arc<[EndpointPort]> = self
            .ports
            .iter()
            .filter_map(|(slice_name, target_port)| {
                let service_port = ports
                    .iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == &**slice_name)?;
                Some(EndpointPort {
                    service_port: service_port.port,
                    target_port: *target_port,
                })
            })
            .collect();
        self.endpoints
            .iter()
            .map(|(ip, ready, link)| EndpointInfo {
                ip: *ip,
                ready: *ready,
                ports: Arc::clone(&slice_ports),
                link: link.clone(),
            })
            .collect()
    }
}

/// The slice's namespace, name and slim form; `None` without a name or a
/// Service label.
pub(crate) fn slice_info(
    slice: &EndpointSlice,
    interner: &mut Interner,
) -> Option<(String, String, SliceInfo)> {
    let name = slice.metadata.name.clone()?;
    let namespace = namespace_or_default(slice.metadata.namespace.as_deref()).to_owned();
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))?;
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            let port = u16::try_from(sp.port?).ok()?;
            Some((sp.name.as_deref().unwrap_or("").into(), port))
        })
        .collect();
    let mut endpoints = Vec::new();
    for endpoint in slice.endpoints.iter().flatten() {
        let ready = endpoint
            .conditions
            .as_ref()
            .and_then(|c| c.ready)
            .unwrap_or(true);
        let link = endpoint
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
            .and_then(|r| {
                let ns = r.namespace.as_deref().unwrap_or(&namespace);
                Some(PodLink::Ref(Arc::new((
                    interner.intern(ns),
                    r.name.as_deref()?.into(),
                ))))
            })
            .unwrap_or(PodLink::Address);
        for address in &endpoint.addresses {
            if let Ok(ip) = address.parse::<IpAddr>() {
                endpoints.push((ip, ready, link.clone()));
            }
        }
    }
    Some((
        namespace,
        name,
        SliceInfo {
            service: service.as_str().into(),
            ports,
            endpoints: endpoints.into_boxed_slice(),
        },
    ))
}
