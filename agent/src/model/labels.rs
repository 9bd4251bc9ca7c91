//! Label sets and equality-based selectors.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// Anything a selector can be matched against: a [`Labels`] map, or the
/// compact label sets the inventory keeps for pods.
pub trait LabelLookup: std::fmt::Debug {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// True when `labels` contain every key/value of `selector` (an empty
/// selector selects everything, as in Kubernetes).
pub fn selector_matches(selector: &Labels, labels: &(impl LabelLookup + ?Sized)) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.label(key) == Some(value.as_str()))
}
