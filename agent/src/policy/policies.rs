//! The policy resources of a mesh, indexed for lookups by host and namespace;
//! one VirtualService per host for sidecars (docs/istio-semantics.md, VS-2
//! to VS-4).

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tracing::debug;

use super::MESH_GATEWAY;
use super::destination_rule::{DestinationRuleEntry, DestinationRuleIndex};
use super::host;
use super::peer_authentication::PeerAuthenticationIndex;
use super::visibility::Visibility;
use crate::model::istio::VirtualServiceSpec;
use crate::model::{
    DestinationRule, Objects, PeerAuthentication, VirtualService, config_order, namespace_of,
};

/// A VirtualService with its hosts expanded.
#[derive(Debug, Clone)]
pub struct VirtualServiceEntry {
    pub namespace: String,
    pub name: String,
    /// Hosts expanded relative to the VirtualService's namespace.
    pub hosts: Vec<String>,
    /// Applies to sidecars: no `gateways`, or `mesh` among them.
    pub for_mesh: bool,
    pub visibility: Visibility,
    pub created: Option<Time>,
    pub spec: VirtualServiceSpec,
}

impl VirtualServiceEntry {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Default)]
pub struct Policies {
    /// Oldest first.
    virtual_services: Vec<VirtualServiceEntry>,
    /// Exact host → sidecar VirtualServices claiming it, oldest first.
    vs_by_exact_host: HashMap<String, Vec<usize>>,
    /// Wildcard hosts of sidecar VirtualServices, oldest first.
    vs_wildcards: Vec<(String, usize)>,
    pub(crate) destination_rules: DestinationRuleIndex,
    pub(crate) peer_authentications: PeerAuthenticationIndex,
}

/// How many policy objects of each kind are indexed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    pub virtual_services: usize,
    pub destination_rules: usize,
    pub peer_authentications: usize,
}

impl Policies {
    pub fn build(objects: &Objects) -> Policies {
        Self::build_from(
            objects.virtual_services.iter(),
            objects.destination_rules.iter(),
            objects.peer_authentications.iter(),
        )
    }

    /// Builds the index from policy objects wherever they are kept.
    pub fn build_from<'a>(
        virtual_services: impl Iterator<Item = &'a VirtualService>,
        destination_rules: impl Iterator<Item = &'a DestinationRule>,
        peer_authentications: impl Iterator<Item = &'a PeerAuthentication>,
    ) -> Policies {
        let mut virtual_services: Vec<VirtualServiceEntry> =
            virtual_services.map(virtual_service_entry).collect();
        virtual_services.sort_by(|a, b| {
            config_order(
                (&a.created, &a.name, &a.namespace),
                (&b.created, &b.name, &b.namespace),
            )
        });
        let mut vs_by_exact_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut vs_wildcards = Vec::new();
        for (i, vs) in virtual_services.iter().enumerate() {
            if !vs.for_mesh {
                continue;
            }
            for h in &vs.hosts {
                if host::is_wildcard(h) {
                    vs_wildcards.push((h.clone(), i));
                } else {
                    let ids = vs_by_exact_host.entry(h.clone()).or_default();
                    if !ids.contains(&i) {
                        ids.push(i);
                    }
                }
            }
        }
        let destination_rules = DestinationRuleIndex::build(
            destination_rules
                .map(DestinationRuleEntry::from_resource)
                .collect(),
        );
        let peer_authentications = PeerAuthenticationIndex::build(peer_authentications);
        debug!(
            virtual_services = virtual_services.len(),
            destination_rules = destination_rules.entries().len(),
            peer_authentications = peer_authentications.len(),
            "policy index built"
        );
        Policies {
            virtual_services,
            vs_by_exact_host,
            vs_wildcards,
            destination_rules,
            peer_authentications,
        }
    }

    pub fn counts(&self) -> PolicyCounts {
        PolicyCounts {
            virtual_services: self.virtual_services.len(),
            destination_rules: self.destination_rules.entries().len(),
            peer_authentications: self.peer_authentications.len(),
        }
    }

    /// All VirtualServices, oldest first.
    pub fn virtual_services(&self) -> &[VirtualServiceEntry] {
        &self.virtual_services
    }

    /// The VirtualService a sidecar in `client_namespace` uses for `fqdn`:
    /// only those bound to `mesh` and exported to the client; the most specific
    /// host wins, then the oldest. Later ones for the same host are ignored.
    pub fn virtual_service_for(
        &self,
        client_namespace: &str,
        fqdn: &str,
    ) -> Option<&VirtualServiceEntry> {
        let visible = |&i: &usize| {
            self.virtual_services[i]
                .visibility
                .visible_to(client_namespace)
        };
        if let Some(&i) = self
            .vs_by_exact_host
            .get(fqdn)
            .and_then(|ids| ids.iter().find(|i| visible(i)))
        {
            return Some(&self.virtual_services[i]);
        }
        // Among wildcards: most specific first, then the oldest (lowest index).
        self.vs_wildcards
            .iter()
            .filter(|(pattern, i)| visible(i) && host::covers(pattern, fqdn))
            .max_by(|(pa, ia), (pb, ib)| {
                host::specificity(pa)
                    .cmp(&host::specificity(pb))
                    .then_with(|| ib.cmp(ia))
            })
            .map(|(_, i)| &self.virtual_services[*i])
    }
}

fn virtual_service_entry(vs: &VirtualService) -> VirtualServiceEntry {
    let namespace = namespace_of(&vs.metadata);
    let hosts = vs
        .spec
        .hosts
        .iter()
        .map(|h| host::resolve(h, &namespace))
        .collect();
    let for_mesh =
        vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY);
    VirtualServiceEntry {
        visibility: Visibility::parse(&vs.spec.export_to, &namespace),
        name: vs.metadata.name.clone().unwrap_or_default(),
        created: vs.metadata.creation_timestamp.clone(),
        hosts,
        for_mesh,
        spec: vs.spec.clone(),
        namespace,
    }
}
