//! DestinationRule lookup, merging and TLS precedence
//! (docs/istio-semantics.md, DR-1 to DR-7).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::ROOT_NAMESPACE;
use super::host;
use super::visibility::Visibility;
use crate::model::istio::{ClientTlsSettings, PortTrafficPolicy, Subset, TlsMode, TrafficPolicy};
use crate::model::{
    DestinationRule, LabelLookup, Labels, config_order, namespace_of, selector_matches,
};

/// One DestinationRule with its host expanded.
#[derive(Debug, Clone)]
pub struct DestinationRuleEntry {
    pub namespace: String,
    pub name: String,
    pub host: String,
    pub visibility: Visibility,
    pub created: Option<Time>,
    pub selector: Option<Labels>,
    /// Shared with the merged views, which would otherwise copy every subset.
    pub traffic_policy: Option<Arc<TrafficPolicy>>,
    pub subsets: Vec<Arc<Subset>>,
}

impl DestinationRuleEntry {
    pub fn from_resource(dr: &DestinationRule) -> Self {
        let namespace = namespace_of(&dr.metadata);
        DestinationRuleEntry {
            host: host::resolve(&dr.spec.host, &namespace),
            visibility: Visibility::parse(&dr.spec.export_to, &namespace),
            name: dr.metadata.name.clone().unwrap_or_default(),
            created: dr.metadata.creation_timestamp.clone(),
            selector: dr
                .spec
                .workload_selector
                .as_ref()
                .map(|s| s.match_labels.clone())
                .filter(|s| !s.is_empty()),
            traffic_policy: dr.spec.traffic_policy.clone().map(Arc::new),
            subsets: dr.spec.subsets.iter().cloned().map(Arc::new).collect(),
            namespace,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The DestinationRules of one namespace for one host, merged as Istio does:
/// subsets concatenated (the first definition of a name wins), the first
/// non-empty top-level `trafficPolicy` wins whole.
#[derive(Debug, Clone)]
pub struct MergedRule {
    pub namespace: String,
    pub host: String,
    /// `namespace/name` of each merged rule, oldest first.
    pub sources: Vec<String>,
    pub selector: Option<Labels>,
    pub visibility: Visibility,
    pub traffic_policy: Option<Arc<TrafficPolicy>>,
    pub subsets: Vec<Arc<Subset>>,
}

impl MergedRule {
    fn start(entry: &DestinationRuleEntry) -> Self {
        MergedRule {
            namespace: entry.namespace.clone(),
            host: entry.host.clone(),
            sources: vec![entry.key()],
            selector: entry.selector.clone(),
            visibility: entry.visibility.clone(),
            traffic_policy: entry.traffic_policy.clone(),
            subsets: entry.subsets.clone(),
        }
    }

    fn merge(&mut self, entry: &DestinationRuleEntry) {
        self.sources.push(entry.key());
        self.visibility.union(&entry.visibility);
        if self.traffic_policy.is_none() {
            self.traffic_policy = entry.traffic_policy.clone();
        }
        for subset in &entry.subsets {
            if !self.subsets.iter().any(|s| s.name == subset.name) {
                self.subsets.push(subset.clone());
            }
        }
    }

    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name).map(|s| &**s)
    }

    /// Human name: the merged rules joined.
    pub fn name(&self) -> String {
        self.sources.join(" + ")
    }
}

/// Rules of one namespace, by expanded host.
#[derive(Debug, Default)]
struct NamespaceRules {
    by_host: HashMap<String, Vec<MergedRule>>,
    wildcard_hosts: Vec<String>,
}

impl NamespaceRules {
    fn build(entries: &[&DestinationRuleEntry]) -> Self {
        let mut out = NamespaceRules::default();
        for entry in entries {
            let rules = out.by_host.entry(entry.host.clone()).or_default();
            // Rules with a workloadSelector stay apart: each applies to its own clients.
            match rules
                .iter_mut()
                .find(|r| entry.selector.is_none() && r.selector.is_none())
            {
                Some(rule) => rule.merge(entry),
                None => rules.push(MergedRule::start(entry)),
            }
        }
        out.wildcard_hosts = out
            .by_host
            .keys()
            .filter(|h| host::is_wildcard(h))
            .cloned()
            .collect();
        out
    }

    /// Rules for the most specific host covering `fqdn`.
    fn most_specific(&self, fqdn: &str) -> Option<&[MergedRule]> {
        if let Some(rules) = self.by_host.get(fqdn) {
            return Some(rules);
        }
        let best = host::most_specific(fqdn, self.wildcard_hosts.iter().map(String::as_str))?;
        self.by_host.get(best).map(Vec::as_slice)
    }
}

#[derive(Debug, Default)]
pub(crate) struct DestinationRuleIndex {
    entries: Vec<DestinationRuleEntry>,
    /// Every rule of a namespace, as its own clients see them.
    local: HashMap<String, NamespaceRules>,
    /// Rules of a namespace that other namespaces may see (no selector, exported).
    exported: HashMap<String, NamespaceRules>,
}

impl DestinationRuleIndex {
    pub fn build(mut entries: Vec<DestinationRuleEntry>) -> Self {
        entries.sort_by(|a, b| {
            config_order(
                (&a.created, &a.name, &a.namespace),
                (&b.created, &b.name, &b.namespace),
            )
        });
        let mut local: HashMap<String, Vec<&DestinationRuleEntry>> = HashMap::new();
        let mut exported: HashMap<String, Vec<&DestinationRuleEntry>> = HashMap::new();
        // As push_context.go SetDestinationRules: a namespace searches its own
        // rules only when they are visible to it; other namespaces search the
        // rules not restricted to their own namespace.
        for entry in &entries {
            if entry.visibility.visible_to(&entry.namespace) {
                local
                    .entry(entry.namespace.clone())
                    .or_default()
                    .push(entry);
            }
            if !entry.visibility.is_private_only(&entry.namespace) {
                exported
                    .entry(entry.namespace.clone())
                    .or_default()
                    .push(entry);
            }
        }
        let build = |m: HashMap<String, Vec<&DestinationRuleEntry>>| {
            m.into_iter()
                .map(|(ns, list)| (ns, NamespaceRules::build(&list)))
                .collect()
        };
        let local = build(local);
        let exported = build(exported);
        DestinationRuleIndex {
            entries,
            local,
            exported,
        }
    }

    /// All DestinationRules, oldest first.
    pub fn entries(&self) -> &[DestinationRuleEntry] {
        &self.entries
    }

    /// The rule a client uses for `fqdn` (a service in `service_namespace`):
    /// the client's namespace first, then the service's, then the root namespace.
    /// Within one namespace the most specific host wins, and once a namespace
    /// has rules for the host the search stops there even if none of them
    /// applies to this client (a workloadSelector rule applies only to
    /// matching clients of its own namespace).
    pub fn lookup(
        &self,
        client_namespace: &str,
        client_labels: &dyn LabelLookup,
        fqdn: &str,
        service_namespace: Option<&str>,
    ) -> Option<&MergedRule> {
        let exported_from = |namespace: &str| {
            let rules = self.exported.get(namespace)?.most_specific(fqdn)?;
            // Istio checks exportTo only after picking the most specific host:
            // a hidden specific rule is not replaced by a visible general one.
            rules
                .iter()
                .any(|r| r.visibility.visible_to(client_namespace))
                .then_some(rules)
        };
        let rules = self
            .local
            .get(client_namespace)
            .and_then(|r| r.most_specific(fqdn))
            .or_else(|| service_namespace.and_then(exported_from))
            .or_else(|| exported_from(ROOT_NAMESPACE))?;
        let selected = rules.iter().find(|r| {
            r.namespace == client_namespace
                && r.selector
                    .as_ref()
                    .is_some_and(|s| selector_matches(s, client_labels))
        });
        selected.or_else(|| rules.iter().find(|r| r.selector.is_none()))
    }
}

/// Where the effective TLS setting came from, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsLevel {
    TopLevel,
    TopLevelPort(u16),
    Subset(String),
    SubsetPort(String, u16),
}

impl std::fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsLevel::TopLevel => write!(f, "trafficPolicy"),
            TlsLevel::TopLevelPort(p) => write!(f, "trafficPolicy.portLevelSettings[{p}]"),
            TlsLevel::Subset(s) => write!(f, "subset {s} trafficPolicy"),
            TlsLevel::SubsetPort(s, p) => {
                write!(f, "subset {s} trafficPolicy.portLevelSettings[{p}]")
            }
        }
    }
}

/// The `portLevelSettings` entry of `policy` for a Service port.
fn port_entry(policy: &TrafficPolicy, port: u16) -> Option<&PortTrafficPolicy> {
    policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
}

/// The TLS settings of the client's cluster for a subset and Service port, as
/// Istio merges them (docs/istio-semantics.md, DR-7): the rule's
/// `portLevelSettings` entry for the port replaces the rule's policy
/// wholesale, `tls` included even when the entry has none; the subset's policy
/// (after the same step) then overrides `tls` only when it sets it — or
/// wholesale when it came from a port-level entry. `None`: no TLS setting,
/// auto mTLS decides.
pub fn cluster_tls(
    rule: Option<&MergedRule>,
    subset: Option<&Subset>,
    port: u16,
) -> Option<(TlsMode, TlsLevel)> {
    let mut tls = None;
    if let Some(policy) = rule.and_then(|r| r.traffic_policy.as_deref()) {
        tls = match port_entry(policy, port) {
            Some(entry) => mode_at(entry.tls.as_ref(), TlsLevel::TopLevelPort(port)),
            None => mode_at(policy.tls.as_ref(), TlsLevel::TopLevel),
        };
    }
    if let Some(subset) = subset
        && let Some(policy) = &subset.traffic_policy
    {
        match port_entry(policy, port) {
            Some(entry) => {
                tls = mode_at(
                    entry.tls.as_ref(),
                    TlsLevel::SubsetPort(subset.name.clone(), port),
                );
            }
            None => {
                if let Some(mode) =
                    mode_at(policy.tls.as_ref(), TlsLevel::Subset(subset.name.clone()))
                {
                    tls = Some(mode);
                }
            }
        }
    }
    tls
}

/// The DestinationRule's TLS mode for a subset and Service port as the
/// endpoint builder reads it to label endpoints for auto mTLS
/// (docs/istio-semantics.md, MTLS-3): the
/// subset's policy, else the rule's; within one policy a `portLevelSettings`
/// entry for the port counts only when it sets `tls`.
pub fn endpoint_tls_mode(
    rule: Option<&MergedRule>,
    subset: Option<&Subset>,
    port: u16,
) -> Option<(TlsMode, TlsLevel)> {
    let from_subset = subset.and_then(|subset| {
        let policy = subset.traffic_policy.as_ref()?;
        policy_tls_mode(
            policy,
            port,
            TlsLevel::Subset(subset.name.clone()),
            TlsLevel::SubsetPort(subset.name.clone(), port),
        )
    });
    from_subset.or_else(|| {
        let policy = rule?.traffic_policy.as_deref()?;
        policy_tls_mode(
            policy,
            port,
            TlsLevel::TopLevel,
            TlsLevel::TopLevelPort(port),
        )
    })
}

fn policy_tls_mode(
    policy: &TrafficPolicy,
    port: u16,
    top: TlsLevel,
    at_port: TlsLevel,
) -> Option<(TlsMode, TlsLevel)> {
    let port_tls = policy
        .port_level_settings
        .iter()
        .filter(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
        .find_map(|p| p.tls.as_ref());
    match port_tls {
        Some(tls) => Some((tls.mode, at_port)),
        None => mode_at(policy.tls.as_ref(), top),
    }
}

fn mode_at(tls: Option<&ClientTlsSettings>, level: TlsLevel) -> Option<(TlsMode, TlsLevel)> {
    tls.map(|t| (t.mode, level))
}
