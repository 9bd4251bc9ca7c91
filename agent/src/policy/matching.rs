//! Route matching with what is decidable without L7: `sourceLabels`,
//! `sourceNamespace`, `port` (the Service port dialled), `gateways`, and for
//! tcp/tls `destinationSubnets`. Anything else makes the outcome depend on the
//! request, which meshdrift reports instead of guessing (docs/istio-semantics.md,
//! VS-6 to VS-8).

use std::net::IpAddr;

use super::MESH_GATEWAY;
use super::cidr;
use crate::model::istio::{HttpMatchRequest, L4MatchAttributes, TlsMatchAttributes};
use crate::model::{LabelLookup, Labels, selector_matches};

/// Outcome of a match for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    Yes,
    No,
    /// Depends on something only the request shows; the text says what.
    Depends(String),
}

/// The L4 facts a sidecar client brings to route selection.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    pub namespace: &'a str,
    pub labels: &'a dyn LabelLookup,
    /// The Service port the client dialled.
    pub port: u16,
    /// The Service's cluster IPs (what the application dials).
    pub cluster_ips: &'a [IpAddr],
}

/// A route's match list: entries are ORed; no entries matches everything.
pub fn any_of<T>(entries: &[T], eval: impl Fn(&T) -> Truth) -> Truth {
    if entries.is_empty() {
        return Truth::Yes;
    }
    let mut pending: Vec<String> = Vec::new();
    for entry in entries {
        match eval(entry) {
            Truth::Yes => return Truth::Yes,
            Truth::No => {}
            Truth::Depends(why) => pending.push(why),
        }
    }
    if pending.is_empty() {
        Truth::No
    } else {
        Truth::Depends(pending.join(" or "))
    }
}

fn port_matches(port: Option<u32>, facts: &ClientFacts<'_>) -> bool {
    port.is_none_or(|p| p == u32::from(facts.port))
}

fn source_matches(labels: &Labels, namespace: Option<&str>, facts: &ClientFacts<'_>) -> bool {
    selector_matches(labels, facts.labels) && namespace.is_none_or(|ns| ns == facts.namespace)
}

/// One http match entry. Quirk reproduced from Istio (route.go
/// sourceMatchHTTP): when `gateways` is set, `sourceLabels` and
/// `sourceNamespace` are not checked.
pub fn http_entry(m: &HttpMatchRequest, facts: &ClientFacts<'_>) -> Truth {
    if !port_matches(m.port, facts) {
        return Truth::No;
    }
    let source_ok = if m.gateways.is_empty() {
        source_matches(&m.source_labels, m.source_namespace.as_deref(), facts)
    } else {
        m.gateways.iter().any(|g| g == MESH_GATEWAY)
    };
    if !source_ok {
        return Truth::No;
    }
    let mut l7 = Vec::new();
    let mut add = |what: &str, value: Option<String>| {
        if let Some(value) = value {
            l7.push(format!("{what} {value}"));
        }
    };
    add("uri", m.uri.as_ref().map(ToString::to_string));
    add("scheme", m.scheme.as_ref().map(ToString::to_string));
    add("method", m.method.as_ref().map(ToString::to_string));
    add("authority", m.authority.as_ref().map(ToString::to_string));
    for (name, value) in &m.headers {
        l7.push(format!("header {name} {value}"));
    }
    for name in m.without_headers.keys() {
        l7.push(format!("without header {name}"));
    }
    for (name, value) in &m.query_params {
        l7.push(format!("query {name} {value}"));
    }
    if l7.is_empty() {
        Truth::Yes
    } else {
        Truth::Depends(l7.join(", "))
    }
}

fn l4_common(
    port: Option<u32>,
    gateways: &[String],
    labels: &Labels,
    namespace: Option<&str>,
    subnets: &[String],
    facts: &ClientFacts<'_>,
) -> Truth {
    let gateway_ok = gateways.is_empty() || gateways.iter().any(|g| g == MESH_GATEWAY);
    if !(port_matches(port, facts) && gateway_ok && source_matches(labels, namespace, facts)) {
        return Truth::No;
    }
    if subnets.is_empty() {
        return Truth::Yes;
    }
    if facts.cluster_ips.is_empty() {
        return Truth::Depends(format!(
            "destinationSubnets {subnets:?} (the manifests give no ClusterIP for the Service)"
        ));
    }
    let inside = facts
        .cluster_ips
        .iter()
        .any(|ip| subnets.iter().any(|s| cidr::contains(s, *ip)));
    if inside { Truth::Yes } else { Truth::No }
}

/// One tcp match entry: every field ANDed.
pub fn tcp_entry(m: &L4MatchAttributes, facts: &ClientFacts<'_>) -> Truth {
    l4_common(
        m.port,
        &m.gateways,
        &m.source_labels,
        m.source_namespace.as_deref(),
        &m.destination_subnets,
        facts,
    )
}

/// One tls match entry: L4 fields ANDed, then `sniHosts`, which only the
/// client's own ClientHello decides.
pub fn tls_entry(m: &TlsMatchAttributes, facts: &ClientFacts<'_>) -> Truth {
    let l4 = l4_common(
        m.port,
        &m.gateways,
        &m.source_labels,
        m.source_namespace.as_deref(),
        &m.destination_subnets,
        facts,
    );
    if l4 == Truth::No || m.sni_hosts.is_empty() || m.sni_hosts.iter().any(|h| h == "*") {
        return l4;
    }
    let sni = format!("sniHosts {:?}", m.sni_hosts);
    match l4 {
        Truth::Depends(why) => Truth::Depends(format!("{why}, {sni}")),
        _ => Truth::Depends(sni),
    }
}
