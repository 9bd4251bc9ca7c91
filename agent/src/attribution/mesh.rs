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
    service_vips: HashSet<(IpAddr, u16)>,
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
        let mut service_vips = HashSet::new();
        let mut services: Vec<_> = index.services().iter().collect();
        services.sort_by(|a, b| a.fqdn.cmp(&b.fqdn));
        for service in services {
            for port in &service.ports {
                for ip in &service.cluster_ips {
                    service_vips.insert((*ip, port.port));
                }
                for endpoint in &service.endpoints {
                    if let Some(target) = endpoint.target_port(port.port) {
                        endpoints
                            .entry((endpoint.ip, target))
                            .or_insert_with(|| (service.fqdn.clone(), port.port));
                    }
                }
            }
        }
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
            service_vips,
        }
    }

    /// The Service (FQDN, port) whose endpoints include this pod IP and target port.
    pub fn service_for_endpoint(&self, server: SocketAddr) -> Option<(&str, u16)> {
        self.endpoints
            .get(&(server.ip(), server.port()))
            .map(|(fqdn, port)| (fqdn.as_str(), *port))
    }

    pub fn is_service_vip(&self, server: SocketAddr) -> bool {
        self.service_vips.contains(&(server.ip(), server.port()))
    }
}
