//! The report: what `GET /report` returns and `meshdrift report` renders. Plain,
//! versioned-by-field data; `drift` fills the verdicts, `cli` adds the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod format;

pub use crate::findings::Finding;
use crate::observation::{BypassReason, ExpectedTransport, Unit, Workload};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// RFC 3339 UTC time of the report.
    pub generated_at: String,
    pub node: String,
    pub window_seconds: u64,
    pub splits: Vec<SplitVerdict>,
    pub transport: Vec<TransportVerdict>,
    pub unexpected: Vec<UnexpectedDestination>,
    /// Traffic into the mesh that no proxy carried.
    #[serde(default)]
    pub bypass: Vec<BypassRow>,
    /// Traffic of pods in Istio's ambient mode (ztunnel, no sidecar): shown,
    /// not judged.
    #[serde(default)]
    pub ambient: Vec<AmbientRow>,
    /// The DestinationRule traffic policies checked against the connections
    /// the client proxies really made.
    #[serde(default)]
    pub policies: Vec<PolicyVerdict>,
    pub findings: Vec<Finding>,
    pub agent: AgentHealth,
    /// Each client pod's own split, judged alone (a pod runs on one node, so
    /// its node's agent sees all of its traffic): how a stale proxy is found
    /// among a workload's pods.
    #[serde(default)]
    pub pods: Vec<PodSplitVerdict>,
    /// Each node's part of the splits, when the report joins several agents
    /// (`meshdrift report --prometheus`); empty in one agent's report.
    #[serde(default)]
    pub nodes: Vec<NodeShare>,
}

/// The split verdict for one source workload, host and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitVerdict {
    pub source: Workload,
    pub host: String,
    pub port: u16,
    pub unit: Unit,
    /// Observations in the current window and policy generation.
    pub samples: u64,
    /// Whether the requests are estimated rather than counted (multiplexed
    /// HTTP/2 over TLS): the verdict then allows for the estimator's error.
    #[serde(default)]
    pub estimated: bool,
    /// Goodness-of-fit p-value; `None` when not tested (too few samples, one subset,
    /// or not determinable).
    pub p_value: Option<f64>,
    pub drift: bool,
    /// Why the verdict is what it is, in words.
    pub reason: String,
    pub subsets: Vec<SubsetShare>,
    /// The anytime-valid evidence `drift` is decided by; `None` while the
    /// split is not tested.
    #[serde(default)]
    pub evidence: Option<SequentialEvidence>,
}

/// Where the sequential test stands: drift is declared when the statistic
/// crosses the threshold, which bounds the mean time between false alarms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialEvidence {
    /// Natural log of the detector's statistic (a sum of e-values).
    pub ln_statistic: f64,
    /// Natural log of the alarm threshold.
    pub ln_threshold: f64,
    /// Anytime-valid p-value of "the split follows its weights since the
    /// policy generation began" (within the tolerance).
    pub p_value: f64,
    /// Batches judged since the policy generation began.
    pub batches: u64,
    /// Length of one batch, in seconds.
    pub batch_seconds: u64,
}

/// One client pod's split for a host and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSplitVerdict {
    /// `namespace/name` of the client pod.
    pub pod: String,
    #[serde(flatten)]
    pub split: SplitVerdict,
}

/// What one node's agent counted for a subset of a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeShare {
    pub node: String,
    pub source: Workload,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    /// Requests or connections (the split's unit) in the report's range.
    pub count: u64,
    /// The node's share of the key's traffic that went to this subset.
    pub observed: f64,
}

impl SplitVerdict {
    /// Whether a test judged the split (the window's or the sequential one);
    /// untested splits are shown as such, not as passing.
    pub fn tested(&self) -> bool {
        self.p_value.is_some() || self.evidence.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetShare {
    /// Subset name, `None` for the whole host.
    pub subset: Option<String>,
    /// Declared share (0..1).
    pub declared: f64,
    /// Observed share (0..1) in the window.
    pub observed: f64,
    pub count: u64,
    /// Wilson interval of the observed share.
    pub ci_low: f64,
    pub ci_high: f64,
}

/// Expected against observed transport for one source workload, host and subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransportVerdict {
    pub source: Workload,
    pub host: String,
    pub subset: Option<String>,
    pub expected: Option<ExpectedTransport>,
    /// Connections in the window by observed transport (`istio_mtls`, `http`, ...).
    pub observed: BTreeMap<String, u64>,
    /// Plaintext where mTLS is expected.
    pub violation: bool,
    /// TLS where plaintext (DISABLE) is expected, or other mismatches that are not violations.
    pub mismatch: bool,
    pub violations: u64,
    pub mismatches: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnexpectedDestination {
    pub source: Workload,
    pub host: String,
    pub port: u16,
    /// `namespace/pod`, or an address when the pod is unknown.
    pub destination: String,
    pub reason: String,
    pub connections: u64,
    pub requests: u64,
}

/// Traffic of one source workload into the mesh around its proxies, to one
/// host, port and subset, for one reason and transport, over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BypassRow {
    pub source: Workload,
    pub destination: ServiceDestination,
    pub reason: BypassReason,
    /// What the client's first bytes were.
    pub transport: String,
    pub connections: u64,
    pub requests: u64,
}

/// Traffic of one source workload in ambient mode to one host, port and
/// subset, by transport, over the window. Neither a bypass nor a transport
/// violation: ztunnel (and a waypoint, if any) carries it, which the agent
/// does not verify yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmbientRow {
    pub source: Workload,
    pub destination: ServiceDestination,
    /// What the client's first bytes were.
    pub transport: String,
    pub connections: u64,
    pub requests: u64,
}

/// Where bypassing (or ambient) traffic went: the host and Service port, and the subset
/// of the pod it reached (`None` when no subset's labels match it, or when
/// kube-proxy chose the pod on another node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceDestination {
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
}

/// One traffic-policy check of one source workload's cluster (host, Service
/// port, subset), over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVerdict {
    pub source: Workload,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
    pub check: PolicyCheck,
    /// The declared setting, in words.
    pub declared: String,
    /// What the kernel saw, in words.
    pub observed: String,
    pub verdict: PolicyOutcome,
    /// Why the verdict is what it is.
    pub reason: String,
    /// The evidence behind it: requests or connections for balance,
    /// connections for the pool and TLS checks, attempts for outlier detection.
    pub samples: u64,
}

/// Which DestinationRule setting a policy verdict is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyCheck {
    LoadBalancer,
    ConsistentHash,
    MaxConnections,
    MaxRequestsPerConnection,
    IdleTimeout,
    OutlierDetection,
    TlsOrigination,
}

impl PolicyCheck {
    pub const ALL: [PolicyCheck; 7] = [
        PolicyCheck::LoadBalancer,
        PolicyCheck::ConsistentHash,
        PolicyCheck::MaxConnections,
        PolicyCheck::MaxRequestsPerConnection,
        PolicyCheck::IdleTimeout,
        PolicyCheck::OutlierDetection,
        PolicyCheck::TlsOrigination,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyCheck::LoadBalancer => "load_balancer",
            PolicyCheck::ConsistentHash => "consistent_hash",
            PolicyCheck::MaxConnections => "max_connections",
            PolicyCheck::MaxRequestsPerConnection => "max_requests_per_connection",
            PolicyCheck::IdleTimeout => "idle_timeout",
            PolicyCheck::OutlierDetection => "outlier_detection",
            PolicyCheck::TlsOrigination => "tls_origination",
        }
    }

    /// The DestinationRule field it reads.
    pub fn field(self) -> &'static str {
        match self {
            PolicyCheck::LoadBalancer => "loadBalancer.simple",
            PolicyCheck::ConsistentHash => "loadBalancer.consistentHash",
            PolicyCheck::MaxConnections => "connectionPool.tcp.maxConnections",
            PolicyCheck::MaxRequestsPerConnection => "connectionPool.http.maxRequestsPerConnection",
            PolicyCheck::IdleTimeout => "connectionPool.*.idleTimeout",
            PolicyCheck::OutlierDetection => "outlierDetection",
            PolicyCheck::TlsOrigination => "tls (SIMPLE/MUTUAL)",
        }
    }
}

/// A traffic-policy verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOutcome {
    /// The evidence agrees with the declared setting.
    Ok,
    /// The evidence contradicts it.
    Violation,
    /// No verdict: not enough evidence, or nothing the kernel can see.
    Untested,
}

impl PolicyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyOutcome::Ok => "ok",
            PolicyOutcome::Violation => "violation",
            PolicyOutcome::Untested => "untested",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentHealth {
    pub version: String,
    pub uptime_seconds: u64,
    /// RFC 3339 UTC time, to the millisecond, since which the kernel programs
    /// count: traffic before it is not in any tally.
    #[serde(default)]
    pub counting_since: Option<String>,
    /// Lost records by reason (kernel ring buffer full, flow map, ...).
    pub lost_events: BTreeMap<String, u64>,
    pub flows_tracked: u64,
    /// Inventory objects by kind (Pod, Service, VirtualService, ...).
    pub inventory: BTreeMap<String, u64>,
    /// Flows left out of split accounting by reason (mesh-internal port, host traffic, ...).
    pub excluded_flows: BTreeMap<String, u64>,
}
