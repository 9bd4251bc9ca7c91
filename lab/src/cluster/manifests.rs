//! A scenario's manifests as a cluster receives them: every object applied
//! with kubectl except the Pods, which the lab creates as a kubelet's pods
//! ([`super::kubelet`]), and what only controllers make (EndpointSlices from
//! the EndpointSlice controller; a workload controller's pods, which a lab
//! without a container runtime could not run: the manifests' Pods stand for
//! them).

use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

use crate::error::{LabError, Result};

/// Kinds the lab never applies, and why.
const LEFT_TO_CONTROLLERS: &[(&str, &str)] = &[
    ("EndpointSlice", "the EndpointSlice controller makes them"),
    ("Endpoints", "the endpoints controller makes them"),
    ("Deployment", "its pods stand in the manifests as Pods"),
    ("ReplicaSet", "its pods stand in the manifests as Pods"),
    ("StatefulSet", "its pods stand in the manifests as Pods"),
];

/// The documents of a manifest directory, sorted for applying.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    pub namespaces: Vec<Value>,
    /// Services, ServiceEntries, Istio policies, …
    pub objects: Vec<Value>,
    pub pods: Vec<Value>,
}

impl Manifests {
    /// Reads every `*.yaml`, `*.yml` and `*.json` file of `dir` (sorted by name).
    pub fn read(dir: &Path) -> Result<Manifests> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| LabError::io("reading", dir, e))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
            })
            .collect();
        files.sort();
        let mut manifests = Manifests::default();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|e| LabError::io("reading", &path, e))?;
            for document in documents(&text, &path)? {
                manifests.add(document);
            }
        }
        Ok(manifests)
    }

    fn add(&mut self, document: Value) {
        if document["kind"] == "List" {
            for item in document["items"].as_array().into_iter().flatten() {
                self.add(item.clone());
            }
            return;
        }
        let kind = document["kind"].as_str().unwrap_or_default();
        if let Some((_, why)) = LEFT_TO_CONTROLLERS.iter().find(|(k, _)| *k == kind) {
            tracing::debug!(kind, why, "not applied");
            return;
        }
        match kind {
            "Namespace" => self.namespaces.push(document),
            "Pod" => self.pods.push(document),
            _ => self.objects.push(document),
        }
    }
}

/// The documents of a YAML (or JSON) text as JSON values, empty ones left out.
pub fn documents(text: &str, path: &Path) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(document).map_err(|e| LabError::Parse {
            what: "a manifest",
            detail: format!("{}: {e}", path.display()),
        })?;
        let value = serde_json::to_value(value).map_err(|e| LabError::Parse {
            what: "a manifest",
            detail: format!("{}: {e}", path.display()),
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_namespaces_and_the_rest_are_sorted_and_controllers_work_is_left_out() {
        let mut manifests = Manifests::default();
        let text = "kind: Namespace\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p}\n---\n\
                    kind: Deployment\n---\nkind: EndpointSlice\n---\nkind: Service\n---\n\
                    kind: List\nitems: [{kind: VirtualService}]\n---\n";
        for document in documents(text, Path::new("test.yaml")).unwrap_or_default() {
            manifests.add(document);
        }
        assert_eq!(
            (
                manifests.namespaces.len(),
                manifests.pods.len(),
                manifests.objects.len()
            ),
            (1, 1, 2)
        );
    }
}
