//! Label sets and equality-based selectors.

use std::collections::BTreeMap;

pub type Labels = BTreeMap<String, String>;

/// True when `labels` contain every key/value of `selector` (an empty
/// selector selects everything, as in Kubernetes).
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value))
}
