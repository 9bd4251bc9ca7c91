//! What the checks look up, indexed once per `check`: the service a
//! destination host names, the DestinationRule that defines a subset, and
//! whether a subset's labels select pods — each answer computed once, since
//! many routes ask the same question about one host.

use std::collections::HashMap;

use crate::inventory::{EndpointSource, Index, ServiceInfo};
use crate::model::istio::Subset;
use crate::model::{Labels, selector_matches};
use crate::policy::destination_rule::DestinationRuleEntry;
use crate::policy::host;
use crate::policy::visibility::Visibility;

/// What a destination host names, as seen from one namespace.
pub(super) enum Declared<'a> {
    Found(&'a ServiceInfo),
    /// Declared, but not exported to that namespace.
    Hidden(&'a ServiceInfo),
    Missing,
}

pub(super) struct Scope<'a> {
    index: &'a Index,
    /// Oldest first.
    rules: &'a [DestinationRuleEntry],
    /// Positions in `rules` by exact host, and of the wildcard hosts.
    rules_by_host: HashMap<&'a str, Vec<usize>>,
    wildcard_rules: Vec<usize>,
    /// Whether some endpoint of a service (by FQDN) carries the labels.
    endpoints_select: HashMap<(&'a str, &'a Labels), bool>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(index: &'a Index, rules: &'a [DestinationRuleEntry]) -> Self {
        let mut rules_by_host: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut wildcard_rules = Vec::new();
        for (position, rule) in rules.iter().enumerate() {
            if host::is_wildcard(&rule.host) {
                wildcard_rules.push(position);
            } else {
                rules_by_host.entry(&rule.host).or_default().push(position);
            }
        }
        Scope {
            index,
            rules,
            rules_by_host,
            wildcard_rules,
            endpoints_select: HashMap::new(),
        }
    }

    pub(super) fn index(&self) -> &'a Index {
        self.index
    }

    /// CHK-2: a Service or a ServiceEntry host visible from `namespace`; a
    /// wildcard ServiceEntry host covers the names under it, the most
    /// specific first.
    pub(super) fn destination_service(&self, fqdn: &str, namespace: &str) -> Declared<'a> {
        let visible = |service: &ServiceInfo| {
            Visibility::parse(&service.export_to, &service.namespace).visible_to(namespace)
        };
        let exact = self.index.service(fqdn);
        if let Some(service) = exact.filter(|s| visible(s)) {
            return Declared::Found(service);
        }
        let wildcard = self
            .index
            .wildcard_services()
            .filter(|s| visible(s) && host::covers(&s.fqdn, fqdn))
            .max_by_key(|s| host::specificity(&s.fqdn));
        match (wildcard, exact) {
            (Some(service), _) => Declared::Found(service),
            (None, Some(hidden)) => Declared::Hidden(hidden),
            (None, None) => Declared::Missing,
        }
    }

    /// The oldest DestinationRule visible from `namespace` whose host covers
    /// `fqdn` and that defines `subset`.
    pub(super) fn defining_subset(
        &self,
        fqdn: &str,
        namespace: &str,
        subset: &str,
    ) -> Option<(&'a DestinationRuleEntry, &'a Subset)> {
        let exact = self.rules_by_host.get(fqdn).map_or(&[][..], Vec::as_slice);
        let wildcard = self
            .wildcard_rules
            .iter()
            .filter(|&&position| host::covers(&self.rules[position].host, fqdn));
        exact
            .iter()
            .chain(wildcard)
            .copied()
            .filter(|&position| {
                let rule = &self.rules[position];
                rule.visibility.visible_to(namespace) || rule.namespace == namespace
            })
            .filter_map(|position| {
                let rule = &self.rules[position];
                let found = rule.subsets.iter().find(|s| s.name == subset)?;
                Some((position, rule, &**found))
            })
            .min_by_key(|(position, _, _)| *position)
            .map(|(_, rule, found)| (rule, found))
    }

    /// Whether some endpoint of `service` is a pod carrying `labels`.
    pub(super) fn endpoints_select(
        &mut self,
        service: &'a ServiceInfo,
        labels: &'a Labels,
    ) -> bool {
        let index = self.index;
        *self
            .endpoints_select
            .entry((&service.fqdn, labels))
            .or_insert_with(|| {
                service.endpoints.iter().any(|e| {
                    index
                        .endpoint_pod(e)
                        .is_some_and(|p| selector_matches(labels, &p.labels))
                })
            })
    }

    /// Names of at most `limit` pods of `namespace` carrying `labels`, the
    /// first by name (the index keeps pods in no particular order).
    pub(super) fn some_pods(&self, namespace: &str, labels: &Labels, limit: usize) -> Vec<String> {
        let mut first: Vec<&str> = Vec::with_capacity(limit + 1);
        for id in self.index.pods_matching_iter(namespace, labels) {
            let Some(name) = self.index.pod(id).map(|p| &*p.name) else {
                continue;
            };
            if first.len() == limit && first.last().is_some_and(|&last| name >= last) {
                continue;
            }
            let position = first.partition_point(|&n| n < name);
            first.insert(position, name);
            first.truncate(limit);
        }
        first.into_iter().map(str::to_owned).collect()
    }

    /// Whether some pod of `namespace` carries `labels`.
    pub(super) fn has_pods(&self, namespace: &str, labels: &Labels) -> bool {
        self.index
            .pods_matching_iter(namespace, labels)
            .next()
            .is_some()
    }
}

/// Pod-based subset checks apply to services whose endpoints are pods, not
/// to a ServiceEntry's listed addresses.
pub(super) fn selects_pods(service: &ServiceInfo) -> bool {
    service.endpoints_from != EndpointSource::ServiceEntry
}
