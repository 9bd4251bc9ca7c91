//! Label sets of the metric families. Each field is a label; none of them can take
//! a per-pod or per-connection value.

use prometheus_client::encoding::EncodeLabelSet;

use crate::observation::{Observation, Workload};

/// Traffic from one source workload to one subset of a host, over one transport.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TrafficLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
    /// Empty when the host has no subsets or the flow reached an unexpected destination.
    pub destination_subset: String,
    pub transport: &'static str,
}

/// Traffic into the mesh around its proxies.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BypassLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
    /// Empty when no subset's labels match the pod, or the pod is unknown.
    pub destination_subset: String,
    pub reason: &'static str,
}

/// One split under test: a source workload, host and Service port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SplitLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
}

/// One client pod's split (a drifting pod: healthy pods have no series).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PodSplitLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub source_pod: String,
    pub destination_host: String,
    pub destination_port: u16,
}

/// One subset of a drifting client pod's split.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PodSubsetLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub source_pod: String,
    pub destination_host: String,
    pub destination_port: u16,
    pub destination_subset: String,
}

/// One subset of a split.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SubsetLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
    pub destination_subset: String,
}

/// Expected against observed transport for one source workload, host and subset.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransportLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_subset: String,
    pub expected: &'static str,
    pub observed: &'static str,
}

/// One endpoint pod of a cluster, as a source workload reaches it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EndpointLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
    pub destination_subset: String,
    /// `namespace/pod`, or the address when the endpoint is not a pod.
    pub destination_pod: String,
}

/// One traffic-policy check of a source workload's cluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PolicyLabels {
    pub source_namespace: String,
    pub source_workload: String,
    pub destination_host: String,
    pub destination_port: u16,
    pub destination_subset: String,
    pub check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct FindingLabels {
    pub code: String,
    pub severity: &'static str,
}

/// A single free-form dimension of agent health (`kind`, `version`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub version: String,
}

impl SplitLabels {
    pub fn new(source: &Workload, host: &str, port: u16) -> Self {
        SplitLabels {
            source_namespace: source.namespace.clone(),
            source_workload: source.name.clone(),
            destination_host: host.to_owned(),
            destination_port: port,
        }
    }

    pub fn with_subset(&self, subset: Option<&str>) -> SubsetLabels {
        SubsetLabels {
            source_namespace: self.source_namespace.clone(),
            source_workload: self.source_workload.clone(),
            destination_host: self.destination_host.clone(),
            destination_port: self.destination_port,
            destination_subset: subset.unwrap_or_default().to_owned(),
        }
    }
}

impl EndpointLabels {
    /// Whether these labels are the ones `of(observation, subset, endpoint)`
    /// would make, compared without building them.
    pub fn describe(&self, observation: &Observation, subset: &str, endpoint: &str) -> bool {
        self.destination_port == observation.key.port
            && self.destination_pod == endpoint
            && self.destination_host == observation.key.host
            && self.destination_subset == subset
            && self.source_workload == observation.key.source.name
            && self.source_namespace == observation.key.source.namespace
    }

    pub fn of(observation: &Observation, subset: &str, endpoint: &str) -> Self {
        EndpointLabels {
            source_namespace: observation.key.source.namespace.clone(),
            source_workload: observation.key.source.name.clone(),
            destination_host: observation.key.host.clone(),
            destination_port: observation.key.port,
            destination_subset: subset.to_owned(),
            destination_pod: endpoint.to_owned(),
        }
    }
}

impl TrafficLabels {
    /// Whether these labels are the ones `of(observation, subset)` would make,
    /// compared without building them.
    pub fn describe(&self, observation: &Observation, subset: Option<&str>) -> bool {
        self.destination_port == observation.key.port
            && self.transport == observation.transport.as_str()
            && self.destination_host == observation.key.host
            && self.destination_subset == subset.unwrap_or_default()
            && self.source_workload == observation.key.source.name
            && self.source_namespace == observation.key.source.namespace
    }

    pub fn of(observation: &Observation, subset: Option<&str>) -> Self {
        TrafficLabels {
            source_namespace: observation.key.source.namespace.clone(),
            source_workload: observation.key.source.name.clone(),
            destination_host: observation.key.host.clone(),
            destination_port: observation.key.port,
            destination_subset: subset.unwrap_or_default().to_owned(),
            transport: observation.transport.as_str(),
        }
    }
}
