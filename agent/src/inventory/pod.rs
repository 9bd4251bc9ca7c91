//! A pod as the index keeps it: what attribution and policy read, with the
//! strings pods repeat interned, in a few hundred bytes.

use std::net::IpAddr;
use std::sync::Arc;

use super::names::{Interner, Name, PodLabels};
use super::sidecar::Sidecar;
use crate::model::{Pod, ambient::AmbientMark};

/// Label that sidecar injection sets on pods that run an Istio proxy.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: Name,
    pub name: Box<str>,
    pub labels: PodLabels,
    /// All pod IPs (`status.podIPs`, else `status.podIP`).
    pub ips: Box<[IpAddr]>,
    /// Owning workload: the Deployment behind a ReplicaSet, another
    /// controller's name, or the pod's own name when it has no owner.
    pub workload: Name,
    pub node: Option<Name>,
    pub host_network: bool,
    /// Named container ports, for Services whose `targetPort` is a name.
    pub container_ports: Box<[(Name, u16)]>,
    pub phase: Option<Name>,
    /// The Istio sidecar and its interception, if the pod has one. Shared:
    /// most sidecars are configured alike.
    pub sidecar: Option<Arc<Sidecar>>,
    /// What the pod's own labels and annotations say of ambient mode; the
    /// index joins its namespace's ([`super::Index::in_ambient`]).
    pub ambient: AmbientMark,
    /// When the API server created it, in seconds since the Unix epoch (0:
    /// not known): which pod an address belonged to when a connection was
    /// made ([`super::Index::pod_by_ip_at`]).
    pub created: u32,
}

impl PodInfo {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// True when sidecar injection marked the pod as speaking Istio mTLS.
    pub fn has_istio_tls_mode(&self) -> bool {
        self.labels.get(TLS_MODE_LABEL) == Some("istio")
    }

    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    pub(crate) fn container_port(&self, name: &str) -> Option<u16> {
        self.container_ports
            .iter()
            .find(|(port_name, _)| port_name.as_str() == name)
            .map(|(_, number)| *number)
    }

    /// The IPs other pods and Services find this pod by.
    pub(crate) fn routable_ips(&self) -> &[IpAddr] {
        if self.host_network { &[] } else { &self.ips }
    }

    /// The node addresses a hostNetwork pod shares with its node (none for
    /// other pods).
    pub(crate) fn node_ips(&self) -> &[IpAddr] {
        if self.host_network { &self.ips } else { &[] }
    }

    /// Gives the pod's interned strings back.
    pub(crate) fn release(self, interner: &mut Interner) {
        interner.release(self.namespace);
        interner.release(self.workload);
        self.labels.release(interner);
        for name in self.node.into_iter().chain(self.phase) {
            interner.release(name);
        }
        for (name, _) in self.container_ports {
            interner.release(name);
        }
    }
}

/// The sidecar of most injected pods: no interception annotations.
fn plain_sidecar() -> Arc<Sidecar> {
    static PLAIN: std::sync::OnceLock<Arc<Sidecar>> = std::sync::OnceLock::new();
    Arc::clone(PLAIN.get_or_init(|| Arc::new(Sidecar::default())))
}

/// A pod without a name cannot be told apart from another: `None`.
pub(crate) fn pod_info(pod: &Pod, interner: &mut Interner) -> Option<PodInfo> {
    let name = pod.metadata.name.as_deref()?;
    let workload = interner.intern(&workload_of(pod, name));
    let namespace = interner.intern(
        pod.metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("default"),
    );
    let status = &pod.status;
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
        pod.spec.containers.iter().map(|c| c.name.as_str()),
        &pod.metadata.annotations,
        &pod.metadata.labels,
    )
    .map(|sidecar| {
        if sidecar == Sidecar::default() {
            plain_sidecar()
        } else {
            Arc::new(sidecar)
        }
    });
    let container_ports = pod
        .spec
        .containers
        .iter()
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            let number = u16::try_from(p.container_port).ok()?;
            Some((interner.intern(p.name.as_deref()?), number))
        })
        .collect();
    Some(PodInfo {
        workload,
        namespace,
        name: name.into(),
        labels: PodLabels::intern(&pod.metadata.labels, interner),
        ips: ips.into_boxed_slice(),
        node: pod.spec.node_name.as_deref().map(|n| interner.intern(n)),
        host_network: pod.spec.host_network.unwrap_or(false),
        container_ports,
        phase: status.phase.as_deref().map(|p| interner.intern(p)),
        sidecar,
        ambient: AmbientMark::of_pod(&pod.metadata.labels, &pod.metadata.annotations),
        created: pod
            .metadata
            .creation_timestamp
            .as_deref()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .and_then(|t| u32::try_from(t.as_second()).ok())
            .unwrap_or(0),
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
