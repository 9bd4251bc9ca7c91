//! A pod added, changed or deleted: its IPs, its name, its postings and
//! the endpoints of the services that select it, nothing else.

use std::net::IpAddr;

use super::{Index, NamespacePods, PodId};
use crate::inventory::pod::{PodInfo, pod_info};
use crate::model::{Pod, selector_matches};

impl Index {
    /// Adds or replaces a pod. A pod that is replaced keeps its id.
    pub(super) fn upsert_pod(&mut self, pod: &Pod) -> bool {
        let Some(info) = pod_info(pod, &mut self.names) else {
            return false;
        };
        let (id, changed) = match self.pod_id_by_name(&info.namespace, &info.name) {
            Some(id) if self.pods.get(id) == Some(&info) => {
                info.release(&mut self.names);
                (id, false)
            }
            Some(id) => {
                self.unlink_pod(id);
                let old = self
                    .pods
                    .get_mut(id)
                    .map(|slot| std::mem::replace(slot, info));
                if let Some(old) = old {
                    old.release(&mut self.names);
                }
                self.link_pod(id);
                (id, true)
            }
            None => {
                let hash = self.name_hash(&info.namespace, &info.name);
                let id = self.pods.insert(info);
                let (pods, hasher) = (&self.pods, &self.hasher);
                self.pod_by_name.insert_unique(hash, id, |&other| {
                    use std::hash::BuildHasher as _;
                    pods.get(other)
                        .map_or(0, |p| hasher.hash_one((p.namespace.as_str(), &*p.name)))
                });
                self.link_pod(id);
                (id, true)
            }
        };
        self.relisting.listed_pod(id);
        changed
    }

    pub(super) fn remove_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some(id) = self.pod_id_by_name(namespace, name) else {
            return false;
        };
        self.remove_pod_id(id);
        true
    }

    pub(super) fn remove_pod_id(&mut self, id: PodId) {
        self.unlink_pod(id);
        let hash = match self.pods.get(id) {
            Some(pod) => self.name_hash(&pod.namespace, &pod.name),
            None => return,
        };
        if let Ok(entry) = self.pod_by_name.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        if let Some(pod) = self.pods.remove(id) {
            self.departed.record(&pod);
            pod.release(&mut self.names);
        }
    }

    /// Enters the pod (already in its slot) into every lookup but by-name.
    fn link_pod(&mut self, id: PodId) {
        let Some(pod) = self.pods.get(id) else {
            return;
        };
        let namespace = pod.namespace.clone();
        let labels = pod.labels.clone();
        let ips: Vec<IpAddr> = pod.routable_ips().to_vec();
        let node_ips: Vec<IpAddr> = pod.node_ips().to_vec();
        for ip in ips {
            self.claim_ip(ip, id);
        }
        for ip in node_ips {
            let pods = self.host_network.entry(ip).or_default();
            if !pods.contains(&id) {
                pods.push(id);
            }
        }
        let pods = self.namespaces.entry(namespace.clone()).or_default();
        pods.all.insert(id);
        for (key, value) in labels.pairs() {
            pods.by_label
                .entry((key.clone(), value.clone()))
                .or_default()
                .insert(id);
        }
        for service in self.services_selecting(id) {
            self.add_selected_endpoint(service, id);
        }
    }

    /// Takes the pod (still in its slot) out of every lookup but by-name.
    fn unlink_pod(&mut self, id: PodId) {
        for service in self.services_selecting(id) {
            self.remove_selected_endpoint(service, id);
        }
        let Some(pod) = self.pods.get(id) else {
            return;
        };
        let namespace = pod.namespace.clone();
        let labels = pod.labels.clone();
        let ips: Vec<IpAddr> = pod.routable_ips().to_vec();
        let node_ips: Vec<IpAddr> = pod.node_ips().to_vec();
        for ip in ips {
            self.release_ip(ip, id);
        }
        for ip in node_ips {
            if let Some(pods) = self.host_network.get_mut(&ip) {
                pods.retain(|&other| other != id);
                if pods.is_empty() {
                    self.host_network.remove(&ip);
                }
            }
        }
        if let Some(pods) = self.namespaces.get_mut(&namespace) {
            pods.all.remove(id);
            for pair in labels.pairs() {
                if let Some(ids) = pods.by_label.get_mut(pair) {
                    ids.remove(id);
                    if ids.is_empty() {
                        pods.by_label.remove(pair);
                    }
                }
            }
            if is_unused(pods) {
                self.namespaces.remove(&namespace);
            }
        }
    }

    /// Services with a selector that this pod's labels satisfy.
    fn services_selecting(&self, id: PodId) -> Vec<usize> {
        let Some(pod) = self.pods.get(id) else {
            return Vec::new();
        };
        let Some(pods) = self.namespaces.get(&pod.namespace) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pair in pod.labels.pairs() {
            for &service in pods.selecting.get(pair).into_iter().flatten() {
                let selects = self.services.get(service).is_some_and(|s| {
                    s.selector
                        .as_ref()
                        .is_some_and(|selector| selector_matches(selector, &pod.labels))
                });
                if selects {
                    out.push(service);
                }
            }
        }
        out
    }

    fn claim_ip(&mut self, ip: IpAddr, id: PodId) {
        let Some(&holder) = self.pod_by_ip.get(&ip) else {
            self.pod_by_ip.insert(ip, id);
            return;
        };
        if holder == id {
            return;
        }
        let claimants = self.ip_claims.entry(ip).or_insert_with(|| vec![holder]);
        if !claimants.contains(&id) {
            claimants.push(id);
        }
        let winner = first_by_name(&self.pods, claimants);
        if let Some(winner) = winner {
            self.pod_by_ip.insert(ip, winner);
        }
    }

    fn release_ip(&mut self, ip: IpAddr, id: PodId) {
        match self.ip_claims.get_mut(&ip) {
            None => {
                if self.pod_by_ip.get(&ip) == Some(&id) {
                    self.pod_by_ip.remove(&ip);
                }
            }
            Some(claimants) => {
                claimants.retain(|&other| other != id);
                let winner = first_by_name(&self.pods, claimants);
                if claimants.len() < 2 {
                    self.ip_claims.remove(&ip);
                }
                match winner {
                    Some(winner) => self.pod_by_ip.insert(ip, winner),
                    None => self.pod_by_ip.remove(&ip),
                };
            }
        }
    }
}

/// The claimant first by namespace and name: who holds a contested IP does
/// not depend on the order pods arrived in.
fn first_by_name(
    pods: &crate::inventory::slab::Slab<PodInfo>,
    claimants: &[PodId],
) -> Option<PodId> {
    claimants
        .iter()
        .filter_map(|&id| Some((id, pods.get(id)?)))
        .min_by(|(_, a), (_, b)| {
            (a.namespace.as_str(), &*a.name).cmp(&(b.namespace.as_str(), &*b.name))
        })
        .map(|(id, _)| id)
}

fn is_unused(pods: &NamespacePods) -> bool {
    pods.all.is_empty() && pods.by_label.is_empty() && pods.selecting.is_empty()
}
