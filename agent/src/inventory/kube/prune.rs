//! Keeps only what the inventory reads, so a large cluster's objects fit the
//! agent's memory budget: every agent watches every pod (destinations live on
//! other nodes), and a full Pod is mostly environment, volumes and probes.
//!
//! Pods need none of this: they become the model's slim pods as they arrive.

use k8s_openapi::api::core::v1::{Namespace, Service};
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
