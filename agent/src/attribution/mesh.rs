//! A loaded, immutable view of the declared world: the inventory index, the
//! Istio policies, and the reverse maps attribution needs.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::{
    findings::Finding,
    inventory::Index,
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
    /// (pod IP, target port) → (service FQDN, service port), first by FQDN.
    endpoints: HashMap<(IpAddr, u16), (String, u16)>,
    /// pod IP → (service FQDN, service port, target port) of every Service
    /// port it backs, first by FQDN and port.
    services_by_pod_ip: HashMap<IpAddr, Vec<(String, u16, u16)>>,
    /// (cluster IP, port) → (service FQDN, service port).
    service_vips: HashMap<(IpAddr, u16), (String, u16)>,
    /// Node addresses → the hostNetwork workload there (or the node itself
    /// when several share it).
    host_network: HashMap<IpAddr, Workload>,
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
        let mut endpoints = HashMap::new();
        let mut services_by_pod_ip: HashMap<IpAddr, Vec<(String, u16, u16)>> = HashMap::new();
        let mut service_vips = HashMap::new();
        let mut services: Vec<_> = index.services().iter().collect();
        services.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
        for service in services {
            for port in &service.ports {
                for ip in &service.cluster_ips {
                    service_vips
                        .entry((*ip, port.port))
                        .or_insert_with(|| (service.fqdn.clone(), port.port));
                }
                for endpoint in &service.endpoints {
                    if let Some(target) = endpoint.target_port(port.port) {
                        endpoints
                            .entry((endpoint.ip, target))
                            .or_insert_with(|| (service.fqdn.clone(), port.port));
                        services_by_pod_ip.entry(endpoint.ip).or_default().push((
                            service.fqdn.clone(),
                            port.port,
                            target,
                        ));
                    }
                }
            }
        }
        let host_network = host_network_sources(&index);
        let inventory = BTreeMap::from([
            ("Pod".to_owned(), objects.pods.len() as u64),
            ("Service".to_owned(), objects.services.len() as u64),
            (
                "EndpointSlice".to_owned(),
                objects.endpoint_slices.len() as u64,
            ),
            ("Namespace".to_owned(), objects.namespaces.len() as u64),
            (
                "VirtualService".to_owned(),
                objects.virtual_services.len() as u64,
            ),
            (
                "DestinationRule".to_owned(),
                objects.destination_rules.len() as u64,
            ),
            (
                "PeerAuthentication".to_owned(),
                objects.peer_authentications.len() as u64,
            ),
        ]);
        Self {
            index,
            policies,
            findings,
            inventory,
            endpoints,
            services_by_pod_ip,
            service_vips,
            host_network,
        }
    }

    /// The Service (FQDN, port) whose endpoints include this pod IP and target port.
    pub fn service_for_endpoint(&self, server: SocketAddr) -> Option<(&str, u16)> {
        self.endpoints
            .get(&(server.ip(), server.port()))
            .map(|(fqdn, port)| (fqdn.as_str(), *port))
    }

    pub fn is_service_vip(&self, server: SocketAddr) -> bool {
        self.service_vips
            .contains_key(&(server.ip(), server.port()))
    }

    /// The Service (FQDN, port) behind a cluster IP and port.
    pub fn service_for_vip(&self, vip: SocketAddr) -> Option<(&str, u16)> {
        self.service_vips
            .get(&(vip.ip(), vip.port()))
            .map(|(fqdn, port)| (fqdn.as_str(), *port))
    }

    /// The Service (FQDN, port, target port) a pod backs, for a connection
    /// whose port its sidecar's redirect erased: the first by FQDN and port.
    pub fn service_of_pod_ip(&self, ip: IpAddr) -> Option<(&str, u16, u16)> {
        self.services_by_pod_ip
            .get(&ip)
            .and_then(|services| services.first())
            .map(|(fqdn, port, target)| (fqdn.as_str(), *port, *target))
    }

    /// The hostNetwork workload (or node) behind a node address.
    pub fn host_network_source(&self, ip: IpAddr) -> Option<&Workload> {
        self.host_network.get(&ip)
    }
}

/// Node addresses of hostNetwork pods: the pod's workload when one workload
/// has the address, else the node by its name (or address).
fn host_network_sources(index: &Index) -> HashMap<IpAddr, Workload> {
    let mut by_ip: HashMap<IpAddr, Workload> = HashMap::new();
    let mut shared: HashSet<IpAddr> = HashSet::new();
    for pod in index.pods().iter().filter(|pod| pod.host_network) {
        let workload = Workload {
            namespace: pod.namespace.clone(),
            name: pod.workload.clone(),
        };
        for ip in &pod.ips {
            match by_ip.get(ip) {
                Some(existing) if *existing != workload => {
                    shared.insert(*ip);
                }
                Some(_) => {}
                None => {
                    by_ip.insert(*ip, workload.clone());
                }
            }
        }
    }
    for pod in index.pods().iter().filter(|pod| pod.host_network) {
        for ip in pod.ips.iter().filter(|ip| shared.contains(*ip)) {
            let node = pod.node.clone().unwrap_or_else(|| ip.to_string());
            by_ip.insert(
                *ip,
                Workload {
                    namespace: String::new(),
                    name: format!("node {node}"),
                },
            );
        }
    }
    by_ip
}
