//! Services, ServiceEntry hosts and EndpointSlices added, changed or
//! deleted, and the endpoints the services derive from pods. A Service's
//! change costs its own endpoints (its selector's pods or its slices); a
//! pod's, one endpoint per Service that selects it.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Index, PodId, ServiceId};
use crate::inventory::service::{
    EndpointInfo, EndpointPort, EndpointSource, PodLink, ServiceInfo, ServiceOrigin, TargetPort,
    service_info, slice_info,
};
use crate::inventory::service_entry;
use crate::model::{Labels, ObjectKey, ServiceEntry, namespace_of};

impl Index {
    pub(super) fn upsert_service(&mut self, service: &Service) -> bool {
        let Some(info) = service_info(service) else {
            return false;
        };
        let key = ObjectKey::new(info.namespace.clone(), info.name.clone());
        if let Some(&id) = self.kube_services.get(&key) {
            if self
                .services
                .get(id)
                .is_some_and(|old| same_declaration(old, &info))
            {
                return false;
            }
            self.drop_service(id);
        }
        let id = self.add_service(info);
        self.kube_services.insert(key, id);
        true
    }

    pub(super) fn remove_service(&mut self, key: &ObjectKey) -> bool {
        match self.kube_services.remove(key) {
            Some(id) => {
                self.drop_service(id);
                true
            }
            None => false,
        }
    }

    pub(super) fn upsert_service_entry(&mut self, entry: &ServiceEntry) -> bool {
        let key = ObjectKey::new(
            namespace_of(&entry.metadata),
            entry.metadata.name.clone().unwrap_or_default(),
        );
        self.remove_service_entry(&key);
        let ids = service_entry::service_infos(entry)
            .into_iter()
            .map(|info| self.add_service(info))
            .collect();
        self.service_entries.insert(key, ids);
        true
    }

    pub(super) fn remove_service_entry(&mut self, key: &ObjectKey) -> bool {
        let Some(ids) = self.service_entries.remove(key) else {
            return false;
        };
        for id in ids {
            self.drop_service(id);
        }
        true
    }

    pub(super) fn upsert_slice(&mut self, slice: &EndpointSlice) -> bool {
        let Some((namespace, name, info)) = slice_info(slice, &mut self.names) else {
            return false;
        };
        let key = ObjectKey::new(namespace.clone(), name.clone());
        let service = ObjectKey::new(namespace, info.service.to_string());
        match self.slices.get(&key) {
            Some(old) if *old == info => return false,
            Some(_) => {
                self.remove_slice(&key);
            }
            None => {}
        }
        self.slices.insert(key, info);
        self.slices_of
            .entry(service.clone())
            .or_default()
            .insert(name);
        self.refresh_service(&service);
        true
    }

    pub(super) fn remove_slice(&mut self, key: &ObjectKey) -> bool {
        let Some(old) = self.slices.remove(key) else {
            return false;
        };
        self.unreleased += old.endpoints.len();
        let service = ObjectKey::new(key.namespace.clone(), old.service.to_string());
        if let Some(names) = self.slices_of.get_mut(&service) {
            names.remove(&key.name);
            if names.is_empty() {
                self.slices_of.remove(&service);
            }
        }
        self.refresh_service(&service);
        // Slices' pod references hold interned namespaces; forget the
        // unused ones once as many were dropped as are interned.
        if self.unreleased > self.names.len() {
            self.names.purge();
            self.unreleased = 0;
        }
        true
    }

    fn refresh_service(&mut self, key: &ObjectKey) {
        if let Some(&id) = self.kube_services.get(key) {
            self.refresh_endpoints(id);
        }
    }

    fn add_service(&mut self, info: ServiceInfo) -> ServiceId {
        let id = self.services.insert(info);
        let Some(service) = self.services.get(id) else {
            return id;
        };
        let vips: Vec<_> = service
            .cluster_ips
            .iter()
            .flat_map(|ip| service.ports.iter().map(move |p| (*ip, p.port)))
            .collect();
        let fqdn = service.fqdn.clone();
        let anchor = selector_anchor(service);
        let namespace = service.namespace.clone();
        let endpoints = service.endpoints.clone();
        for vip in vips {
            self.vips.entry(vip).or_default().push(id);
        }
        if fqdn.starts_with('*') {
            self.wildcard_services.insert(id);
        } else {
            self.fqdn_claims.entry(fqdn.clone()).or_default().push(id);
            self.choose_fqdn_holder(&fqdn);
        }
        if let Some((key, value)) = anchor {
            let pair = (self.names.intern(&key), self.names.intern(&value));
            let namespace = self.names.intern(&namespace);
            self.namespaces
                .entry(namespace)
                .or_default()
                .selecting
                .entry(pair)
                .or_default()
                .push(id);
        }
        // A ServiceEntry's listed endpoints came with it; the rest are derived.
        self.own(id, &endpoints, true);
        self.refresh_endpoints(id);
        id
    }

    fn drop_service(&mut self, id: ServiceId) {
        let Some(service) = self.services.remove(id) else {
            return;
        };
        self.own_for(id, &service, false);
        for ip in &service.cluster_ips {
            for port in &service.ports {
                let vip = (*ip, port.port);
                if let Some(owners) = self.vips.get_mut(&vip) {
                    owners.retain(|&other| other != id);
                    if owners.is_empty() {
                        self.vips.remove(&vip);
                    }
                }
            }
        }
        if !self.wildcard_services.remove(&id)
            && let Some(claims) = self.fqdn_claims.get_mut(&service.fqdn)
        {
            claims.retain(|&other| other != id);
            if claims.is_empty() {
                self.fqdn_claims.remove(&service.fqdn);
            }
            self.choose_fqdn_holder(&service.fqdn);
        }
        if let Some((key, value)) = selector_anchor(&service)
            && let (Some(namespace), Some(pair)) = (
                self.names.get(&service.namespace),
                self.names_of(&key, &value),
            )
            && let Some(pods) = self.namespaces.get_mut(&namespace)
            && let Some(ids) = pods.selecting.get_mut(&pair)
        {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                pods.selecting.remove(&pair);
            }
            if pods.all.is_empty() && pods.by_label.is_empty() && pods.selecting.is_empty() {
                self.namespaces.remove(&namespace);
            }
        }
    }

    /// A Kubernetes Service holds its host over ServiceEntries; among
    /// ServiceEntries, the first by namespace and name.
    fn choose_fqdn_holder(&mut self, fqdn: &str) {
        let holder = self.fqdn_claims.get(fqdn).and_then(|claims| {
            claims
                .iter()
                .filter_map(|&id| Some((id, self.services.get(id)?)))
                .min_by(|(_, a), (_, b)| claim_order(a, b))
                .map(|(id, _)| id)
        });
        match holder {
            Some(id) => self.service_by_fqdn.insert(fqdn.to_owned(), id),
            None => self.service_by_fqdn.remove(fqdn),
        };
    }

    /// Recomputes a service's endpoints from its slices or its selector.
    fn refresh_endpoints(&mut self, id: ServiceId) {
        let Some(service) = self.services.get(id) else {
            return;
        };
        let key = ObjectKey::new(service.namespace.clone(), service.name.clone());
        let (endpoints, source) = match (service.origin, self.slices_of.get(&key)) {
            (ServiceOrigin::Service, Some(names)) => {
                let mut out = Vec::new();
                for name in names {
                    let slice_key = ObjectKey::new(key.namespace.clone(), name.clone());
                    if let Some(slice) = self.slices.get(&slice_key) {
                        out.extend(slice.endpoints_for(&service.ports));
                    }
                }
                (out, EndpointSource::EndpointSlices)
            }
            _ => match &service.selector {
                Some(selector) => (
                    self.selector_endpoints(service, selector),
                    EndpointSource::Selector,
                ),
                None if service.origin == ServiceOrigin::ServiceEntry => return,
                None => (Vec::new(), EndpointSource::None),
            },
        };
        let Some(service) = self.services.get(id) else {
            return;
        };
        let old = service.endpoints.clone();
        self.own(id, &old, false);
        self.own(id, &endpoints, true);
        if let Some(service) = self.services.get_mut(id) {
            service.endpoints = endpoints;
            service.endpoints_from = source;
        }
    }

    fn selector_endpoints(&self, service: &ServiceInfo, selector: &Labels) -> Vec<EndpointInfo> {
        let uniform: Option<Arc<[EndpointPort]>> = service.uniform_ports();
        let mut out: Vec<EndpointInfo> = self
            .pods_matching_iter(&service.namespace, selector)
            .filter_map(|pod| self.selector_endpoint(service, uniform.as_ref(), pod))
            .collect();
        out.sort_by(|a, b| self.endpoint_order(a, b));
        out
    }

    /// The endpoint a selector makes of a pod: its first IP, unless it has
    /// finished.
    fn selector_endpoint(
        &self,
        service: &ServiceInfo,
        uniform: Option<&Arc<[EndpointPort]>>,
        id: PodId,
    ) -> Option<EndpointInfo> {
        let pod = self.pods.get(id)?;
        if pod.is_terminal() {
            return None;
        }
        let ip = *pod.ips.first()?;
        let ports = match uniform {
            Some(ports) => Arc::clone(ports),
            None => service
                .ports
                .iter()
                .filter_map(|p| {
                    let target_port = match &p.target_port {
                        TargetPort::Number(n) => *n,
                        TargetPort::Name(name) => pod.container_port(name)?,
                    };
                    Some(EndpointPort {
                        service_port: p.port,
                        target_port,
                    })
                })
                .collect(),
        };
        Some(EndpointInfo {
            ip,
            ready: true,
            ports,
            link: PodLink::Pod(id),
        })
    }

    /// Selector-derived endpoints by address, then pod name: the same
    /// order however the pods arrived.
    fn endpoint_order(&self, a: &EndpointInfo, b: &EndpointInfo) -> Ordering {
        let name = |e: &EndpointInfo| match e.link {
            PodLink::Pod(id) => self.pods.get(id).map(|p| &*p.name),
            _ => None,
        };
        a.ip.cmp(&b.ip).then_with(|| name(a).cmp(&name(b)))
    }

    pub(super) fn add_selected_endpoint(&mut self, service_id: ServiceId, pod: PodId) {
        let Some(service) = self.services.get(service_id) else {
            return;
        };
        if service.endpoints_from != EndpointSource::Selector {
            return;
        }
        // Every endpoint of a Service with numeric target ports has the
        // same ports: share them.
        let uniform = service.uniform_ports().map(|ports| {
            match service.endpoints.iter().find(|e| *e.ports == *ports) {
                Some(existing) => Arc::clone(&existing.ports),
                None => ports,
            }
        });
        let Some(endpoint) = self.selector_endpoint(service, uniform.as_ref(), pod) else {
            return;
        };
        let position = service
            .endpoints
            .binary_search_by(|e| self.endpoint_order(e, &endpoint))
            .unwrap_or_else(|p| p);
        self.own(service_id, std::slice::from_ref(&endpoint), true);
        if let Some(service) = self.services.get_mut(service_id) {
            service.endpoints.insert(position, endpoint);
        }
    }

    pub(super) fn remove_selected_endpoint(&mut self, service_id: ServiceId, pod: PodId) {
        let Some(service) = self.services.get(service_id) else {
            return;
        };
        if service.endpoints_from != EndpointSource::Selector {
            return;
        }
        let Some(probe) = self.selector_endpoint(service, None, pod) else {
            return;
        };
        let Ok(position) = service
            .endpoints
            .binary_search_by(|e| self.endpoint_order(e, &probe))
        else {
            return;
        };
        if let Some(service) = self.services.get_mut(service_id) {
            let endpoint = service.endpoints.remove(position);
            self.own(service_id, std::slice::from_ref(&endpoint), false);
        }
    }

    fn own_for(&mut self, id: ServiceId, service: &ServiceInfo, add: bool) {
        self.own(id, &service.endpoints, add);
    }

    /// Enters (or removes) the endpoints into the address → service lookup.
    fn own(&mut self, id: ServiceId, endpoints: &[EndpointInfo], add: bool) {
        for endpoint in endpoints {
            for port in endpoint.ports.iter() {
                let owner = (id, port.service_port, port.target_port);
                if add {
                    self.endpoint_owners
                        .entry(endpoint.ip)
                        .or_default()
                        .push(owner);
                } else if let Some(owners) = self.endpoint_owners.get_mut(&endpoint.ip) {
                    if let Some(position) = owners.iter().position(|o| *o == owner) {
                        owners.swap_remove(position);
                    }
                    if owners.is_empty() {
                        self.endpoint_owners.remove(&endpoint.ip);
                    }
                }
            }
        }
    }
}

/// The label a service's selector is filed under.
fn selector_anchor(service: &ServiceInfo) -> Option<(String, String)> {
    if service.endpoints_from == EndpointSource::ServiceEntry {
        return None;
    }
    let (key, value) = service.selector.as_ref()?.iter().next()?;
    Some((key.clone(), value.clone()))
}

fn claim_order(a: &ServiceInfo, b: &ServiceInfo) -> Ordering {
    let rank = |s: &ServiceInfo| s.origin != ServiceOrigin::Service;
    rank(a)
        .cmp(&rank(b))
        .then_with(|| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)))
}

/// Everything but the endpoints, which derive from other objects.
fn same_declaration(a: &ServiceInfo, b: &ServiceInfo) -> bool {
    a.origin == b.origin
        && a.namespace == b.namespace
        && a.name == b.name
        && a.fqdn == b.fqdn
        && a.selector == b.selector
        && a.cluster_ips == b.cluster_ips
        && a.ports == b.ports
        && a.headless == b.headless
        && a.mesh_external == b.mesh_external
        && a.export_to == b.export_to
}
