//! Checks of one VirtualService: routes after a catch-all, weights, and
//! whether each destination host and subset is defined.

use std::collections::{BTreeSet, HashMap};

use super::lookup::{Declared, Scope, selects_pods};
use super::vs_resource;
use crate::findings::{Finding, Severity, codes};
use crate::model::istio::{HttpMatchRequest, RouteDestination};
use crate::policy::host;
use crate::policy::policies::VirtualServiceEntry;

/// IST0109: sidecars use only the oldest VirtualService of a host.
pub(super) fn check_conflicting_hosts(
    virtual_services: &[VirtualServiceEntry],
    findings: &mut Vec<Finding>,
) {
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

fn is_empty_http_match(m: &HttpMatchRequest) -> bool {
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

/// IST0130, and each route's destinations.
pub(super) fn check<'a>(
    vs: &'a VirtualServiceEntry,
    scope: &mut Scope<'a>,
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
            check_route_destinations(vs, route, scope, findings);
        }
    }
}

fn check_route_destinations<'a>(
    vs: &'a VirtualServiceEntry,
    route: &RouteShape<'a>,
    scope: &mut Scope<'a>,
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
        let service = match scope.destination_service(&fqdn, &vs.namespace) {
            Declared::Found(service) => Some(service),
            Declared::Missing if host::is_wildcard(&fqdn) => None,
            Declared::Missing => {
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
            Declared::Hidden(service) => {
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
        let Some(subset) = d.destination.subset.as_deref() else {
            continue;
        };
        let defining = scope.defining_subset(&fqdn, &vs.namespace, subset);
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
            && !scope.endpoints_select(service, &definition.labels)
        {
            let names = scope.some_pods(&service.namespace, &definition.labels, 3);
            if !names.is_empty() {
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
