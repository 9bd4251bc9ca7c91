//! Facts every namespaced object shares: its namespace, and Istio's order
//! among objects of one kind.

use std::cmp::Ordering;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// Istio's config order: creation time, then name, then namespace.
pub fn config_order(a: (&Option<Time>, &str, &str), b: (&Option<Time>, &str, &str)) -> Ordering {
    // A resource without a timestamp (typical of files) counts as the oldest,
    // like Go's zero time.
    let time = |t: &Option<Time>| t.as_ref().map(|t| t.0);
    time(a.0)
        .cmp(&time(b.0))
        .then_with(|| a.1.cmp(b.1))
        .then_with(|| a.2.cmp(b.2))
}

/// The object's namespace; an object without one lives in `default`, as
/// `kubectl apply` would put it.
pub fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}
