//! Static findings on a mesh configuration, with Istio's (IST) and Kiali's
//! (KIA) codes where one exists and meshdrift's own (MD) otherwise; the table
//! is in docs/istio-semantics.md, with the CHK rules.

use std::collections::{BTreeSet, HashMap};

use super::destination_rule::DestinationRuleEntry;
use super::host;
use super::policies::{Policies, VirtualServiceEntry};
use super::visibility::Visibility;
use crate::findings::{Finding, Severity, codes};
use crate::inventory::{EndpointSource, Index, ServiceInfo};
use crate::model::istio::{PeerMode, RouteDestination, TlsMode, TrafficPolicy};
use crate::model::selector_matches;

/// Every finding on the configuration, sorted by severity, code and resource.
pub fn check(index: &Index, policies: &Policies) -> Vec<Finding> {
    let mut findings = Vec::new();
    let rules = policies.destination_rules.entries();
    for warning in index.warnings() {
        findings.push(Finding::new(
            codes::DUPLICATE_POD_IP,
            Severity::Warning,
            "Pods".to_owned(),
            warning.clone(),
        ));
    }
    check_conflicting_hosts(policies.virtual_services(), &mut findings);
    for vs in policies.virtual_services() {
        check_virtual_service(vs, index, rules, &mut findings);
    }
    for rule in rules {
        check_destination_rule(rule, index, policies, &mut findings);
    }
    findings.sort_by(|a, b| {
        (a.severity, &a.code, &a.resource, &a.message).cmp(&(
            b.severity,
            &b.code,
            &b.resource,
            &b.message,
        ))
    });
    findings.dedup();
    findings
}

fn vs_resource(vs: &VirtualServiceEntry) -> String {
    format!("VirtualService {}", vs.key())
}

fn dr_resource(rule: &DestinationRuleEntry) -> String {
    format!("DestinationRule {}", rule.key())
}

/// IST0109: sidecars use only the oldest VirtualService of a host.
fn check_conflicting_hosts(virtual_services: &[VirtualServiceEntry], findings: &mut Vec<Finding>) {
    let mut by_host: HashMap<&str, Vec<&VirtualServiceEntry>> = HashMap::new();
    for vs in virtual_services.iter().filter(|vs| vs.for_mesh) {
        for h in vs.hosts.iter().collect::<BTreeSet<_>>() {
            by_host.entry(h).or_default().push(vs);
        }
    }
    for (h, claimants) in by_host {
        // `virtual_services` is oldest first, so the first claimant wins.
        for (i, later) in claimants.iter().enumerate().skip(1) {
            if let Some(winner) = claimants[..i]
                .iter()
                .find(|older| older.visibility.overlaps(&later.visibility))
            {
                findings.push(Finding::new(
                    codes::CONFLICTING_HOSTS,
                    Severity::Error,
                    vs_resource(later),
                    format!(
                        "host {h} is also claimed by the older VirtualService {}; sidecars ignore this one for it",
                        winner.key()
                    ),
                ));
            }
        }
    }
}

/// Routes of one kind, reduced to what the checks need.
struct RouteShape<'a> {
    label: String,
    catch_all: bool,
    destinations: &'a [RouteDestination],
}

fn route_shapes(vs: &VirtualServiceEntry) -> Vec<Vec<RouteShape<'_>>> {
    let http = vs
        .spec
        .http
        .iter()
        .enumerate()
        .map(|(i, r)| RouteShape {
            label: match &r.name {
                Some(name) => format!("http route #{i} ({name})"),
                None => format!("http route #{i}"),
            },
            catch_all: r.matches.is_empty() || r.matches.iter().any(is_empty_http_match),
            destinations: &r.route,
        })
        .collect();
    let tcp = vs
        .spec
        .tcp
        .iter()
        .enumerate()
        .map(|(i, r)| RouteShape {
            label: format!("tcp route #{i}"),
            catch_all: r.matches.is_empty(),
            destinations: &r.route,
        })
        .collect();
    let tls = vs
        .spec
        .tls
        .iter()
        .enumerate()
        .map(|(i, r)| RouteShape {
            label: format!("tls route #{i}"),
            // TLS routes always need sniHosts; treat none as catch-all only when empty.
            catch_all: r.matches.is_empty(),
            destinations: &r.route,
        })
        .collect();
    vec![http, tcp, tls]
}

fn is_empty_http_match(m: &crate::model::istio::HttpMatchRequest) -> bool {
    m.uri.is_none()
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.without_headers.is_empty()
        && m.query_params.is_empty()
        && m.port.is_none()
        && m.source_labels.is_empty()
        && m.gateways.is_empty()
        && m.source_namespace.is_none()
}

fn check_virtual_service(
    vs: &VirtualServiceEntry,
    index: &Index,
    rules: &[DestinationRuleEntry],
    findings: &mut Vec<Finding>,
) {
    for routes in route_shapes(vs) {
        let mut catch_all: Option<&str> = None;
        for route in &routes {
            if let Some(earlier) = catch_all {
                findings.push(Finding::new(
                    codes::UNREACHABLE_ROUTE,
                    Severity::Warning,
                    vs_resource(vs),
                    format!(
                        "{} can never match: {earlier} before it matches everything",
                        route.label
                    ),
                ));
            } else if route.catch_all {
                catch_all = Some(&route.label);
            }
            check_route_destinations(vs, route, index, rules, findings);
        }
    }
}

fn check_route_destinations(
    vs: &VirtualServiceEntry,
    route: &RouteShape<'_>,
    index: &Index,
    rules: &[DestinationRuleEntry],
    findings: &mut Vec<Finding>,
) {
    let destinations = route.destinations;
    check_weights(vs, route, findings);
    if let [only] = destinations
        && let Some(weight) = only.weight
        && (0..100).contains(&weight)
    {
        findings.push(Finding::new(
            codes::SINGLE_DESTINATION_WEIGHT,
            Severity::Warning,
            vs_resource(vs),
            format!(
                "{}: its only destination has weight {weight}, treated as 100",
                route.label
            ),
        ));
    }
    if destinations.len() > 1 && destinations.iter().all(|d| d.weight.unwrap_or(0) <= 0) {
        findings.push(Finding::new(
            codes::ALL_ZERO_WEIGHTS,
            Severity::Error,
            vs_resource(vs),
            format!(
                "{}: every destination has weight 0, so none receives traffic",
                route.label
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for d in destinations {
        let fqdn = host::resolve(&d.destination.host, &vs.namespace);
        let subset = d.destination.subset.clone();
        if !seen.insert((fqdn.clone(), subset.clone())) {
            findings.push(Finding::new(
                codes::REPEATED_DESTINATION,
                Severity::Warning,
                vs_resource(vs),
                format!(
                    "{}: host {fqdn}{} appears more than once",
                    route.label,
                    subset
                        .as_deref()
                        .map(|s| format!(" subset {s}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let service = match destination_service(index, &fqdn, &vs.namespace) {
            Lookup::Found(service) => Some(service),
            Lookup::Missing if host::is_wildcard(&fqdn) => None,
            Lookup::Missing => {
                findings.push(Finding::new(
                    codes::UNKNOWN_HOST_OR_SUBSET,
                    Severity::Error,
                    vs_resource(vs),
                    format!(
                        "{}: destination host {fqdn} matches no Service or ServiceEntry",
                        route.label
                    ),
                ));
                continue;
            }
            Lookup::Hidden(service) => {
                findings.push(Finding::new(
                    codes::UNKNOWN_HOST_OR_SUBSET,
                    Severity::Error,
                    vs_resource(vs),
                    format!(
                        "{}: destination host {fqdn} is declared by {}, which is not exported to namespace {}",
                        route.label,
                        service.describe(),
                        vs.namespace
                    ),
                ));
                continue;
            }
        };
        let Some(subset) = subset else { continue };
        let defining = rules.iter().find_map(|r| {
            let visible = r.visibility.visible_to(&vs.namespace) || r.namespace == vs.namespace;
            (visible && host::covers(&r.host, &fqdn))
                .then(|| {
                    r.subsets
                        .iter()
                        .find(|s| s.name == subset)
                        .map(|s| (r, &**s))
                })
                .flatten()
        });
        let Some((rule, definition)) = defining else {
            findings.push(Finding::new(
                codes::UNKNOWN_HOST_OR_SUBSET,
                Severity::Error,
                vs_resource(vs),
                format!(
                    "{}: subset {subset} of host {fqdn} is defined by no DestinationRule: requests fail with 503",
                    route.label
                ),
            ));
            continue;
        };
        if let Some(service) = service
            && selects_pods(service)
            && !definition.labels.is_empty()
        {
            let endpoints_match = service.endpoints.iter().any(|e| {
                e.pod
                    .and_then(|id| index.pod(id))
                    .is_some_and(|p| selector_matches(&definition.labels, &p.labels))
            });
            let elsewhere = index.pods_matching(Some(&service.namespace), &definition.labels);
            if !endpoints_match && !elsewhere.is_empty() {
                let names: Vec<String> = elsewhere
                    .iter()
                    .take(3)
                    .filter_map(|&id| index.pod(id).map(|p| p.name.clone()))
                    .collect();
                findings.push(Finding::new(
                    codes::SUBSET_OF_ANOTHER_SERVICE,
                    Severity::Error,
                    vs_resource(vs),
                    format!(
                        "{}: subset {subset} (DestinationRule {}) selects pods such as {} that are not endpoints of Service {}: requests fail with 503",
                        route.label,
                        rule.key(),
                        names.join(", "),
                        service.key()
                    ),
                ));
            }
        }
    }
}

/// CHK-1: a route weight is an int32 that Istio's validation wants ≥ 0.
fn check_weights(vs: &VirtualServiceEntry, route: &RouteShape<'_>, findings: &mut Vec<Finding>) {
    for d in route.destinations {
        let Some(weight) = d.weight else { continue };
        let problem = if weight < 0 {
            "is negative"
        } else if weight > i64::from(i32::MAX) {
            "does not fit Istio's int32 weight (at most 2147483647)"
        } else {
            continue;
        };
        findings.push(Finding::new(
            codes::SCHEMA_VALIDATION,
            Severity::Error,
            vs_resource(vs),
            format!(
                "{}: weight {weight} of destination {} {problem}: Istio rejects this VirtualService",
                route.label, d.destination.host
            ),
        ));
    }
}

/// What a destination host names, as seen from one namespace.
enum Lookup<'a> {
    Found(&'a ServiceInfo),
    /// Declared, but not exported to that namespace.
    Hidden(&'a ServiceInfo),
    Missing,
}

/// CHK-2: a Service or a ServiceEntry host visible from `namespace`; a
/// wildcard ServiceEntry host covers the names under it, the most specific first.
fn destination_service<'a>(index: &'a Index, fqdn: &str, namespace: &str) -> Lookup<'a> {
    let visible = |service: &ServiceInfo| {
        Visibility::parse(&service.export_to, &service.namespace).visible_to(namespace)
    };
    let exact = index.service(fqdn);
    if let Some(service) = exact.filter(|s| visible(s)) {
        return Lookup::Found(service);
    }
    let wildcard = index
        .wildcard_services()
        .filter(|s| visible(s) && host::covers(&s.fqdn, fqdn))
        .max_by_key(|s| host::specificity(&s.fqdn));
    match (wildcard, exact) {
        (Some(service), _) => Lookup::Found(service),
        (None, Some(hidden)) => Lookup::Hidden(hidden),
        (None, None) => Lookup::Missing,
    }
}

/// Pod-based subset checks apply to services whose endpoints are pods, not
/// to a ServiceEntry's listed addresses.
fn selects_pods(service: &ServiceInfo) -> bool {
    service.endpoints_from != EndpointSource::ServiceEntry
}

fn disables_tls(policy: &TrafficPolicy) -> bool {
    let off = |t: &Option<crate::model::istio::ClientTlsSettings>| {
        t.as_ref().is_some_and(|t| t.mode == TlsMode::Disable)
    };
    off(&policy.tls) || policy.port_level_settings.iter().any(|p| off(&p.tls))
}

/// The namespace a DestinationRule host lives in, or `None` when it spans the mesh.
fn host_namespace(rule: &DestinationRuleEntry, index: &Index) -> Option<String> {
    if let Some(service) = index.service(&rule.host) {
        return Some(service.namespace.clone());
    }
    let rest = rule.host.strip_prefix("*.").unwrap_or(&rule.host);
    let rest = rest.strip_suffix(".svc.cluster.local")?;
    Some(rest.rsplit('.').next().unwrap_or(rest).to_owned())
}

fn check_destination_rule(
    rule: &DestinationRuleEntry,
    index: &Index,
    policies: &Policies,
    findings: &mut Vec<Finding>,
) {
    let service = match destination_service(index, &rule.host, &rule.namespace) {
        Lookup::Found(service) | Lookup::Hidden(service) => Some(service),
        Lookup::Missing => None,
    };
    if service.is_none() && !host::is_wildcard(&rule.host) {
        findings.push(Finding::new(
            codes::RULE_HOST_MATCHES_NOTHING,
            Severity::Warning,
            dr_resource(rule),
            format!("host {} matches no Service or ServiceEntry", rule.host),
        ));
    }
    for subset in &rule.subsets {
        if subset.labels.is_empty() {
            findings.push(Finding::new(
                codes::SUBSET_WITHOUT_LABELS,
                Severity::Warning,
                dr_resource(rule),
                format!(
                    "subset {} has no labels: it selects every endpoint of the host",
                    subset.name
                ),
            ));
            continue;
        }
        let Some(service) = service.filter(|s| selects_pods(s)) else {
            continue;
        };
        let selects = service.endpoints.iter().any(|e| {
            e.pod
                .and_then(|id| index.pod(id))
                .is_some_and(|p| selector_matches(&subset.labels, &p.labels))
        });
        if !selects {
            findings.push(Finding::new(
                codes::SUBSET_SELECTS_NOTHING,
                Severity::Warning,
                dr_resource(rule),
                format!(
                    "subset {} selects no pods of Service {} (labels {})",
                    subset.name,
                    service.key(),
                    show_labels(&subset.labels)
                ),
            ));
        }
        if index
            .pods_matching(Some(&service.namespace), &subset.labels)
            .is_empty()
        {
            findings.push(Finding::new(
                codes::SUBSET_MATCHES_NO_WORKLOAD,
                Severity::Warning,
                dr_resource(rule),
                format!(
                    "subset {} labels {} match no workload in namespace {}",
                    subset.name,
                    show_labels(&subset.labels),
                    service.namespace
                ),
            ));
        }
    }
    check_mtls_disabled(rule, index, policies, findings);
}

/// KIA0207 / KIA0208: the rule turns TLS off toward servers that a STRICT
/// namespace-wide (KIA0207) or mesh-wide (KIA0208) PeerAuthentication protects.
fn check_mtls_disabled(
    rule: &DestinationRuleEntry,
    index: &Index,
    policies: &Policies,
    findings: &mut Vec<Finding>,
) {
    let disables = rule.traffic_policy.as_deref().is_some_and(disables_tls)
        || rule
            .subsets
            .iter()
            .any(|s| s.traffic_policy.as_ref().is_some_and(disables_tls));
    if !disables {
        return;
    }
    let pa = &policies.peer_authentications;
    let namespace = host_namespace(rule, index);
    let namespace_mode = namespace.as_deref().and_then(|ns| pa.namespace_mode(ns));
    if namespace_mode == Some(PeerMode::Strict) {
        findings.push(Finding::new(
            codes::MTLS_DISABLED_NAMESPACE_STRICT,
            Severity::Error,
            dr_resource(rule),
            format!(
                "disables TLS for {} while namespace {} has a STRICT PeerAuthentication: connections are refused",
                rule.host,
                namespace.as_deref().unwrap_or("?")
            ),
        ));
    } else if namespace_mode.is_none_or(|m| m == PeerMode::Unset)
        && pa.mesh_mode() == Some(PeerMode::Strict)
    {
        findings.push(Finding::new(
            codes::MTLS_DISABLED_MESH_STRICT,
            Severity::Error,
            dr_resource(rule),
            format!(
                "disables TLS for {} while the mesh-wide PeerAuthentication is STRICT: connections are refused",
                rule.host
            ),
        ));
    }
}

fn show_labels(labels: &crate::model::Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
