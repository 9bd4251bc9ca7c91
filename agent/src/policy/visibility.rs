//! `exportTo`: which namespaces see a VirtualService, DestinationRule or
//! ServiceEntry (docs/istio-semantics.md, VS-3).

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    everywhere: bool,
    namespaces: BTreeSet<String>,
}

impl Visibility {
    /// Empty means everywhere (the mesh default `*`); `.` is the resource's own
    /// namespace; `~` is nowhere; anything else names a namespace.
    pub fn parse(export_to: &[String], own_namespace: &str) -> Self {
        if export_to.is_empty() {
            return Visibility {
                everywhere: true,
                namespaces: BTreeSet::new(),
            };
        }
        let mut out = Visibility::default();
        for entry in export_to {
            match entry.as_str() {
                "*" => out.everywhere = true,
                "." => {
                    out.namespaces.insert(own_namespace.to_owned());
                }
                "~" => {}
                ns => {
                    out.namespaces.insert(ns.to_owned());
                }
            }
        }
        out
    }

    pub fn visible_to(&self, namespace: &str) -> bool {
        self.everywhere || self.namespaces.contains(namespace)
    }

    pub fn is_nowhere(&self) -> bool {
        !self.everywhere && self.namespaces.is_empty()
    }

    /// Exactly its own namespace (`.` or the namespace's name alone): Istio keeps
    /// such a rule out of the index other namespaces search.
    pub fn is_private_only(&self, own_namespace: &str) -> bool {
        !self.everywhere && self.namespaces.len() == 1 && self.namespaces.contains(own_namespace)
    }

    pub fn union(&mut self, other: &Visibility) {
        self.everywhere |= other.everywhere;
        self.namespaces.extend(other.namespaces.iter().cloned());
    }

    /// Some namespace sees both.
    pub fn overlaps(&self, other: &Visibility) -> bool {
        if self.is_nowhere() || other.is_nowhere() {
            return false;
        }
        self.everywhere
            || other.everywhere
            || self
                .namespaces
                .intersection(&other.namespaces)
                .next()
                .is_some()
    }
}
