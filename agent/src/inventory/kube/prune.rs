//! Keeps only what the inventory reads, so a large cluster's objects fit the
//! agent's memory budget: every agent watches every pod (destinations live on
//! other nodes), and a full Pod is mostly environment, volumes and probes.
//!
//! Keep in step with `inventory::index::pod_info` and `service_info`.

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Written by `kubectl apply`: a full copy of the object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub(crate) fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The same as [`metadata`], on an object not yet typed.
pub(crate) fn json_metadata(meta: &mut serde_json::Value) {
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    meta.remove("managedFields");
    if let Some(annotations) = meta.get_mut("annotations").and_then(|a| a.as_object_mut()) {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
}

/// Identity, labels and owners; the IPs, phase, node, host networking and
/// named container ports.
pub(crate) fn pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels,
        owner_references: meta.owner_references,
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        host_network: spec.host_network,
        containers: spec
            .containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                ports: c.ports,
                ..Container::default()
            })
            .collect(),
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        ..PodStatus::default()
    });
}

pub(crate) fn service(service: &mut Service) {
    metadata(&mut service.metadata);
    // Load balancer ingress and conditions: never read.
    service.status = None;
}

pub(crate) fn endpoint_slice(slice: &mut EndpointSlice) {
    metadata(&mut slice.metadata);
}

pub(crate) fn namespace(namespace: &mut Namespace) {
    metadata(&mut namespace.metadata);
    namespace.spec = None;
    namespace.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Index;
    use crate::model::Objects;

    const POD: &str = r#"{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f-abcde", "namespace": "shop",
            "labels": {"app": "web", "version": "v2"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubelet"}],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7d9f", "uid": "u", "controller": true}]},
        "spec": {"nodeName": "node-a", "hostNetwork": false,
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "web", "image": "web:2",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7",
            "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "True"}]}
    }"#;

    #[test]
    fn a_pruned_pod_indexes_exactly_like_the_full_one() {
        let full: Pod = serde_json::from_str(POD).unwrap();
        let mut slim = full.clone();
        pod(&mut slim);

        let spec = slim.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none());
        assert!(spec.containers[0].image.is_none());
        assert!(slim.metadata.managed_fields.is_none());
        assert!(slim.metadata.annotations.is_none());
        assert!(slim.status.as_ref().unwrap().conditions.is_none());

        let index = |p: Pod| {
            Index::build(&Objects {
                pods: vec![crate::model::Pod::from(&p)],
                ..Objects::default()
            })
        };
        let (full, slim) = (index(full), index(slim));
        assert_eq!(full.pods(), slim.pods());
        assert_eq!(slim.pods()[0].workload, "web");
        assert_eq!(slim.pods()[0].ips.len(), 2);
    }

    #[test]
    fn other_annotations_survive() {
        let mut meta = ObjectMeta {
            annotations: Some(
                [(LAST_APPLIED, "{}"), ("team", "payments")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        };
        metadata(&mut meta);
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "payments");
    }
}
