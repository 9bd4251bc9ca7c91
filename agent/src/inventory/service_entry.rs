//! ServiceEntries as services: one per host, as Istio converts them
//! (`pilot/pkg/serviceregistry/serviceentry/conversion.go` convertServices),
//! with their ports, virtual IPs, endpoints and visibility.

use std::net::IpAddr;
use std::sync::Arc;

use super::protocol::PortProtocol;
use super::service::{
    EndpointInfo, EndpointPort, EndpointSource, PodLink, ServiceInfo, ServiceOrigin,
    ServicePortInfo, TargetPort,
};
use crate::model::istio::{ServiceEntryPort, WorkloadEntry};
use crate::model::{ServiceEntry, namespace_of};

/// The services one ServiceEntry declares, one per host. Endpoints a
/// `workloadSelector` chooses are the index's to derive (they follow pods).
pub(super) fn service_infos(entry: &ServiceEntry) -> Vec<ServiceInfo> {
    let namespace = namespace_of(&entry.metadata);
    let name = entry.metadata.name.clone().unwrap_or_default();
    let spec = &entry.spec;
    let ports: Vec<ServicePortInfo> = spec.ports.iter().filter_map(port_info).collect();
    let selector = spec
        .workload_selector
        .as_ref()
        .map(|s| s.labels.clone())
        .filter(|labels| !labels.is_empty());
    let (endpoints, endpoints_from) = match &selector {
        Some(_) => (Vec::new(), EndpointSource::Selector),
        None => (
            spec.endpoints
                .iter()
                .filter_map(|e| static_endpoint(&ports, e))
                .collect(),
            EndpointSource::ServiceEntry,
        ),
    };
    let cluster_ips: Vec<IpAddr> = spec.addresses.iter().filter_map(|a| address(a)).collect();
    spec.hosts
        .iter()
        .map(|host| ServiceInfo {
            origin: ServiceOrigin::ServiceEntry,
            namespace: namespace.clone(),
            name: name.clone(),
            // As written: Istio does not expand ServiceEntry hosts.
            fqdn: host.clone(),
            selector: selector.clone(),
            cluster_ips: cluster_ips.clone(),
            ports: ports.clone(),
            endpoints: endpoints.clone(),
            endpoints_from,
            headless: spec.passthrough(),
            mesh_external: spec.mesh_external(),
            export_to: spec.export_to.clone(),
        })
        .collect()
}

fn port_info(port: &ServiceEntryPort) -> Option<ServicePortInfo> {
    let number = u16::try_from(port.number).ok().filter(|&n| n > 0)?;
    let target = port
        .target_port
        .and_then(|t| u16::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(number);
    Some(ServicePortInfo {
        name: port.name.clone(),
        port: number,
        target_port: TargetPort::Number(target),
        app_protocol: port.protocol.clone(),
        protocol: PortProtocol::detect(port.protocol.as_deref(), port.name.as_deref(), None),
    })
}

/// An endpoint with an IP address; DNS names cannot be matched to flows.
fn static_endpoint(ports: &[ServicePortInfo], entry: &WorkloadEntry) -> Option<EndpointInfo> {
    let ip: IpAddr = entry.address.parse().ok()?;
    let ports: Arc<[EndpointPort]> = ports
        .iter()
        .map(|p| {
            // An endpoint's `ports` remaps a Service port, by name.
            let remapped = p
                .name
                .as_ref()
                .and_then(|name| entry.ports.get(name))
                .and_then(|&t| u16::try_from(t).ok());
            let target = match (&p.target_port, remapped) {
                (_, Some(target)) => target,
                (TargetPort::Number(target), None) => *target,
                (TargetPort::Name(_), None) => p.port,
            };
            EndpointPort {
                service_port: p.port,
                target_port: target,
            }
        })
        .collect();
    Some(EndpointInfo {
        ip,
        ready: true,
        ports,
        link: PodLink::Address,
    })
}

/// A virtual IP: an address, or a CIDR of one address.
fn address(text: &str) -> Option<IpAddr> {
    let (ip, bits) = match text.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (text, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let full = if ip.is_ipv4() { "32" } else { "128" };
    bits.is_none_or(|b| b == full).then_some(ip)
}
