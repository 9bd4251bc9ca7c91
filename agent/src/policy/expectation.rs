//! The declared expectation for one client, destination host and Service port:
//! which VirtualService and route apply, the weighted destinations, and the
//! transport each endpoint should see.

use std::net::IpAddr;

use serde::Serialize;

use super::destination_rule::{MergedRule, TlsLevel, cluster_tls, endpoint_tls_mode};
use super::host;
use super::matching::{self, ClientFacts, Truth};
use super::mtls::AutoMtls;
use super::policies::{Policies, VirtualServiceEntry};
use super::traffic::EffectivePolicy;
use crate::inventory::{CLUSTER_DOMAIN, Index, PodInfo, RouteKind, ServiceInfo};
use crate::model::istio::{PeerMode, RouteDestination, TlsMode};
use crate::model::{Labels, selector_matches};
use crate::observation::{ExpectedTransport, Unit, conduct::DeclaredTraffic};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpectError {
    #[error("no Service named {host:?} in the inventory (tried {})", tried.join(", "))]
    UnknownHost { host: String, tried: Vec<String> },
    #[error("Service {host} has no port {port} (ports: {})", list_ports(available))]
    UnknownPort {
        host: String,
        port: u16,
        available: Vec<u16>,
    },
    #[error(
        "Service {host} has several ports ({}): name one as HOST:PORT",
        list_ports(available)
    )]
    PortRequired { host: String, available: Vec<u16> },
}

fn list_ports(ports: &[u16]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub index: usize,
    pub name: Option<String>,
}

/// The TLS mode a client sidecar uses toward one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExpectedTls {
    IstioMutual,
    Mutual,
    Simple,
    Disable,
    /// No DestinationRule TLS setting: auto mTLS decides per endpoint.
    Auto,
}

impl ExpectedTls {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedTls::IstioMutual => "ISTIO_MUTUAL",
            ExpectedTls::Mutual => "MUTUAL",
            ExpectedTls::Simple => "SIMPLE",
            ExpectedTls::Disable => "DISABLE",
            ExpectedTls::Auto => "AUTO",
        }
    }

    /// What a DestinationRule's explicit mode puts on the wire; `None` for
    /// auto mTLS, which decides per endpoint.
    pub fn explicit_transport(self) -> Option<ExpectedTransport> {
        match self {
            ExpectedTls::IstioMutual => Some(ExpectedTransport::Mtls),
            ExpectedTls::Mutual | ExpectedTls::Simple => Some(ExpectedTransport::Tls),
            ExpectedTls::Disable => Some(ExpectedTransport::Plaintext),
            ExpectedTls::Auto => None,
        }
    }
}

impl From<TlsMode> for ExpectedTls {
    fn from(mode: TlsMode) -> Self {
        match mode {
            TlsMode::Disable => ExpectedTls::Disable,
            TlsMode::Simple => ExpectedTls::Simple,
            TlsMode::Mutual => ExpectedTls::Mutual,
            TlsMode::IstioMutual => ExpectedTls::IstioMutual,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsSource {
    DestinationRule,
    AutoMtls,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsExpectation {
    pub mode: ExpectedTls,
    pub source: TlsSource,
    /// Which part of the DestinationRule set the mode, or why auto mTLS is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointExpectation {
    /// `namespace/name`, or null when the endpoint is not a known pod.
    pub pod: Option<String>,
    pub ip: IpAddr,
    /// The port the client sidecar connects to (the target port).
    pub port: Option<u16>,
    pub expect: ExpectedTransport,
    pub peer_authentication: PeerMode,
    /// Why this combination fails or is risky, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationExpectation {
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
    /// Share of the traffic, a fraction.
    pub weight: f64,
    /// The DestinationRule(s) that apply to this client and host.
    pub destination_rule: Option<String>,
    pub subset_labels: Option<Labels>,
    pub tls: TlsExpectation,
    /// The cluster's traffic policy beyond TLS, as the checks read it.
    pub traffic: DeclaredTraffic,
    pub endpoints: Vec<EndpointExpectation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A route that may apply when the answer depends on L7 attributes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub route: RouteRef,
    /// The L7 condition it needs, or null for the first route that applies regardless.
    pub condition: Option<String>,
    pub destinations: Vec<DestinationExpectation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expectation {
    pub client: String,
    pub host: String,
    pub port: u16,
    pub protocol: RouteKind,
    pub virtual_service: Option<String>,
    pub route: Option<RouteRef>,
    pub determinable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub unit: Unit,
    pub destinations: Vec<DestinationExpectation>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

/// What a route does when it is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Forward,
    Redirect,
    DirectResponse,
    Delegate,
}

struct RouteView<'a> {
    reference: RouteRef,
    truth: Truth,
    destinations: &'a [RouteDestination],
    action: Action,
}

fn route_views<'a>(
    vs: &'a VirtualServiceEntry,
    kind: RouteKind,
    facts: &ClientFacts<'_>,
) -> Vec<RouteView<'a>> {
    let reference = |index: usize, name: Option<&String>| RouteRef {
        kind,
        index,
        name: name.cloned(),
    };
    match kind {
        RouteKind::Http => vs
            .spec
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| RouteView {
                reference: reference(i, r.name.as_ref()),
                truth: matching::any_of(&r.matches, |m| matching::http_entry(m, facts)),
                destinations: &r.route,
                action: if r.delegate.is_some() {
                    Action::Delegate
                } else if r.redirect.is_some() {
                    Action::Redirect
                } else if r.direct_response.is_some() {
                    Action::DirectResponse
                } else {
                    Action::Forward
                },
            })
            .collect(),
        RouteKind::Tcp => vs
            .spec
            .tcp
            .iter()
            .enumerate()
            .map(|(i, r)| RouteView {
                reference: reference(i, None),
                truth: matching::any_of(&r.matches, |m| matching::tcp_entry(m, facts)),
                destinations: &r.route,
                action: Action::Forward,
            })
            .collect(),
        RouteKind::Tls => vs
            .spec
            .tls
            .iter()
            .enumerate()
            .map(|(i, r)| RouteView {
                reference: reference(i, None),
                truth: matching::any_of(&r.matches, |m| matching::tls_entry(m, facts)),
                destinations: &r.route,
                action: Action::Forward,
            })
            .collect(),
    }
}

/// Relative weights: wᵢ / Σw; a single destination gets everything whatever
/// its weight; among several, 0 or unset gets nothing. All zero → all zero.
pub fn normalised_weights(destinations: &[RouteDestination]) -> Vec<f64> {
    if destinations.len() == 1 {
        return vec![1.0];
    }
    let weights: Vec<f64> = destinations
        .iter()
        .map(|d| d.weight.unwrap_or(0).max(0) as f64)
        .collect();
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return vec![0.0; weights.len()];
    }
    weights.iter().map(|w| w / total).collect()
}

/// The FQDN a client means by `host`: an exact Service FQDN, or a name the
/// client's DNS search path (`<ns>.svc.cluster.local`, `svc.cluster.local`,
/// `cluster.local`) completes to one.
pub fn resolve_client_host(
    index: &Index,
    client_namespace: &str,
    host: &str,
) -> Result<String, ExpectError> {
    let host = host.trim_end_matches('.');
    if index.service(host).is_some() {
        return Ok(host.to_owned());
    }
    let tried = vec![
        host.to_owned(),
        format!("{host}.{client_namespace}.svc.{CLUSTER_DOMAIN}"),
        format!("{host}.svc.{CLUSTER_DOMAIN}"),
        format!("{host}.{CLUSTER_DOMAIN}"),
    ];
    tried
        .iter()
        .find(|candidate| index.service(candidate).is_some())
        .cloned()
        .ok_or_else(|| ExpectError::UnknownHost {
            host: host.to_owned(),
            tried,
        })
}

/// The Service port a route destination reaches (docs/istio-semantics.md,
/// VS-14): its own port, else the only port of its Service,
/// else the port the client dialled.
fn destination_port(index: &Index, d: &RouteDestination, fqdn: &str, dialled: u16) -> u16 {
    if let Some(number) = d.destination.port.as_ref().and_then(|p| p.number) {
        return u16::try_from(number).unwrap_or(dialled);
    }
    match index.service(fqdn).map(|s| s.ports.as_slice()) {
        Some([only]) => only.port,
        _ => dialled,
    }
}

/// Namespace of a service FQDN (`name.ns.svc.cluster.local`).
fn namespace_in_fqdn(fqdn: &str) -> Option<&str> {
    let rest = fqdn.strip_suffix(&format!(".svc.{CLUSTER_DOMAIN}"))?;
    rest.split_once('.')
        .map(|(_, ns)| ns)
        .filter(|ns| !ns.contains('.'))
}

impl Policies {
    /// The declared expectation for `client` reaching `host` on a Service port.
    /// `port` may be omitted when the Service has exactly one.
    pub fn expect(
        &self,
        index: &Index,
        client: &PodInfo,
        host: &str,
        port: Option<u16>,
    ) -> Result<Expectation, ExpectError> {
        let fqdn = resolve_client_host(index, &client.namespace, host)?;
        let Some(service) = index.service(&fqdn) else {
            return Err(ExpectError::UnknownHost {
                host: fqdn.clone(),
                tried: vec![fqdn],
            });
        };
        let available: Vec<u16> = service.ports.iter().map(|p| p.port).collect();
        let port = match port {
            Some(port) => port,
            None if available.len() == 1 => available[0],
            None => {
                return Err(ExpectError::PortRequired {
                    host: fqdn,
                    available,
                });
            }
        };
        let Some(service_port) = service.port(port) else {
            return Err(ExpectError::UnknownPort {
                host: fqdn,
                port,
                available,
            });
        };
        let kind = service_port.protocol.route_kind();
        let mut out = Expectation {
            client: client.key(),
            host: fqdn.clone(),
            port,
            protocol: kind,
            virtual_service: None,
            route: None,
            determinable: true,
            reason: None,
            unit: match kind {
                RouteKind::Http => Unit::Request,
                RouteKind::Tcp | RouteKind::Tls => Unit::Connection,
            },
            destinations: Vec::new(),
            candidates: Vec::new(),
        };
        let Some(vs) = self.virtual_service_for(&client.namespace, &fqdn) else {
            out.destinations =
                vec![self.destination(index, client, &fqdn, None, port, 1.0, out.unit)];
            return Ok(out);
        };
        out.virtual_service = Some(vs.key());
        let facts = ClientFacts {
            namespace: &client.namespace,
            labels: &client.labels,
            port,
            cluster_ips: &service.cluster_ips,
        };
        let views = route_views(vs, kind, &facts);
        if views.is_empty() {
            // The VirtualService has no routes of this kind: the sidecar's
            // default route sends everything to the host itself.
            out.reason = Some(format!(
                "VirtualService {} has no {} routes; traffic goes to the host unchanged",
                vs.key(),
                kind.as_str()
            ));
            out.destinations =
                vec![self.destination(index, client, &fqdn, None, port, 1.0, out.unit)];
            return Ok(out);
        }
        // First match wins; routes before it that need L7 attributes make the
        // answer depend on the request.
        let mut depends: Vec<(&RouteView<'_>, &str)> = Vec::new();
        let mut chosen: Option<&RouteView<'_>> = None;
        for view in &views {
            match &view.truth {
                Truth::No => {}
                Truth::Depends(why) => depends.push((view, why)),
                Truth::Yes => {
                    chosen = Some(view);
                    break;
                }
            }
        }
        if !depends.is_empty() {
            out.determinable = false;
            let conditions: Vec<String> = depends
                .iter()
                .map(|(v, why)| {
                    format!(
                        "{} route {} needs {why}",
                        kind.as_str(),
                        describe(&v.reference)
                    )
                })
                .collect();
            out.reason = Some(format!(
                "depends on request attributes L4 cannot see: {}",
                conditions.join("; ")
            ));
            let possible = depends
                .iter()
                .map(|(v, why)| (*v, Some(why.to_string())))
                .chain(chosen.map(|v| (v, None)));
            for (view, condition) in possible {
                out.candidates.push(Candidate {
                    route: view.reference.clone(),
                    condition,
                    destinations: self.route_destinations(
                        index,
                        client,
                        vs,
                        view.destinations,
                        port,
                        out.unit,
                    ),
                });
            }
            return Ok(out);
        }
        let Some(view) = chosen else {
            // The VirtualService yields nothing for this client, so the sidecar
            // keeps the Service's own default route (docs/istio-semantics.md, VS-12
            // and VS-13).
            let default = match kind {
                RouteKind::Http => "the sidecar's default route",
                RouteKind::Tcp | RouteKind::Tls => "the default filter chain (the default route)",
            };
            out.reason = Some(format!(
                "no {} route of VirtualService {} applies to this client: {default} sends to every endpoint of the Service",
                kind.as_str(),
                vs.key()
            ));
            out.destinations =
                vec![self.destination(index, client, &fqdn, None, port, 1.0, out.unit)];
            return Ok(out);
        };
        out.route = Some(view.reference.clone());
        match view.action {
            Action::Forward => {
                out.destinations =
                    self.route_destinations(index, client, vs, view.destinations, port, out.unit);
                if view.destinations.len() > 1 && out.destinations.iter().all(|d| d.weight == 0.0) {
                    out.reason =
                        Some("every destination has weight 0: nothing receives traffic".to_owned());
                }
            }
            Action::Redirect => {
                out.reason =
                    Some("the route answers with a redirect; nothing is forwarded".to_owned())
            }
            Action::DirectResponse => {
                out.reason = Some("the route answers directly; nothing is forwarded".to_owned())
            }
            Action::Delegate => {
                out.determinable = false;
                out.reason = Some("the route delegates to another VirtualService, which meshdrift does not follow".to_owned());
            }
        }
        Ok(out)
    }

    fn route_destinations(
        &self,
        index: &Index,
        client: &PodInfo,
        vs: &VirtualServiceEntry,
        destinations: &[RouteDestination],
        port: u16,
        unit: Unit,
    ) -> Vec<DestinationExpectation> {
        let weights = normalised_weights(destinations);
        destinations
            .iter()
            .zip(weights)
            .map(|(d, weight)| {
                let fqdn = host::resolve(&d.destination.host, &vs.namespace);
                let port = destination_port(index, d, &fqdn, port);
                self.destination(
                    index,
                    client,
                    &fqdn,
                    d.destination.subset.as_deref(),
                    port,
                    weight,
                    unit,
                )
            })
            .collect()
    }

    /// The rule, TLS, traffic policy and endpoints for one destination.
    #[allow(clippy::too_many_arguments)]
    fn destination(
        &self,
        index: &Index,
        client: &PodInfo,
        fqdn: &str,
        subset: Option<&str>,
        port: u16,
        weight: f64,
        unit: Unit,
    ) -> DestinationExpectation {
        let service = index.service(fqdn);
        let service_namespace = service
            .map(|s| s.namespace.as_str())
            .or_else(|| namespace_in_fqdn(fqdn));
        let rule = self.destination_rules.lookup(
            &client.namespace,
            &client.labels,
            fqdn,
            service_namespace,
        );
        let subset_def = subset.and_then(|name| rule.and_then(|r| r.subset(name)));
        let mut note = None;
        if service.is_none() {
            note = Some(format!(
                "no Service {fqdn} in the inventory: requests fail (IST0101)"
            ));
        } else if let (Some(name), None) = (subset, subset_def) {
            note = Some(format!(
                "subset {name} is not defined by a DestinationRule this client uses: requests fail with 503 (IST0101)"
            ));
        }
        let cluster = cluster_tls(rule, subset_def, port);
        let auto = match (&cluster, service) {
            (None, Some(service)) => Some(AutoMtls::for_service(
                &self.peer_authentications,
                index,
                service,
                endpoint_tls_mode(rule, subset_def, port),
            )),
            _ => None,
        };
        let tls = tls_expectation(rule, cluster, auto.as_ref());
        let endpoints = match (service, subset.is_some() && subset_def.is_none()) {
            (Some(service), false) => self.endpoints(
                index,
                service,
                subset_def.map(|s| &s.labels),
                port,
                &tls,
                auto.as_ref(),
            ),
            _ => Vec::new(),
        };
        let traffic = EffectivePolicy::of(rule, subset_def, port).declared(
            rule,
            fqdn,
            unit,
            endpoints
                .iter()
                .map(|e| e.pod.clone().unwrap_or_else(|| e.ip.to_string()))
                .collect(),
        );
        DestinationExpectation {
            host: fqdn.to_owned(),
            subset: subset.map(str::to_owned),
            port,
            weight,
            destination_rule: rule.map(MergedRule::name),
            subset_labels: subset_def.map(|s| s.labels.clone()),
            tls,
            traffic,
            endpoints,
            note,
        }
    }

    fn endpoints(
        &self,
        index: &Index,
        service: &ServiceInfo,
        subset_labels: Option<&Labels>,
        port: u16,
        tls: &TlsExpectation,
        auto: Option<&AutoMtls>,
    ) -> Vec<EndpointExpectation> {
        service
            .endpoints
            .iter()
            .filter_map(|endpoint| {
                let pod = index.endpoint_pod(endpoint);
                if let Some(labels) = subset_labels
                    && !pod.is_some_and(|p| selector_matches(labels, &p.labels))
                {
                    return None;
                }
                let target_port = endpoint.target_port(port);
                let has_sidecar = pod.is_some_and(PodInfo::has_istio_tls_mode);
                let peer = self
                    .peer_authentications
                    .server_mode(pod, &service.namespace, target_port);
                let auto_mtls = auto.is_some_and(|auto| auto.endpoint_gets_mtls(pod, peer));
                let expect = tls.mode.explicit_transport().unwrap_or(if auto_mtls {
                    ExpectedTransport::Mtls
                } else {
                    ExpectedTransport::Plaintext
                });
                let conflict = match (expect, peer) {
                    (ExpectedTransport::Plaintext, PeerMode::Strict) => {
                        Some("the server is STRICT: plaintext connections are refused".to_owned())
                    }
                    (ExpectedTransport::Mtls, PeerMode::Disable) => Some(
                        "the server's PeerAuthentication is DISABLE: Istio mTLS is not terminated".to_owned(),
                    ),
                    (ExpectedTransport::Mtls, _) if pod.is_some() && !has_sidecar => Some(
                        "the pod has no sidecar (no security.istio.io/tlsMode=istio): Istio mTLS fails".to_owned(),
                    ),
                    _ => None,
                };
                Some(EndpointExpectation {
                    pod: pod.map(PodInfo::key),
                    ip: endpoint.ip,
                    port: target_port,
                    expect,
                    peer_authentication: peer,
                    conflict,
                })
            })
            .collect()
    }
}

fn tls_expectation(
    rule: Option<&MergedRule>,
    cluster: Option<(TlsMode, TlsLevel)>,
    auto: Option<&AutoMtls>,
) -> TlsExpectation {
    match cluster {
        Some((mode, level)) => TlsExpectation {
            mode: mode.into(),
            source: TlsSource::DestinationRule,
            detail: Some(match rule {
                Some(rule) => format!("DestinationRule {}, {level}", rule.name()),
                None => level.to_string(),
            }),
        },
        None => TlsExpectation {
            mode: ExpectedTls::Auto,
            source: TlsSource::AutoMtls,
            detail: auto.and_then(|auto| auto.detail(rule)),
        },
    }
}

fn describe(route: &RouteRef) -> String {
    match &route.name {
        Some(name) => format!("#{} ({name})", route.index),
        None => format!("#{}", route.index),
    }
}

impl Policies {
    /// The DestinationRule (merged) a client uses for `fqdn`, if any.
    pub fn destination_rule_for(
        &self,
        index: &Index,
        client: &PodInfo,
        fqdn: &str,
    ) -> Option<&MergedRule> {
        let service_namespace = index
            .service(fqdn)
            .map(|s| s.namespace.as_str())
            .or_else(|| namespace_in_fqdn(fqdn));
        self.destination_rules
            .lookup(&client.namespace, &client.labels, fqdn, service_namespace)
    }

    /// Names of the subsets (of the rule `client` uses for `fqdn`) whose labels
    /// the server pod carries; subsets may overlap, so there can be several.
    /// This is how a flow to a pod IP is attributed to a subset when no SNI names one.
    pub fn subsets_of_pod<'a>(
        &'a self,
        index: &Index,
        client: &PodInfo,
        fqdn: &str,
        server: &PodInfo,
    ) -> Vec<&'a str> {
        self.destination_rule_for(index, client, fqdn)
            .map(|rule| {
                rule.subsets
                    .iter()
                    .filter(|s| selector_matches(&s.labels, &server.labels))
                    .map(|s| s.name.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }
}
