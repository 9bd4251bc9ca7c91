//! Istio's CustomResourceDefinitions, installed from the pinned `istio.io/api`
//! module's file, either as they are (every version served, `v1` stored) or
//! as a control plane before Istio 1.22 had them (no `v1`): the agent must
//! read both.

use serde_json::Value;

use super::{Kubectl, Upstream};
use crate::error::{LabError, Result};

/// Which API versions the cluster serves for Istio's kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IstioCrdVersions {
    /// As Istio 1.22 and later install them: `v1` served and stored.
    #[default]
    Current,
    /// As before Istio 1.22: `v1beta1` and `v1alpha3` only.
    WithoutV1,
}

impl IstioCrdVersions {
    /// `object` as written for a cluster serving these versions.
    pub fn written_for(self, mut object: Value) -> Value {
        if self == IstioCrdVersions::WithoutV1
            && let Some(version) = object["apiVersion"].as_str()
            && let Some(group) = version.strip_suffix("/v1")
            && group.ends_with(".istio.io")
        {
            object["apiVersion"] = Value::String(format!("{group}/v1beta1"));
        }
        object
    }
}

/// Applies the CRDs (server-side: they are too large for the last-applied
/// annotation) and waits until every one is established.
pub(crate) fn install(
    kubectl: &Kubectl,
    upstream: &Upstream,
    versions: IstioCrdVersions,
) -> Result<()> {
    let path = upstream.istio_crds();
    let text = std::fs::read_to_string(&path).map_err(|e| LabError::io("reading", &path, e))?;
    let crds: Vec<Value> = super::manifests::documents(&text, &path)?
        .into_iter()
        .map(|crd| match versions {
            IstioCrdVersions::Current => crd,
            IstioCrdVersions::WithoutV1 => without_v1(crd),
        })
        .collect();
    if crds.is_empty() {
        return Err(LabError::invalid(
            "Istio's CRDs",
            format!("{} holds no document", path.display()),
        ));
    }
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": crds});
    kubectl.with_document(&["apply", "--server-side"], &list, &[])?;
    kubectl.run(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=120s",
    ])?;
    Ok(())
}

/// The CRD without its `v1` version; the oldest remaining version is stored
/// (`v1alpha3` for networking, `v1beta1` for security), as Istio did.
fn without_v1(mut crd: Value) -> Value {
    let Some(versions) = crd
        .pointer_mut("/spec/versions")
        .and_then(Value::as_array_mut)
    else {
        return crd;
    };
    let Some(v1) = versions.iter().position(|v| v["name"] == "v1") else {
        return crd;
    };
    let v1_stored = versions[v1]["storage"] == true;
    versions.remove(v1);
    if !v1_stored {
        return crd;
    }
    let stored = ["v1alpha3", "v1beta1"]
        .into_iter()
        .find(|name| versions.iter().any(|v| v["name"] == *name))
        .or_else(|| versions.first().and_then(|v| v["name"].as_str()))
        .map(str::to_owned);
    for version in versions.iter_mut() {
        version["storage"] = Value::Bool(version["name"].as_str() == stored.as_deref());
    }
    crd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crd_that_stores_another_version_keeps_it() {
        let crd = serde_json::json!({"spec": {"versions": [
            {"name": "v1", "served": true, "storage": false},
            {"name": "v1alpha1", "served": true, "storage": true},
        ]}});
        let legacy = without_v1(crd);
        assert_eq!(
            legacy["spec"]["versions"],
            serde_json::json!([{"name": "v1alpha1", "served": true, "storage": true}])
        );
    }

    #[test]
    fn without_v1_keeps_the_older_versions_and_stores_the_oldest() {
        let crd = serde_json::json!({"spec": {"versions": [
            {"name": "v1", "served": true, "storage": true},
            {"name": "v1alpha3", "served": true, "storage": false},
            {"name": "v1beta1", "served": true, "storage": false},
        ]}});
        let legacy = without_v1(crd);
        let names: Vec<(&str, bool)> = legacy["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap_or(""), v["storage"] == true))
            .collect();
        assert_eq!(names, [("v1alpha3", true), ("v1beta1", false)]);
    }
}
