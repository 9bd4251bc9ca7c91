//! Relists: when a watch expires, the source lists its kind again. Every
//! object listed is applied as it comes (most are unchanged, and cost a
//! comparison); when the list is complete, what it did not name is gone.

use foldhash::{HashMap, HashSet};

use super::{Index, PodId};
use crate::inventory::service::namespace_or_default;
use crate::model::{Kind, Object, ObjectKey, namespace_of};

#[derive(Debug, Default)]
pub(super) struct Relisting {
    /// Pods listed since the pods' relist began.
    pods: Option<HashSet<PodId>>,
    /// Other kinds: keys listed since their relist began.
    keys: HashMap<Kind, HashSet<ObjectKey>>,
}

impl Relisting {
    pub(super) fn listed_pod(&mut self, id: PodId) {
        if let Some(listed) = &mut self.pods {
            listed.insert(id);
        }
    }
}

impl Index {
    pub(super) fn begin_relist(&mut self, kind: Kind) {
        // The first list of a kind has nothing to forget: nothing to track.
        match kind {
            Kind::Pod if self.pods.len() > 0 => self.relisting.pods = Some(HashSet::default()),
            Kind::Pod => self.relisting.pods = None,
            _ if self.keys_of(kind).is_empty() => {
                self.relisting.keys.remove(&kind);
            }
            _ => {
                self.relisting.keys.insert(kind, HashSet::default());
            }
        }
    }

    /// Notes an object of a kind other than Pod as listed (pods note
    /// themselves once they have an id).
    pub(super) fn mark_listed(&mut self, object: &Object) {
        let Some(listed) = self.relisting.keys.get_mut(&object.kind()) else {
            return;
        };
        let key = match object {
            Object::Service(service) => ObjectKey::new(
                namespace_or_default(service.metadata.namespace.as_deref()),
                service.metadata.name.clone().unwrap_or_default(),
            ),
            Object::EndpointSlice(slice) => ObjectKey::new(
                namespace_or_default(slice.metadata.namespace.as_deref()),
                slice.metadata.name.clone().unwrap_or_default(),
            ),
            Object::Namespace(namespace) => ObjectKey::new("", namespace.name.clone()),
            Object::ServiceEntry(entry) => ObjectKey::new(
                namespace_of(&entry.metadata),
                entry.metadata.name.clone().unwrap_or_default(),
            ),
            Object::Pod(_)
            | Object::VirtualService(_)
            | Object::DestinationRule(_)
            | Object::PeerAuthentication(_) => return,
        };
        listed.insert(key);
    }

    /// Deletes what the completed relist did not name.
    pub(super) fn end_relist(&mut self, kind: Kind) -> bool {
        if kind == Kind::Pod {
            let Some(listed) = self.relisting.pods.take() else {
                return false;
            };
            let gone: Vec<PodId> = self
                .pods
                .iter()
                .map(|(id, _)| id)
                .filter(|id| !listed.contains(id))
                .collect();
            for &id in &gone {
                self.remove_pod_id(id);
            }
            self.names.purge();
            return !gone.is_empty();
        }
        let Some(listed) = self.relisting.keys.remove(&kind) else {
            return false;
        };
        let gone: Vec<ObjectKey> = self
            .keys_of(kind)
            .into_iter()
            .filter(|key| !listed.contains(key))
            .collect();
        for key in &gone {
            self.delete(kind, key);
        }
        !gone.is_empty()
    }

    fn keys_of(&self, kind: Kind) -> Vec<ObjectKey> {
        match kind {
            Kind::Service => self.kube_services.keys().cloned().collect(),
            Kind::EndpointSlice => self.slices.keys().cloned().collect(),
            Kind::Namespace => self
                .namespace_objects
                .iter()
                .map(|name| ObjectKey::new("", name.clone()))
                .collect(),
            Kind::ServiceEntry => self.service_entries.keys().cloned().collect(),
            Kind::Pod | Kind::VirtualService | Kind::DestinationRule | Kind::PeerAuthentication => {
                Vec::new()
            }
        }
    }
}
