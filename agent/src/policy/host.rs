//! Istio host names: short-name expansion and most-specific matching
//! (docs/istio-semantics.md, VS-1 and DR-1).

use std::net::IpAddr;

use crate::inventory::CLUSTER_DOMAIN;

/// Expands a host as written in a resource of `namespace`: a name without a
/// dot becomes `<name>.<namespace>.svc.cluster.local`; `*`, IPs and dotted
/// names (`reviews.prod`) stay as written.
pub fn resolve(host: &str, namespace: &str) -> String {
    if host.is_empty() || host == "*" || host.parse::<IpAddr>().is_ok() || host.contains('.') {
        return host.to_owned();
    }
    format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

pub fn is_wildcard(host: &str) -> bool {
    host.starts_with('*')
}

/// Does a (possibly wildcard) configured host cover the concrete `needle`?
/// Wildcards are prefix-only: `*.ns.svc.cluster.local` covers
/// `a.ns.svc.cluster.local` but not `ns.svc.cluster.local`.
pub fn covers(pattern: &str, needle: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => needle.len() > suffix.len() && needle.ends_with(suffix),
        None => pattern == needle,
    }
}

/// How specific a host pattern is when it covers a needle; larger wins.
/// An exact host beats every wildcard; a longer wildcard beats a shorter one.
pub fn specificity(pattern: &str) -> (bool, usize) {
    (!is_wildcard(pattern), pattern.len())
}

/// The most specific of `patterns` that covers `needle`, if any.
pub fn most_specific<'a, I>(needle: &str, patterns: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    patterns
        .into_iter()
        .filter(|p| covers(p, needle))
        .max_by_key(|p| specificity(p))
}
