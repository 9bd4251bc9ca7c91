//! A pod as far as meshdrift reads one: identity, labels, owners, IPs,
//! phase, node, host networking, named container ports, and what says
//! whether (and how) an Istio sidecar intercepts its traffic.
//!
//! Kubernetes' own Pod type holds every field of the API (about 5 KB per
//! pod before any string); a manifest directory or a cluster of 150 000
//! pods must fit in a few hundred megabytes, so pods are kept in this shape.
//! It reads the same YAML and JSON; unknown fields are ignored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use serde::{Deserialize, Deserializer};

use super::{Labels, or_default};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "or_default")]
    pub metadata: PodMeta,
    #[serde(default, deserialize_with = "or_default")]
    pub spec: PodSpec,
    #[serde(default, deserialize_with = "or_default")]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub labels: Labels,
    #[serde(default, deserialize_with = "or_default")]
    pub owner_references: Vec<OwnerReference>,
    /// Istio's sidecar and ambient annotations only: other annotations (a
    /// `kubectl.kubernetes.io/last-applied-configuration` is a whole copy of
    /// the pod) are dropped as they are read.
    #[serde(default, deserialize_with = "sidecar_annotations")]
    pub annotations: Labels,
    /// RFC 3339, as the API server stamps it (whole seconds).
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// Annotation prefixes that shape a sidecar's interception, and Istio CNI's
/// ambient redirection mark.
const KEPT_ANNOTATION_PREFIXES: [&str; 3] = [
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    super::ambient::ANNOTATION_PREFIX,
];

/// True for an annotation meshdrift keeps.
pub fn is_kept_annotation(key: &str) -> bool {
    KEPT_ANNOTATION_PREFIXES
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

fn sidecar_annotations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Labels, D::Error> {
    let all = Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(all
        .into_iter()
        .filter(|(key, _)| is_kept_annotation(key))
        .collect())
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "or_default")]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Container {
    /// `istio-proxy` is the injected sidecar.
    #[serde(default)]
    pub name: String,
    #[serde(default, deserialize_with = "or_default")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", deserialize_with = "or_default")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PodIp {
    #[serde(default)]
    pub ip: String,
}

impl From<&k8s::Pod> for Pod {
    fn from(pod: &k8s::Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        Pod {
            metadata: PodMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                labels: meta.labels.clone().unwrap_or_default(),
                annotations: meta
                    .annotations
                    .iter()
                    .flatten()
                    .filter(|(key, _)| is_kept_annotation(key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
                creation_timestamp: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                owner_references: meta
                    .owner_references
                    .iter()
                    .flatten()
                    .map(|o| OwnerReference {
                        kind: o.kind.clone(),
                        name: o.name.clone(),
                        controller: o.controller,
                    })
                    .collect(),
            },
            spec: PodSpec {
                containers: spec
                    .map(|s| s.containers.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        ports: c
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| ContainerPort {
                                name: p.name.clone(),
                                container_port: p.container_port,
                            })
                            .collect(),
                    })
                    .collect(),
                node_name: spec.and_then(|s| s.node_name.clone()),
                host_network: spec.and_then(|s| s.host_network),
            },
            status: PodStatus {
                phase: status.and_then(|s| s.phase.clone()),
                pod_ip: status.and_then(|s| s.pod_ip.clone()),
                pod_ips: status
                    .and_then(|s| s.pod_ips.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|p| PodIp { ip: p.ip.clone() })
                    .collect(),
            },
        }
    }
}
