//! The declared world attribution reads: the inventory index, the Istio
//! policies and their static findings. Built whole from objects, or kept up
//! to date in place by its owner (the index one object at a time).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use crate::{
    findings::Finding,
    inventory::{Index, ServiceOrigin, TargetPort},
    model::Objects,
    observation::Workload,
    policy::{self, Policies},
};

pub struct Mesh {
    pub index: Index,
    pub policies: Policies,
    /// Static findings on the configuration.
    pub findings: Vec<Finding>,
    /// Objects by kind, for the agent's health report.
    pub inventory: BTreeMap<String, u64>,
}

impl Mesh {
    /// Nothing declared yet: every flow is left out until the first load.
    pub fn empty() -> Self {
        Self::build(&Objects::default())
    }

    pub fn build(objects: &Objects) -> Self {
        let index = Index::build(objects);
        let policies = Policies::build(objects);
        let findings = policy::check(&index, &policies);
        Self::new(index, policies, findings)
    }

    pub fn new(index: Index, policies: Policies, findings: Vec<Finding>) -> Self {
        let mut mesh = Self {
            index,
            policies,
            findings,
            inventory: BTreeMap::new(),
        };
        mesh.refresh_inventory();
        mesh
    }

    /// Recounts the objects by kind after the index or the policies changed.
    pub fn refresh_inventory(&mut self) {
        let objects = self.index.counts();
        let policies = self.policies.counts();
        self.inventory = [
            ("Pod", objects.pods),
            ("Service", objects.services),
            ("EndpointSlice", objects.endpoint_slices),
            ("Namespace", objects.namespaces),
            ("VirtualService", policies.virtual_services),
            ("DestinationRule", policies.destination_rules),
            ("PeerAuthentication", policies.peer_authentications),
        ]
        .into_iter()
        .map(|(kind, count)| (kind.to_owned(), count as u64))
        .collect();
    }

    /// The Service (FQDN, port) whose endpoints include this pod IP and target port, first by FQDN.
    pub fn service_for_endpoint(&self, server: SocketAddr) -> Option<(&str, u16)> {
        self.index.service_for_endpoint(server)
    }

    /// The ServiceEntry host (FQDN, port) a TLS SNI names, for a connection
    /// to `port`: the entry's port of that number, or whose target it is.
    /// Only hosts written out in full: a wildcard host has no single name.
    pub fn service_for_sni(&self, sni: &str, port: u16) -> Option<(&str, u16)> {
        let service = self.index.service(sni.trim_end_matches('.'))?;
        if service.origin != ServiceOrigin::ServiceEntry {
            return None;
        }
        let chosen = service.port(port).or_else(|| {
            service
                .ports
                .iter()
                .find(|p| p.target_port == TargetPort::Number(port))
        })?;
        Some((service.fqdn.as_str(), chosen.port))
    }

    pub fn is_service_vip(&self, server: SocketAddr) -> bool {
        self.index.is_service_vip(server)
    }

    /// The Service (FQDN, port) behind a cluster IP and port, first by FQDN.
    pub fn service_for_vip(&self, vip: SocketAddr) -> Option<(&str, u16)> {
        self.index.service_for_vip(vip)
    }

    /// The Service (FQDN, port, target port) a pod backs, for a connection
    /// whose port its sidecar's redirect erased: the first by FQDN and port.
    pub fn service_of_pod_ip(&self, ip: IpAddr) -> Option<(&str, u16, u16)> {
        self.index.service_of_pod_ip(ip)
    }

    /// The hostNetwork workload behind a node address, or the node itself
    /// when pods of several workloads share it.
    pub fn host_network_source(&self, ip: IpAddr) -> Option<Workload> {
        let mut pods = self.index.host_network_pods(ip);
        let first = pods.next()?;
        if pods.all(|pod| pod.namespace == first.namespace && pod.workload == first.workload) {
            return Some(super::workload_of(first));
        }
        let node = first
            .node
            .as_ref()
            .map_or_else(|| ip.to_string(), ToString::to_string);
        Some(Workload {
            namespace: String::new(),
            name: format!("node {node}"),
        })
    }
}
