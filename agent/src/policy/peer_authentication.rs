//! PeerAuthentication scopes: mesh (root namespace, no selector) → namespace
//! (no selector) → workload (selector), narrowest wins; no policy means
//! PERMISSIVE. `portLevelMtls` is keyed by the container port
//! (docs/istio-semantics.md, PA-1 and PA-2).

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ROOT_NAMESPACE;
use crate::inventory::PodInfo;
use crate::model::istio::PeerMode;
use crate::model::{Labels, PeerAuthentication, config_order, namespace_of, selector_matches};

#[derive(Debug, Clone)]
pub struct PeerAuthenticationEntry {
    pub namespace: String,
    pub name: String,
    pub created: Option<Time>,
    pub selector: Option<Labels>,
    pub mode: PeerMode,
    pub port_level: BTreeMap<u32, PeerMode>,
}

#[derive(Debug, Default)]
pub(crate) struct PeerAuthenticationIndex {
    /// Oldest first.
    entries: Vec<PeerAuthenticationEntry>,
    /// Oldest namespace-wide policy of each namespace (root: mesh-wide).
    namespace_wide: HashMap<String, usize>,
    /// Workload policies of each namespace, oldest first.
    workload: HashMap<String, Vec<usize>>,
}

impl PeerAuthenticationIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn build<'a>(resources: impl Iterator<Item = &'a PeerAuthentication>) -> Self {
        let mut entries: Vec<PeerAuthenticationEntry> = resources
            .map(|pa| PeerAuthenticationEntry {
                namespace: namespace_of(&pa.metadata),
                name: pa.metadata.name.clone().unwrap_or_default(),
                created: pa.metadata.creation_timestamp.clone(),
                selector: pa
                    .spec
                    .selector
                    .as_ref()
                    .map(|s| s.match_labels.clone())
                    .filter(|s| !s.is_empty()),
                mode: pa.spec.mtls.map(|m| m.mode).unwrap_or_default(),
                port_level: pa
                    .spec
                    .port_level_mtls
                    .iter()
                    .map(|(port, m)| (*port, m.mode))
                    .collect(),
            })
            .collect();
        entries.sort_by(|a, b| {
            config_order(
                (&a.created, &a.name, &a.namespace),
                (&b.created, &b.name, &b.namespace),
            )
        });
        let mut index = PeerAuthenticationIndex::default();
        for (i, entry) in entries.iter().enumerate() {
            if entry.selector.is_some() {
                // A selector in the root namespace selects nothing: Istio
                // has no mesh-wide workload policy.
                if entry.namespace == ROOT_NAMESPACE {
                    continue;
                }
                index
                    .workload
                    .entry(entry.namespace.clone())
                    .or_default()
                    .push(i);
            } else {
                index
                    .namespace_wide
                    .entry(entry.namespace.clone())
                    .or_insert(i);
            }
        }
        index.entries = entries;
        index
    }

    /// Mode of the namespace-wide policy of `namespace`, as written (may be UNSET).
    pub fn namespace_mode(&self, namespace: &str) -> Option<PeerMode> {
        self.namespace_wide
            .get(namespace)
            .map(|&i| self.entries[i].mode)
    }

    pub fn mesh_mode(&self) -> Option<PeerMode> {
        self.namespace_mode(ROOT_NAMESPACE)
    }

    /// The namespace- or mesh-level mode that decides whether auto mTLS is on
    /// for a Service at all (docs/istio-semantics.md, MTLS-2); each endpoint's
    /// own mode is [`Self::server_mode`].
    pub fn client_view(&self, namespace: &str) -> PeerMode {
        [self.namespace_mode(namespace), self.mesh_mode()]
            .into_iter()
            .flatten()
            .find(|m| *m != PeerMode::Unset)
            .unwrap_or(PeerMode::Permissive)
    }

    /// The mode a server pod enforces on `container_port`.
    pub fn server_mode(
        &self,
        pod: Option<&PodInfo>,
        namespace: &str,
        container_port: Option<u16>,
    ) -> PeerMode {
        let workload = pod.and_then(|pod| {
            self.workload
                .get(namespace)?
                .iter()
                .map(|&i| &self.entries[i])
                .find(|e| {
                    e.selector
                        .as_ref()
                        .is_some_and(|s| selector_matches(s, &pod.labels))
                })
        });
        let port_mode = workload
            .and_then(|w| container_port.and_then(|p| w.port_level.get(&u32::from(p)).copied()));
        [
            port_mode,
            workload.map(|w| w.mode),
            self.namespace_mode(namespace),
            self.mesh_mode(),
        ]
        .into_iter()
        .flatten()
        .find(|m| *m != PeerMode::Unset)
        .unwrap_or(PeerMode::Permissive)
    }
}
