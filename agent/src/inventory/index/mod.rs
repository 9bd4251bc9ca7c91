//! The inventory index: pods and services with the lookups attribution and
//! policy need, kept up to date one object at a time.
//!
//! Built from [`Objects`] (a manifest directory) or from a stream of
//! [`Change`]s (the Kubernetes API). A pod's change costs what that pod
//! touches: its IPs, its name, its label postings, the endpoints of the
//! Services that select it. A pod keeps its [`PodId`] until it is deleted.
//! Whatever is derived from several objects is independent of the order they
//! arrived in: two pods claiming one IP, or two ServiceEntries one host,
//! resolve to the smallest namespace/name.

mod departed;
mod pods;
mod relist;
mod services;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use foldhash::{HashMap, HashMapExt};
use tracing::debug;

use super::names::{Interner, Name};
use super::pod::PodInfo;
use super::postings::{Postings, PostingsIter};
use super::service::{EndpointInfo, PodLink, ServiceInfo, SliceInfo};
use super::slab::Slab;
use crate::model::{
    Change, Kind, Labels, NamespaceInfo, Object, ObjectKey, Objects, selector_matches,
};
use departed::Departed;
use relist::Relisting;

/// Position of a pod in the index: stable until the pod is deleted (a later
/// pod may then get it).
pub type PodId = usize;
type ServiceId = usize;

/// Pods and selectors of one namespace.
#[derive(Debug, Default)]
struct NamespacePods {
    all: Postings,
    /// Label key and value → pods carrying it.
    by_label: HashMap<(Name, Name), Postings>,
    /// Services (and ServiceEntry hosts) with a selector, under the first
    /// label of their selector: a pod finds the ones that may select it
    /// through its own labels.
    selecting: HashMap<(Name, Name), Vec<ServiceId>>,
}

/// Who has endpoints on an address: (service, service port, target port).
type Owners = Vec<(ServiceId, u16, u16)>;

#[derive(Debug)]
pub struct Index {
    names: Interner,
    pods: Slab<PodInfo>,
    /// Address → the pod that holds it.
    pod_by_ip: HashMap<IpAddr, PodId>,
    /// Addresses two pods or more claim, with every claimant.
    ip_claims: HashMap<IpAddr, Vec<PodId>>,
    /// Pods by namespace and name, hashed by [`Index::name_hash`]: the keys
    /// are the pods' own strings, not copies.
    pod_by_name: hashbrown::HashTable<PodId>,
    hasher: foldhash::fast::FixedState,
    namespaces: HashMap<Name, NamespacePods>,
    /// Names of Namespace objects.
    namespace_objects: BTreeSet<String>,
    /// Namespaces whose labels enroll their pods in ambient mode.
    ambient_namespaces: BTreeSet<String>,
    services: Slab<ServiceInfo>,
    kube_services: HashMap<ObjectKey, ServiceId>,
    /// A ServiceEntry's services, one per host.
    service_entries: HashMap<ObjectKey, Vec<ServiceId>>,
    /// Exact hosts → every service declaring it; the winner is in `service_by_fqdn`.
    fqdn_claims: HashMap<String, Vec<ServiceId>>,
    service_by_fqdn: HashMap<String, ServiceId>,
    /// ServiceEntry hosts that start with `*`.
    wildcard_services: BTreeSet<ServiceId>,
    slices: HashMap<ObjectKey, SliceInfo>,
    /// (namespace, Service name) → its slices' names, in name order.
    slices_of: HashMap<ObjectKey, BTreeSet<String>>,
    endpoint_owners: HashMap<IpAddr, Owners>,
    /// (cluster IP, port) → every service declaring it.
    vips: HashMap<(IpAddr, u16), Vec<ServiceId>>,
    /// Node address → the hostNetwork pods on it (they route no pod IP of
    /// their own, so they are not in `pod_by_ip`).
    host_network: HashMap<IpAddr, Vec<PodId>>,
    /// Pods removed lately, by the addresses they held.
    departed: Departed,
    relisting: Relisting,
    /// Interned strings dropped without release since the last purge.
    unreleased: usize,
    generation: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            names: Interner::new(),
            pods: Slab::default(),
            pod_by_ip: HashMap::new(),
            ip_claims: HashMap::new(),
            pod_by_name: hashbrown::HashTable::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x6d65_7368),
            namespaces: HashMap::new(),
            namespace_objects: BTreeSet::new(),
            ambient_namespaces: BTreeSet::new(),
            services: Slab::default(),
            kube_services: HashMap::new(),
            service_entries: HashMap::new(),
            fqdn_claims: HashMap::new(),
            service_by_fqdn: HashMap::new(),
            wildcard_services: BTreeSet::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            endpoint_owners: HashMap::new(),
            vips: HashMap::new(),
            host_network: HashMap::new(),
            departed: Departed::default(),
            relisting: Relisting::default(),
            unreleased: 0,
            generation: 0,
        }
    }
}

/// How many objects of each inventory kind the index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InventoryCounts {
    pub pods: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub namespaces: usize,
    pub service_entries: usize,
}

impl Index {
    pub fn build(objects: &Objects) -> Index {
        let mut index = Index::default();
        index.add_objects(objects.pods.iter(), objects);
        index.shrink_to_fit();
        index
    }

    /// Builds the index from objects no longer needed.
    pub fn from_objects(objects: Objects) -> Index {
        Self::build(&objects)
    }

    fn add_objects<'a>(
        &mut self,
        pods: impl Iterator<Item = &'a crate::model::Pod>,
        objects: &Objects,
    ) {
        for namespace in objects.namespaces.iter().filter_map(NamespaceInfo::of) {
            self.upsert_namespace(&namespace);
        }
        // Pods first: each Service then finds its endpoints in the postings
        // once, instead of every pod finding its Services.
        for pod in pods {
            self.upsert_pod(pod);
        }
        for slice in &objects.endpoint_slices {
            self.upsert_slice(slice);
        }
        for service in &objects.services {
            self.upsert_service(service);
        }
        for entry in &objects.service_entries {
            self.upsert_service_entry(entry);
        }
        debug!(
            pods = self.pods.len(),
            services = self.services.len(),
            strings = self.names.len(),
            "inventory index built"
        );
    }

    /// Applies one change of an inventory kind (policy kinds are not the
    /// index's: they are ignored). Returns whether anything changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        if change.kind().is_policy() {
            return false;
        }
        let changed = match change {
            Change::Listing(kind) => {
                self.begin_relist(*kind);
                false
            }
            Change::Listed(kind) => self.end_relist(*kind),
            Change::Applied(object) => {
                self.mark_listed(object);
                match object {
                    Object::Pod(pod) => self.upsert_pod(pod),
                    Object::Service(service) => self.upsert_service(service),
                    Object::EndpointSlice(slice) => self.upsert_slice(slice),
                    Object::Namespace(namespace) => self.upsert_namespace(namespace),
                    Object::ServiceEntry(entry) => self.upsert_service_entry(entry),
                    Object::VirtualService(_)
                    | Object::DestinationRule(_)
                    | Object::PeerAuthentication(_) => false,
                }
            }
            Change::Deleted(kind, key) => self.delete(*kind, key),
        };
        if changed {
            self.generation += 1;
        }
        changed
    }

    fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::Pod => self.remove_pod(&key.namespace, &key.name),
            Kind::Service => self.remove_service(key),
            Kind::EndpointSlice => self.remove_slice(key),
            Kind::Namespace => {
                let ambient = self.ambient_namespaces.remove(&key.name);
                self.namespace_objects.remove(&key.name) || ambient
            }
            Kind::ServiceEntry => self.remove_service_entry(key),
            Kind::VirtualService | Kind::DestinationRule | Kind::PeerAuthentication => false,
        }
    }

    /// Gives back the capacity the containers grew into while a whole
    /// cluster was listed: doubling leaves up to half of each unused, and
    /// later changes grow them again only as far as they need.
    pub fn shrink_to_fit(&mut self) {
        self.pods.shrink_to_fit();
        self.services.shrink_to_fit();
        self.pod_by_ip.shrink_to_fit();
        self.ip_claims.shrink_to_fit();
        let (pods, hasher) = (&self.pods, &self.hasher);
        self.pod_by_name.shrink_to_fit(|&id| {
            use std::hash::BuildHasher as _;
            pods.get(id)
                .map_or(0, |p| hasher.hash_one((p.namespace.as_str(), &*p.name)))
        });
        self.namespaces.shrink_to_fit();
        self.fqdn_claims.shrink_to_fit();
        self.service_by_fqdn.shrink_to_fit();
        self.slices.shrink_to_fit();
        self.slices_of.shrink_to_fit();
        self.endpoint_owners.shrink_to_fit();
        self.vips.shrink_to_fit();
        self.host_network.shrink_to_fit();
    }

    /// Bumped by every change: whatever was derived from the index (an
    /// expectation) is stale when it differs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn counts(&self) -> InventoryCounts {
        InventoryCounts {
            pods: self.pods.len(),
            services: self.kube_services.len(),
            endpoint_slices: self.slices.len(),
            namespaces: self.namespace_objects.len(),
            service_entries: self.service_entries.len(),
        }
    }

    fn name_hash(&self, namespace: &str, name: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one((namespace, name))
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&PodInfo> {
        self.pod_by_ip.get(&ip).and_then(|&id| self.pods.get(id))
    }

    /// The pod that held `ip` at `at` (seconds since the Unix epoch): the
    /// pod holding it now unless it was created after `at`, then the last
    /// created of the pods removed lately that held it (its connections stay
    /// its own after another pod takes the address).
    pub fn pod_by_ip_at(&self, ip: IpAddr, at: f64) -> Option<&PodInfo> {
        self.departed_holder(ip, at).or_else(|| self.pod_by_ip(ip))
    }

    /// A pod removed lately that held `ip` at `at`, when the pod holding it
    /// now did not exist yet then.
    pub fn departed_holder(&self, ip: IpAddr, at: f64) -> Option<&PodInfo> {
        match self.pod_by_ip(ip) {
            Some(pod) if pod.created == 0 || f64::from(pod.created) <= at => None,
            _ => self.departed.held_at(ip, at),
        }
    }

    pub fn pod_id_by_ip(&self, ip: IpAddr) -> Option<PodId> {
        self.pod_by_ip.get(&ip).copied()
    }

    pub fn pod(&self, id: PodId) -> Option<&PodInfo> {
        self.pods.get(id)
    }

    pub fn pod_id_by_name(&self, namespace: &str, name: &str) -> Option<PodId> {
        let hash = self.name_hash(namespace, name);
        self.pod_by_name
            .find(hash, |&id| {
                self.pods
                    .get(id)
                    .is_some_and(|p| p.namespace.as_str() == namespace && &*p.name == name)
            })
            .copied()
    }

    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pod_id_by_name(namespace, name)
            .and_then(|id| self.pods.get(id))
    }

    /// Every pod, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.iter().map(|(_, pod)| pod)
    }

    /// Every pod with its id, in no particular order.
    pub fn pods_with_ids(&self) -> impl Iterator<Item = (PodId, &PodInfo)> {
        self.pods.iter()
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// The pod an endpoint stands for: the one its selector chose, the one
    /// its EndpointSlice names (`targetRef`), else the one holding its address.
    pub fn endpoint_pod_id(&self, endpoint: &EndpointInfo) -> Option<PodId> {
        match &endpoint.link {
            PodLink::Pod(id) => Some(*id),
            PodLink::Ref(reference) => self
                .pod_id_by_name(&reference.0, &reference.1)
                .or_else(|| self.pod_id_by_ip(endpoint.ip)),
            PodLink::Address => self.pod_id_by_ip(endpoint.ip),
        }
    }

    pub fn endpoint_pod(&self, endpoint: &EndpointInfo) -> Option<&PodInfo> {
        self.endpoint_pod_id(endpoint)
            .and_then(|id| self.pods.get(id))
    }

    /// Pods whose labels contain `selector`, in one namespace or (`None`)
    /// all, by id.
    pub fn pods_matching(&self, namespace: Option<&str>, selector: &Labels) -> Vec<PodId> {
        let mut all: Vec<PodId> = match namespace {
            Some(ns) => self.pods_matching_iter(ns, selector).collect(),
            None => self
                .namespaces
                .keys()
                .flat_map(|ns| self.pods_matching_iter(ns, selector))
                .collect(),
        };
        all.sort_unstable();
        all
    }

    /// Pods of `namespace` whose labels contain `selector`, found lazily
    /// and in no particular order: a caller that needs one stops there.
    pub fn pods_matching_iter<'s>(
        &'s self,
        namespace: &str,
        selector: &'s Labels,
    ) -> impl Iterator<Item = PodId> + 's {
        self.candidates(namespace, selector).filter(move |&id| {
            self.pods
                .get(id)
                .is_some_and(|pod| selector_matches(selector, &pod.labels))
        })
    }

    /// The shortest posting list among the selector's labels (every pod of
    /// the namespace for an empty selector), so the scan stays short.
    fn candidates(&self, namespace: &str, selector: &Labels) -> PostingsIter<'_> {
        let Some(pods) = self.namespaces.get(namespace) else {
            return PostingsIter::Empty;
        };
        if selector.is_empty() {
            return pods.all.iter();
        }
        let mut shortest: Option<&Postings> = None;
        for (key, value) in selector {
            let found = self
                .names_of(key, value)
                .and_then(|pair| pods.by_label.get(&pair));
            match found {
                None => return PostingsIter::Empty,
                Some(ids) if shortest.is_none_or(|s| ids.len() < s.len()) => shortest = Some(ids),
                Some(_) => {}
            }
        }
        shortest.map_or(PostingsIter::Empty, Postings::iter)
    }

    /// The interned key and value, if any pod or selector uses them.
    fn names_of(&self, key: &str, value: &str) -> Option<(Name, Name)> {
        Some((self.names.get(key)?, self.names.get(value)?))
    }

    pub fn service(&self, fqdn: &str) -> Option<&ServiceInfo> {
        self.service_by_fqdn
            .get(fqdn)
            .and_then(|&id| self.services.get(id))
    }

    /// Every service found by name, then the wildcard ServiceEntry hosts;
    /// a service whose host another one declared first is not among them.
    pub fn services(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.service_by_fqdn
            .values()
            .chain(self.wildcard_services.iter())
            .filter_map(|&id| self.services.get(id))
    }

    /// ServiceEntry hosts with a wildcard (`*.example.com`), which
    /// [`Index::service`] does not find by name.
    pub fn wildcard_services(&self) -> impl Iterator<Item = &ServiceInfo> {
        self.wildcard_services
            .iter()
            .filter_map(|&id| self.services.get(id))
    }

    /// The Service (FQDN, port) whose endpoints include this address and
    /// target port; the first by FQDN when several do.
    pub fn service_for_endpoint(&self, server: SocketAddr) -> Option<(&str, u16)> {
        self.endpoint_owners
            .get(&server.ip())?
            .iter()
            .filter(|(_, _, target)| *target == server.port())
            .filter_map(|&(id, service_port, _)| {
                let service = self.services.get(id)?;
                self.is_listed(id, service)
                    .then_some((service.fqdn.as_str(), service_port))
            })
            .min()
    }

    /// Whether the address and port are a service's virtual IP.
    pub fn is_service_vip(&self, server: SocketAddr) -> bool {
        self.vips.contains_key(&(server.ip(), server.port()))
    }

    /// The Service (FQDN, port) behind a cluster IP and port; the first by
    /// FQDN when several declare it.
    pub fn service_for_vip(&self, vip: SocketAddr) -> Option<(&str, u16)> {
        self.vips
            .get(&(vip.ip(), vip.port()))?
            .iter()
            .filter_map(|&id| self.services.get(id))
            .map(|service| (service.fqdn.as_str(), vip.port()))
            .min()
    }

    /// The Service (FQDN, port, target port) this address backs; the first
    /// by FQDN and port when it backs several.
    pub fn service_of_pod_ip(&self, ip: IpAddr) -> Option<(&str, u16, u16)> {
        self.endpoint_owners
            .get(&ip)?
            .iter()
            .filter_map(|&(id, service_port, target)| {
                let service = self.services.get(id)?;
                self.is_listed(id, service)
                    .then_some((service.fqdn.as_str(), service_port, target))
            })
            .min()
    }

    /// The hostNetwork pods on a node address.
    pub fn host_network_pods(&self, ip: IpAddr) -> impl Iterator<Item = &PodInfo> {
        self.host_network
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|&id| self.pods.get(id))
    }

    /// Whether `id` is the service [`Index::services`] lists for its host.
    fn is_listed(&self, id: ServiceId, service: &ServiceInfo) -> bool {
        self.service_by_fqdn.get(&service.fqdn) == Some(&id) || self.wildcard_services.contains(&id)
    }

    /// Records a Namespace object; whether anything changed.
    fn upsert_namespace(&mut self, namespace: &NamespaceInfo) -> bool {
        let added = self.namespace_objects.insert(namespace.name.clone());
        let ambient_changed = if namespace.ambient {
            self.ambient_namespaces.insert(namespace.name.clone())
        } else {
            self.ambient_namespaces.remove(&namespace.name)
        };
        added || ambient_changed
    }

    /// Whether `pod` is in Istio's ambient mode: ztunnel, not a sidecar,
    /// carries its traffic (docs/istio-semantics.md, AMB-1).
    pub fn in_ambient(&self, pod: &PodInfo) -> bool {
        !pod.host_network
            && pod.ambient.in_ambient(
                self.ambient_namespaces.contains(pod.namespace.as_str()),
                pod.sidecar.is_some(),
            )
    }

    /// Namespaces seen in Namespace objects, pods or services.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        let mut all: BTreeSet<&str> = self.namespace_objects.iter().map(String::as_str).collect();
        all.extend(
            self.namespaces
                .iter()
                .filter(|(_, pods)| !pods.all.is_empty())
                .map(|(name, _)| name.as_str()),
        );
        all.extend(self.services.iter().map(|(_, s)| s.namespace.as_str()));
        all.into_iter()
    }

    /// Inconsistencies in what was indexed (two pods with one IP, sidecar
    /// annotations that cannot be read), sorted.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (ip, claimants) in &self.ip_claims {
            let Some(holder) = self.pod_by_ip(*ip) else {
                continue;
            };
            for &id in claimants {
                let Some(pod) = self.pods.get(id) else {
                    continue;
                };
                if pod.namespace != holder.namespace || pod.name != holder.name {
                    out.push(format!(
                        "pod {} has IP {ip} already held by pod {}; keeping the first by namespace and name",
                        pod.key(),
                        holder.key()
                    ));
                }
            }
        }
        for (_, pod) in self.pods.iter() {
            for problem in pod.sidecar.iter().flat_map(|s| &s.unreadable) {
                out.push(format!("pod {}: annotation {problem}; ignored", pod.key()));
            }
        }
        out.sort();
        out
    }
}
