//! Interned strings for what pods repeat: namespaces, label keys and values,
//! workload and node names, container port names.
//!
//! 150 000 pods carry a few hundred distinct label keys and values; kept as
//! owned strings in a map per pod they were most of the inventory's memory.
//! A [`Name`] is one pointer to a string shared by every holder (a thin
//! `Arc<String>`: 8 bytes instead of a `String`'s 24 and its allocation).
//! The [`Interner`] forgets a string when the last pod that used it goes, so
//! churn (pod-template hashes of successive rollouts) does not grow it.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use foldhash::{HashSet, HashSetExt};

use crate::model::{LabelLookup, Labels};

/// A shared, immutable string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name(Arc<String>);

impl Name {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

// Hashes as the `str` it holds, as `Borrow<str>` requires.
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl From<&str> for Name {
    /// A name outside any interner (tests, one-off values).
    fn from(text: &str) -> Self {
        Name(Arc::new(text.to_owned()))
    }
}

/// The strings the index shares; each is kept while some holder uses it.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: HashSet<Name>,
}

impl Interner {
    pub(crate) fn new() -> Self {
        Interner {
            strings: HashSet::new(),
        }
    }

    pub(crate) fn intern(&mut self, text: &str) -> Name {
        if let Some(name) = self.strings.get(text) {
            return name.clone();
        }
        let name = Name(Arc::new(text.to_owned()));
        self.strings.insert(name.clone());
        name
    }

    /// The name for `text`, if something holds it.
    pub(crate) fn get(&self, text: &str) -> Option<Name> {
        self.strings.get(text).cloned()
    }

    /// Gives a holder's name back: the string is forgotten when only the
    /// interner still holds it.
    pub(crate) fn release(&mut self, name: Name) {
        // Two: the interner's and this one.
        if Arc::strong_count(&name.0) == 2 {
            self.strings.remove(name.as_str());
        }
    }

    /// Forgets every string no holder uses any more (after a relist, or
    /// when a holder dropped names without releasing them).
    pub(crate) fn purge(&mut self) {
        self.strings.retain(|name| Arc::strong_count(&name.0) > 1);
    }

    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }
}

/// A pod's labels: sorted by key, keys and values interned.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PodLabels(Box<[(Name, Name)]>);

impl PodLabels {
    pub(crate) fn intern(labels: &Labels, interner: &mut Interner) -> Self {
        // A BTreeMap iterates in key order: the pairs come out sorted.
        PodLabels(
            labels
                .iter()
                .map(|(key, value)| (interner.intern(key), interner.intern(value)))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As an ordinary map, for output.
    pub fn to_labels(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    pub(crate) fn pairs(&self) -> &[(Name, Name)] {
        &self.0
    }

    pub(crate) fn release(self, interner: &mut Interner) {
        for (key, value) in self.0 {
            interner.release(key);
            interner.release(value);
        }
    }
}

impl LabelLookup for PodLabels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl fmt::Debug for PodLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation_and_are_forgotten_with_their_last_holder() {
        let mut interner = Interner::new();
        let a = interner.intern("app");
        let b = interner.intern("app");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(interner.len(), 1);
        interner.release(a);
        assert_eq!(interner.len(), 1, "b still holds it");
        interner.release(b);
        assert_eq!(interner.len(), 0);
    }

    #[test]
    fn labels_are_looked_up_by_key() {
        let mut interner = Interner::new();
        let map: Labels = [("version", "v2"), ("app", "web")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let labels = PodLabels::intern(&map, &mut interner);
        assert_eq!(labels.get("app"), Some("web"));
        assert_eq!(labels.get("version"), Some("v2"));
        assert_eq!(labels.get("zone"), None);
        assert_eq!(labels.to_labels(), map);
    }
}
