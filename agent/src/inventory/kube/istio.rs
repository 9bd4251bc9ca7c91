//! Istio custom resources as the reflector stores them: typed into the
//! policy model on arrival, so a snapshot never re-parses JSON.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;
use kube::core::NamespaceResourceScope;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};

use super::prune;

/// One Istio object. `value` is `None` when the object does not fit the
/// model: the API server validates CRDs only loosely, and one odd object
/// must not stop the whole kind from being watched (a failed list page would).
#[derive(Clone)]
pub(crate) struct Typed<T> {
    pub(crate) metadata: ObjectMeta,
    pub(crate) value: Option<T>,
    pub(crate) problem: Option<String>,
}

impl<T> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("typed", &self.value.is_some())
            .finish()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Typed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut raw = serde_json::Value::deserialize(deserializer)?;
        if let Some(metadata) = raw.get_mut("metadata") {
            prune::json_metadata(metadata);
        }
        let metadata = match raw.get("metadata") {
            Some(metadata) => ObjectMeta::deserialize(metadata).map_err(D::Error::custom)?,
            None => ObjectMeta::default(),
        };
        let (value, problem) = match T::deserialize(&raw) {
            Ok(value) => (Some(value), None),
            Err(err) => (None, Some(err.to_string())),
        };
        Ok(Typed {
            metadata,
            value,
            problem,
        })
    }
}

impl<T> kube::Resource for Typed<T> {
    type DynamicType = ApiResource;
    type Scope = NamespaceResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.kind)
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.group)
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.version)
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.api_version)
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.plural)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// An Istio kind meshdrift watches, with the versions to try, newest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IstioKind {
    pub(crate) group: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) versions: &'static [&'static str],
}

impl IstioKind {
    pub(crate) fn resource(&self, version: &str) -> ApiResource {
        ApiResource {
            group: self.group.to_owned(),
            version: version.to_owned(),
            api_version: format!("{}/{version}", self.group),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }
}

// v1 is served from Istio 1.22 on; older control planes only serve v1beta1.
const VERSIONS: &[&str] = &["v1", "v1beta1"];

pub(crate) const SERVICE_ENTRY: IstioKind = IstioKind {
    group: "networking.istio.io",
    kind: "ServiceEntry",
    plural: "serviceentries",
    versions: VERSIONS,
};

pub(crate) const VIRTUAL_SERVICE: IstioKind = IstioKind {
    group: "networking.istio.io",
    kind: "VirtualService",
    plural: "virtualservices",
    versions: VERSIONS,
};

pub(crate) const DESTINATION_RULE: IstioKind = IstioKind {
    group: "networking.istio.io",
    kind: "DestinationRule",
    plural: "destinationrules",
    versions: VERSIONS,
};

pub(crate) const PEER_AUTHENTICATION: IstioKind = IstioKind {
    group: "security.istio.io",
    kind: "PeerAuthentication",
    plural: "peerauthentications",
    versions: VERSIONS,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VirtualService;

    #[test]
    fn an_object_that_does_not_fit_the_model_keeps_its_identity() {
        let text = r#"{"metadata": {"name": "odd", "namespace": "ns"},
                       "spec": {"hosts": "not-a-list"}}"#;
        let typed: Typed<VirtualService> = serde_json::from_str(text).unwrap();
        assert!(typed.value.is_none());
        assert!(typed.problem.is_some());
        assert_eq!(typed.metadata.name.as_deref(), Some("odd"));
    }

    #[test]
    fn managed_fields_are_dropped_on_arrival() {
        let text = r#"{"metadata": {"name": "vs", "namespace": "ns",
                         "managedFields": [{"manager": "kubectl"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}},
                       "spec": {"hosts": ["a"]}}"#;
        let typed: Typed<VirtualService> = serde_json::from_str(text).unwrap();
        let value = typed.value.unwrap();
        assert_eq!(value.spec.hosts, vec!["a".to_owned()]);
        for meta in [&typed.metadata, &value.metadata] {
            assert!(meta.managed_fields.is_none());
            let annotations = meta.annotations.clone().unwrap_or_default();
            assert_eq!(annotations.keys().collect::<Vec<_>>(), vec!["keep"]);
        }
    }
}
