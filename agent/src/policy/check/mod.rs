//! Static findings on a mesh configuration, with Istio's (IST) and Kiali's
//! (KIA) codes where one exists and meshdrift's own (MD) otherwise; the table
//! is in docs/istio-semantics.md, with the CHK rules.
//!
//! Everything a check looks up is indexed once ([`lookup::Scope`]), so the
//! cost grows with the configuration and the pods, not with their product.

mod destination_rule;
mod lookup;
mod virtual_service;

use super::destination_rule::DestinationRuleEntry;
use super::policies::{Policies, VirtualServiceEntry};
use crate::findings::{Finding, Severity, codes};
use crate::inventory::Index;
use crate::model::Labels;

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
    let mut scope = lookup::Scope::new(index, rules);
    virtual_service::check_conflicting_hosts(policies.virtual_services(), &mut findings);
    for vs in policies.virtual_services() {
        virtual_service::check(vs, &mut scope, &mut findings);
    }
    for rule in rules {
        destination_rule::check(rule, &mut scope, policies, &mut findings);
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

fn show_labels(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
