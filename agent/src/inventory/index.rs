//! The inventory index: compact, read-only views of pods and services built
//! once from [`Objects`], with the lookups attribution and policy need.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tracing::debug;

use super::CLUSTER_DOMAIN;
use super::protocol::PortProtocol;
use super::service_entry;
use super::sidecar::Sidecar;
use crate::model::{Labels, Objects, Pod, selector_matches};

/// Label that sidecar injection sets on pods that run an Istio proxy.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// The label EndpointSlices use to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Position of a pod in the index; stable for the life of one index.
pub type PodId = usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// All pod IPs (`status.podIPs`, else `status.podIP`).
    pub ips: Vec<IpAddr>,
    /// Owning workload: the Deployment behind a ReplicaSet, another
    /// controller's name, or the pod's own name when it has no owner.
    pub workload: String,
    pub node: Option<String>,
    pub host_network: bool,
    /// Named container ports, for Services whose `targetPort` is a name.
    pub container_ports: Vec<(String, u16)>,
    pub phase: Option<String>,
    /// The Istio sidecar and its interception, if the pod has one.
    pub sidecar: Option<Sidecar>,
}

impl PodInfo {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when sidecar injection marked the pod as speaking Istio mTLS.
    pub fn has_istio_tls_mode(&self) -> bool {
        self.labels
            .get(TLS_MODE_LABEL)
            .is_some_and(|v| v == "istio")
    }

    fn is_terminal(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    fn container_port(&self, name: &str) -> Option<u16> {
        self.container_ports
            .iter()
            .find(|(port_name, _)| port_name == name)
            .map(|(_, number)| *number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub pod: Option<PodId>,
    pub ready: bool,
    pub ports: Vec<EndpointPort>,
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
}

/// Postings of one namespace: label key → value → pods.
type LabelPostings = HashMap<String, HashMap<String, Vec<PodId>>>;

#[derive(Debug, Default)]
pub struct Index {
    pods: Vec<PodInfo>,
    pod_by_ip: HashMap<IpAddr, PodId>,
    pod_by_name: HashMap<String, HashMap<String, PodId>>,
    pods_by_namespace: HashMap<String, Vec<PodId>>,
    postings: HashMap<String, LabelPostings>,
    services: Vec<ServiceInfo>,
    service_by_fqdn: HashMap<String, usize>,
    /// ServiceEntry hosts that start with `*`.
    wildcard_services: Vec<usize>,
    namespaces: BTreeSet<String>,
    warnings: Vec<String>,
}

impl Index {
    pub fn build(objects: &Objects) -> Index {
        Self::build_with_pods(objects.pods.iter().cloned(), objects)
    }

    /// Builds the index from objects no longer needed: each pod's names and
    /// labels move into the index instead of being copied, so a large
    /// manifest directory is not held twice.
    pub fn from_objects(mut objects: Objects) -> Index {
        let pods = std::mem::take(&mut objects.pods);
        Self::build_with_pods(pods.into_iter(), &objects)
    }

    fn build_with_pods(pods: impl Iterator<Item = Pod>, objects: &Objects) -> Index {
        let mut index = Index::default();
        for pod in pods {
            if let Some(info) = pod_info(pod) {
                index.add_pod(info);
            }
        }
        for namespace in &objects.namespaces {
            if let Some(name) = &namespace.metadata.name {
                index.namespaces.insert(name.clone());
            }
        }
        let slices = slices_by_service(&objects.endpoint_slices);
        for service in &objects.services {
            if let Some(info) = index.service_info(service, &slices) {
                index.add_service(info);
            }
        }
        // After the Services: a Service keeps its name if an entry repeats it.
        for entry in &objects.service_entries {
            for info in service_entry::service_infos(&index, entry) {
                index.add_service(info);
            }
        }
        debug!(
            pods = index.pods.len(),
            services = index.services.len(),
            "inventory index built"
        );
        index
    }

    fn add_pod(&mut self, info: PodInfo) {
        let id = self.pods.len();
        if !info.host_network {
            for ip in &info.ips {
                if let Some(previous) = self.pod_by_ip.insert(*ip, id) {
                    // Keep the first: a reused IP usually means a stale pod in the manifests.
                    self.pod_by_ip.insert(*ip, previous);
                    self.warnings.push(format!(
                        "pod {} has IP {ip} already held by pod {}; keeping the first",
                        info.key(),
                        self.pods[previous].key()
                    ));
                }
            }
        }
        for problem in info.sidecar.iter().flat_map(|s| &s.unreadable) {
            self.warnings
                .push(format!("pod {}: annotation {problem}; ignored", info.key()));
        }
        let postings = self.postings.entry(info.namespace.clone()).or_default();
        for (key, value) in &info.labels {
            let values = match postings.get_mut(key) {
                Some(values) => values,
                None => postings.entry(key.clone()).or_default(),
            };
            match values.get_mut(value) {
                Some(ids) => ids.push(id),
                None => {
                    values.insert(value.clone(), vec![id]);
                }
            }
        }
        self.pods_by_namespace
            .entry(info.namespace.clone())
            .or_default()
            .push(id);
        self.pod_by_name
            .entry(info.namespace.clone())
            .or_default()
            .insert(info.name.clone(), id);
        self.namespaces.insert(info.namespace.clone());
        self.pods.push(info);
    }

    fn add_service(&mut self, info: ServiceInfo) {
        self.namespaces.insert(info.namespace.clone());
        let id = self.services.len();
        if info.fqdn.starts_with('*') {
            self.wildcard_services.push(id);
        } else if self.service_by_fqdn.contains_key(&info.fqdn) {
            return;
        } else {
            self.service_by_fqdn.insert(info.fqdn.clone(), id);
        }
        self.services.push(info);
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pod_by_ip.get(&ip).map(|&id| &self.pods[id])
    }

    pub fn pod_id_by_ip(&self, ip: IpAddr) -> Option<PodId> {
        self.pod_by_ip.get(&ip).copied()
    }

    pub fn pod(&self, id: PodId) -> Option<&PodInfo> {
        self.pods.get(id)
    }

    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pod_by_name
            .get(namespace)
            .and_then(|names| names.get(name))
            .map(|&id| &self.pods[id])
    }

    pub fn pods(&self) -> &[PodInfo] {
        &self.pods
    }

    /// Pods whose labels contain `selector`, in one namespace or (`None`) all.
    pub fn pods_matching(&self, namespace: Option<&str>, selector: &Labels) -> Vec<PodId> {
        match namespace {
            Some(ns) => self.pods_matching_in(ns, selector),
            None => {
                let mut all: Vec<PodId> = self
                    .pods_by_namespace
                    .keys()
                    .flat_map(|ns| self.pods_matching_in(ns, selector))
                    .collect();
                all.sort_unstable();
                all
            }
        }
    }

    fn pods_matching_in(&self, namespace: &str, selector: &Labels) -> Vec<PodId> {
        self.pods_matching_iter(namespace, selector).collect()
    }

    /// Pods of `namespace` whose labels contain `selector`, found lazily: a
    /// caller that needs one (or three) stops there.
    pub fn pods_matching_iter<'s>(
        &'s self,
        namespace: &str,
        selector: &'s Labels,
    ) -> impl Iterator<Item = PodId> + 's {
        self.candidates(namespace, selector)
            .iter()
            .copied()
            .filter(move |&id| selector_matches(selector, &self.pods[id].labels))
    }

    /// The shortest posting list among the selector's labels (every pod of
    /// the namespace for an empty selector), so the scan stays short.
    fn candidates(&self, namespace: &str, selector: &Labels) -> &[PodId] {
        if selector.is_empty() {
            return self
                .pods_by_namespace
                .get(namespace)
                .map_or(&[], Vec::as_slice);
        }
        let Some(postings) = self.postings.get(namespace) else {
            return &[];
        };
        let mut shortest: &[PodId] = &[];
        for (i, (key, value)) in selector.iter().enumerate() {
            match postings.get(key).and_then(|values| values.get(value)) {
                None => return &[],
                Some(ids) if i == 0 || ids.len() < shortest.len() => shortest = ids,
                Some(_) => {}
            }
        }
        shortest
    }

    pub fn service(&self, fqdn: &str) -> Option<&ServiceInfo> {
        self.service_by_fqdn.get(fqdn).map(|&i| &self.services[i])
    }

    pub fn services(&self) -> &[ServiceInfo] {
        &self.services
    }

    /// ServiceEntry hosts with a wildcard (`*.example.com`), which
    /// [`Index::service`] does not find by name.
    pub fn wildcard_services(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.wildcard_services.iter().map(|&i| &self.services[i])
    }

    /// Namespaces seen in Namespace objects, pods or services.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.iter().map(String::as_str)
    }

    /// Inconsistencies met while indexing (such as two pods with one IP).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn service_info(
        &self,
        service: &Service,
        slices: &HashMap<(String, String), Vec<&EndpointSlice>>,
    ) -> Option<ServiceInfo> {
        let name = service.metadata.name.clone()?;
        let namespace = namespace_of(&service.metadata.namespace);
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
        let (endpoints, endpoints_from) = match slices.get(&(namespace.clone(), name.clone())) {
            Some(slices) => (
                self.endpoints_from_slices(&namespace, &ports, slices),
                EndpointSource::EndpointSlices,
            ),
            None => match &selector {
                Some(selector) => (
                    self.endpoints_from_selector(&namespace, &ports, selector),
                    EndpointSource::Selector,
                ),
                None => (Vec::new(), EndpointSource::None),
            },
        };
        Some(ServiceInfo {
            origin: ServiceOrigin::Service,
            fqdn: format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}"),
            namespace,
            name,
            selector,
            cluster_ips,
            ports,
            endpoints,
            endpoints_from,
            headless,
            mesh_external: false,
            export_to: Vec::new(),
        })
    }

    pub(super) fn endpoints_from_selector(
        &self,
        namespace: &str,
        ports: &[ServicePortInfo],
        selector: &Labels,
    ) -> Vec<EndpointInfo> {
        self.pods_matching_in(namespace, selector)
            .into_iter()
            .filter_map(|id| {
                let pod = &self.pods[id];
                if pod.is_terminal() {
                    return None;
                }
                let ip = *pod.ips.first()?;
                let ports = ports
                    .iter()
                    .filter_map(|p| {
                        let target_port = match &p.target_port {
                            TargetPort::Number(n) => *n,
                            TargetPort::Name(name) => pod.container_port(name)?,
                        };
                        Some(EndpointPort {
                            service_port: p.port,
                            target_port,
                        })
                    })
                    .collect();
                Some(EndpointInfo {
                    ip,
                    pod: Some(id),
                    ready: true,
                    ports,
                })
            })
            .collect()
    }

    fn endpoints_from_slices(
        &self,
        namespace: &str,
        ports: &[ServicePortInfo],
        slices: &[&EndpointSlice],
    ) -> Vec<EndpointInfo> {
        let mut out = Vec::new();
        for slice in slices {
            let slice_ports: Vec<EndpointPort> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|sp| {
                    let slice_name = sp.name.as_deref().unwrap_or("");
                    let service_port = ports
                        .iter()
                        .find(|p| p.name.as_deref().unwrap_or("") == slice_name)?;
                    Some(EndpointPort {
                        service_port: service_port.port,
                        target_port: u16::try_from(sp.port?).ok()?,
                    })
                })
                .collect();
            for endpoint in slice.endpoints.iter().flatten() {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                let pod_by_ref = endpoint
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        let ns = r.namespace.as_deref().unwrap_or(namespace);
                        self.pod_by_name.get(ns)?.get(r.name.as_deref()?).copied()
                    });
                for address in &endpoint.addresses {
                    let Ok(ip) = address.parse::<IpAddr>() else {
                        continue;
                    };
                    out.push(EndpointInfo {
                        ip,
                        pod: pod_by_ref.or_else(|| self.pod_id_by_ip(ip)),
                        ready,
                        ports: slice_ports.clone(),
                    });
                }
            }
        }
        out
    }
}

fn namespace_of(namespace: &Option<String>) -> String {
    namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn slices_by_service(slices: &[EndpointSlice]) -> HashMap<(String, String), Vec<&EndpointSlice>> {
    let mut out: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        out.entry((namespace_of(&slice.metadata.namespace), service.clone()))
            .or_default()
            .push(slice);
    }
    out
}

fn pod_info(pod: Pod) -> Option<PodInfo> {
    let workload = workload_of(&pod, pod.metadata.name.as_deref()?);
    let Pod {
        metadata,
        spec,
        status,
    } = pod;
    let name = metadata.name?;
    let namespace = namespace_of(&metadata.namespace);
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    let sidecar = Sidecar::of_pod(
        spec.containers.iter().map(|c| c.name.as_str()),
        &metadata.annotations,
        &metadata.labels,
    );
    let container_ports = spec
        .containers
        .into_iter()
        .flat_map(|c| c.ports)
        .filter_map(|p| Some((p.name?, u16::try_from(p.container_port).ok()?)))
        .collect();
    Some(PodInfo {
        workload,
        namespace,
        name,
        labels: metadata.labels,
        ips,
        node: spec.node_name,
        host_network: spec.host_network.unwrap_or(false),
        container_ports,
        phase: status.phase,
        sidecar,
    })
}

/// The controller that owns the pod, with a ReplicaSet mapped to its
/// Deployment by dropping the pod-template hash.
fn workload_of(pod: &Pod, pod_name: &str) -> String {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| pod.metadata.owner_references.first());
    match owner {
        Some(owner) if owner.kind == "ReplicaSet" => match owner.name.rsplit_once('-') {
            Some((deployment, _hash)) if !deployment.is_empty() => deployment.to_owned(),
            _ => owner.name.clone(),
        },
        Some(owner) => owner.name.clone(),
        None => pod_name.to_owned(),
    }
}
