//! Checks of one DestinationRule: its host, its subsets, and TLS turned off
//! toward servers that demand it.

use super::lookup::{Declared, Scope, selects_pods};
use super::{dr_resource, show_labels};
use crate::findings::{Finding, Severity, codes};
use crate::inventory::Index;
use crate::model::istio::{ClientTlsSettings, PeerMode, TlsMode, TrafficPolicy};
use crate::policy::destination_rule::DestinationRuleEntry;
use crate::policy::host;
use crate::policy::policies::Policies;

/// IST0174, the subsets, and TLS against STRICT servers.
pub(super) fn check<'a>(
    rule: &'a DestinationRuleEntry,
    scope: &mut Scope<'a>,
    policies: &Policies,
    findings: &mut Vec<Finding>,
) {
    let service = match scope.destination_service(&rule.host, &rule.namespace) {
        Declared::Found(service) | Declared::Hidden(service) => Some(service),
        Declared::Missing => None,
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
        if !scope.endpoints_select(service, &subset.labels) {
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
        if !scope.has_pods(&service.namespace, &subset.labels) {
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
    check_mtls_disabled(rule, scope.index(), policies, findings);
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

fn disables_tls(policy: &TrafficPolicy) -> bool {
    let off =
        |t: &Option<ClientTlsSettings>| t.as_ref().is_some_and(|t| t.mode == TlsMode::Disable);
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
