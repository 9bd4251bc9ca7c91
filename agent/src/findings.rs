//! Findings: what is wrong with a mesh's configuration, or with what the
//! agent saw against it, named by a stable code. One type for `check`, the
//! agent's report and its metrics; the codes live in one table.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is. `check` exits non-zero on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// One of [`codes`]: Istio's (IST…) or Kiali's (KIA…) where one exists,
    /// meshdrift's own (MD…) otherwise.
    pub code: String,
    pub severity: Severity,
    /// `Kind namespace/name`, or a file for load problems.
    pub resource: String,
    pub message: String,
}

impl Finding {
    pub fn new(code: &str, severity: Severity, resource: String, message: String) -> Self {
        Finding {
            code: code.to_owned(),
            severity,
            resource,
            message,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {}: {}",
            self.severity, self.code, self.resource, self.message
        )
    }
}

/// Every code meshdrift reports.
pub mod codes {
    /// A route references a host or subset that no resource defines.
    pub const UNKNOWN_HOST_OR_SUBSET: &str = "IST0101";
    /// A field Istio's schema validation rejects (a weight outside int32 ≥ 0).
    pub const SCHEMA_VALIDATION: &str = "IST0106";
    /// Several mesh VirtualServices claim the same host.
    pub const CONFLICTING_HOSTS: &str = "IST0109";
    /// A route can never match (it follows a catch-all).
    pub const UNREACHABLE_ROUTE: &str = "IST0130";
    /// A subset selects no pods.
    pub const SUBSET_SELECTS_NOTHING: &str = "IST0173";
    /// A DestinationRule's host matches no Service.
    pub const RULE_HOST_MATCHES_NOTHING: &str = "IST0174";
    /// A subset's labels match no workload.
    pub const SUBSET_MATCHES_NO_WORKLOAD: &str = "KIA0203";
    /// A DestinationRule disables mTLS while the namespace's PeerAuthentication is STRICT.
    pub const MTLS_DISABLED_NAMESPACE_STRICT: &str = "KIA0207";
    /// A DestinationRule disables mTLS while the mesh-wide PeerAuthentication is STRICT.
    pub const MTLS_DISABLED_MESH_STRICT: &str = "KIA0208";
    /// A subset has no labels.
    pub const SUBSET_WITHOUT_LABELS: &str = "KIA0209";
    /// A single destination has a weight below 100 (it gets everything anyway).
    pub const SINGLE_DESTINATION_WEIGHT: &str = "KIA1104";
    /// The same host and subset appear twice in one route.
    pub const REPEATED_DESTINATION: &str = "KIA1105";
    /// A manifest could not be loaded.
    pub const LOAD_PROBLEM: &str = "MD0001";
    /// Two pods claim one IP.
    pub const DUPLICATE_POD_IP: &str = "MD0002";
    /// Nothing to check: no manifest file, or none holding an object meshdrift reads.
    pub const NO_MANIFESTS: &str = "MD0003";
    /// Every destination of a multi-destination route has weight 0.
    pub const ALL_ZERO_WEIGHTS: &str = "MD0101";
    /// A referenced subset selects pods, but none of the host's Service.
    pub const SUBSET_OF_ANOTHER_SERVICE: &str = "MD0102";
    /// Connections whose Istio SNI names a subset reached a pod without the subset's labels.
    pub const SNI_SUBSET_LABEL_MISMATCH: &str = "MD2001";
}
