//! Whether a pod runs an Istio sidecar, and which of its outbound
//! connections the sidecar's init rules (`istio-iptables`) redirect to it.
//!
//! Istio's injector adds the `istio-proxy` container, the
//! `sidecar.istio.io/status` annotation and the
//! `security.istio.io/tlsMode: istio` label; any of them marks a sidecar
//! pod. Its init rules then redirect every outbound TCP connection to the
//! proxy except the proxy's own (uid 1337), loopback, and what the
//! `traffic.sidecar.istio.io/*` annotations leave out.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::Labels;

/// The sidecar's user: its own connections are never redirected.
pub const PROXY_UID: u32 = 1337;
/// The injected container's name.
const PROXY_CONTAINER: &str = "istio-proxy";
const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
const EXCLUDE_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
const EXCLUDE_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
const INCLUDE_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";

/// A pod's sidecar interception, as its annotations configure it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sidecar {
    /// Destination ports whose connections bypass the proxy.
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination ranges whose connections bypass the proxy.
    pub exclude_outbound_ranges: Vec<IpNet>,
    /// Destination ranges redirected to the proxy; `None` is Istio's default
    /// `*`, every destination.
    pub include_outbound_ranges: Option<Vec<IpNet>>,
    /// Annotation values meshdrift could not read, for a warning.
    pub unreadable: Vec<String>,
}

/// Why a connection from a sidecar pod does not pass through its proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    ExcludedPort,
    ExcludedRange,
    NotIncluded,
}

impl Sidecar {
    /// The sidecar of a pod with these containers, annotations and labels,
    /// if it has one.
    pub fn of_pod<'a>(
        mut container_names: impl Iterator<Item = &'a str>,
        annotations: &Labels,
        labels: &Labels,
    ) -> Option<Sidecar> {
        let injected = container_names.any(|name| name == PROXY_CONTAINER)
            || annotations.contains_key(STATUS_ANNOTATION)
            || labels
                .get(TLS_MODE_LABEL)
                .is_some_and(|mode| mode == "istio");
        if !injected {
            return None;
        }
        let mut sidecar = Sidecar::default();
        if let Some(value) = annotations.get(EXCLUDE_PORTS) {
            for item in list(value) {
                match item.parse::<u16>() {
                    Ok(port) => sidecar.exclude_outbound_ports.push(port),
                    Err(_) => sidecar
                        .unreadable
                        .push(format!("{EXCLUDE_PORTS}: {item:?} is not a port")),
                }
            }
        }
        if let Some(value) = annotations.get(EXCLUDE_RANGES) {
            sidecar.exclude_outbound_ranges =
                ranges(EXCLUDE_RANGES, value, &mut sidecar.unreadable);
        }
        if let Some(value) = annotations.get(INCLUDE_RANGES)
            && value.trim() != "*"
        {
            sidecar.include_outbound_ranges =
                Some(ranges(INCLUDE_RANGES, value, &mut sidecar.unreadable));
        }
        Some(sidecar)
    }

    /// Whether the init rules leave a connection to `ip:port` out of the
    /// proxy, and why. The proxy's own connections and loopback are the
    /// caller's to tell: they depend on the socket, not the destination.
    pub fn bypass(&self, ip: IpAddr, port: u16) -> Option<Bypass> {
        if self.exclude_outbound_ports.contains(&port) {
            return Some(Bypass::ExcludedPort);
        }
        if self.exclude_outbound_ranges.iter().any(|r| r.contains(&ip)) {
            return Some(Bypass::ExcludedRange);
        }
        match &self.include_outbound_ranges {
            Some(included) if !included.iter().any(|r| r.contains(&ip)) => {
                Some(Bypass::NotIncluded)
            }
            _ => None,
        }
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// CIDRs, or single addresses (a host route), as istio-iptables accepts them.
fn ranges(annotation: &str, value: &str, unreadable: &mut Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for item in list(value) {
        match item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(range) => out.push(range),
            Err(_) => unreadable.push(format!("{annotation}: {item:?} is not an IP range")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn any_mark_of_injection_means_a_sidecar() {
        let none = Labels::new();
        assert!(Sidecar::of_pod(["app"].into_iter(), &none, &none).is_none());
        assert!(Sidecar::of_pod(["app", "istio-proxy"].into_iter(), &none, &none).is_some());
        let status = labels(&[("sidecar.istio.io/status", "{}")]);
        assert!(Sidecar::of_pod(["app"].into_iter(), &status, &none).is_some());
        let tls = labels(&[("security.istio.io/tlsMode", "istio")]);
        assert!(Sidecar::of_pod(["app"].into_iter(), &none, &tls).is_some());
    }

    #[test]
    fn annotations_exclude_ports_and_ranges_and_limit_inclusion() {
        let annotations = labels(&[
            ("sidecar.istio.io/status", "{}"),
            (EXCLUDE_PORTS, "5432, 6379"),
            (EXCLUDE_RANGES, "10.96.0.0/12,169.254.169.254"),
        ]);
        let sidecar = Sidecar::of_pod([].into_iter(), &annotations, &Labels::new()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            sidecar.bypass(ip("10.213.0.5"), 5432),
            Some(Bypass::ExcludedPort)
        );
        assert_eq!(
            sidecar.bypass(ip("10.96.0.10"), 80),
            Some(Bypass::ExcludedRange)
        );
        assert_eq!(
            sidecar.bypass(ip("169.254.169.254"), 80),
            Some(Bypass::ExcludedRange)
        );
        assert_eq!(sidecar.bypass(ip("10.213.0.5"), 80), None);

        let only = labels(&[
            ("sidecar.istio.io/status", "{}"),
            (INCLUDE_RANGES, "10.213.0.0/16"),
        ]);
        let sidecar = Sidecar::of_pod([].into_iter(), &only, &Labels::new()).unwrap();
        assert_eq!(sidecar.bypass(ip("10.213.0.5"), 80), None);
        assert_eq!(
            sidecar.bypass(ip("192.0.2.1"), 80),
            Some(Bypass::NotIncluded)
        );
    }

    #[test]
    fn unreadable_values_are_kept_for_a_warning_not_dropped_silently() {
        let annotations = labels(&[
            ("sidecar.istio.io/status", "{}"),
            (EXCLUDE_PORTS, "http"),
            (EXCLUDE_RANGES, "10.0.0.0/33"),
        ]);
        let sidecar = Sidecar::of_pod([].into_iter(), &annotations, &Labels::new()).unwrap();
        assert_eq!(sidecar.unreadable.len(), 2, "{:?}", sidecar.unreadable);
        assert!(sidecar.exclude_outbound_ports.is_empty());
    }
}
