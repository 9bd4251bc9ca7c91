//! What the traffic-policy checks read: the policy a DestinationRule
//! declares for one client cluster (load balancing, connection pool,
//! outlier detection, TLS origination) and what the kernel saw of that
//! client proxy's connections to the cluster's endpoints.
//!
//! A cluster is Envoy's unit of policy: one client proxy, one host, Service
//! port and subset. Its limits (`maxConnections`, outlier ejection) count
//! per client proxy, so the checks judge per client pod and report per
//! source workload.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::{Unit, Workload};
use crate::wire::Transport;

/// A client workload's cluster: one host, Service port and subset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterKey {
    pub source: Workload,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
}

/// How the client proxy is told to pick an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// `LEAST_REQUEST`, Istio's default when `loadBalancer` is unset.
    LeastRequest {
        default: bool,
    },
    RoundRobin,
    Random,
    LeastConn,
    Passthrough,
    /// `consistentHash.useSourceIp`: one endpoint per client address.
    HashSourceIp,
    /// `consistentHash` over an HTTP header, cookie or query parameter.
    HashL7 {
        key: &'static str,
    },
    /// A `simple` value this version does not know.
    Unknown,
}

impl Balance {
    pub fn describe(self) -> String {
        match self {
            Balance::LeastRequest { default: true } => "LEAST_REQUEST (Istio's default)".to_owned(),
            Balance::LeastRequest { default: false } => "LEAST_REQUEST".to_owned(),
            Balance::RoundRobin => "ROUND_ROBIN".to_owned(),
            Balance::Random => "RANDOM".to_owned(),
            Balance::LeastConn => "LEAST_CONN".to_owned(),
            Balance::Passthrough => "PASSTHROUGH".to_owned(),
            Balance::HashSourceIp => "consistentHash.useSourceIp".to_owned(),
            Balance::HashL7 { key } => format!("consistentHash.{key}"),
            Balance::Unknown => "an unknown loadBalancer.simple".to_owned(),
        }
    }
}

/// Outlier detection as it applies to failed connection attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ejection {
    /// Consecutive failures that eject an endpoint; `None` when no limit
    /// applies to connection failures (every counting field set to 0).
    pub consecutive_errors: Option<u32>,
    /// Which field set the limit (`consecutive5xxErrors`, …, or Envoy's default).
    pub limit_from: String,
    /// How long the first ejection lasts at least.
    #[serde(with = "seconds")]
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// TLS the client proxy originates (`SIMPLE` or `MUTUAL`), and the SNI it presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origination {
    pub mode: &'static str,
    pub sni: String,
    /// False when `sni` is unset and the host stands in for it.
    pub sni_declared: bool,
}

/// The traffic policy declared for one cluster, after DestinationRule
/// merging: what the checks compare the kernel's evidence with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeclaredTraffic {
    pub unit: Unit,
    pub load_balancer: Balance,
    pub max_connections: Option<u64>,
    pub max_requests_per_connection: Option<u64>,
    /// Explicit idle timeout of upstream connections (`http.idleTimeout` for
    /// HTTP, `tcp.idleTimeout` for TCP); unset means Envoy's one hour.
    #[serde(with = "optional_seconds")]
    pub idle_timeout: Option<Duration>,
    pub outlier_detection: Option<Ejection>,
    pub tls_origination: Option<Origination>,
    /// The cluster's endpoints (`namespace/pod`, or the address), in the
    /// order the inventory lists them: balance is judged over all of them,
    /// those that got nothing included.
    pub endpoints: Vec<String>,
    /// Where each setting comes from (`loadBalancer` → `DestinationRule
    /// default/backend, subset v1 trafficPolicy`).
    pub defined_at: Vec<(String, String)>,
}

impl DeclaredTraffic {
    /// Nothing declared: Istio's defaults.
    pub fn defaults(unit: Unit) -> Self {
        Self {
            unit,
            load_balancer: Balance::LeastRequest { default: true },
            max_connections: None,
            max_requests_per_connection: None,
            idle_timeout: None,
            outlier_detection: None,
            tls_origination: None,
            endpoints: Vec::new(),
            defined_at: Vec::new(),
        }
    }
}

/// One client proxy's connection to one endpoint of a cluster, at an
/// update, a close, or a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSample {
    pub cluster: ClusterKey,
    pub declared: Arc<DeclaredTraffic>,
    /// `namespace/name` of the client pod whose proxy opened it.
    pub client_pod: String,
    /// `namespace/name` of the endpoint pod, or its address.
    pub endpoint: String,
    /// The kernel's socket cookie (0 for a failed attempt).
    pub cookie: u64,
    pub event: ConnectionEvent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionEvent {
    /// What the connection carried since its last update. Times are the
    /// agent's clock (seconds since it started), from the kernel's stamps.
    Activity(Activity),
    /// An attempt that never established: refused, reset or timed out.
    Failed { at: f64, timed_out: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// When the connection was established.
    pub opened_at: f64,
    /// When it closed, if this update is its close.
    pub closed_at: Option<f64>,
    /// When this update was read.
    pub seen_at: f64,
    /// Requests (http) since the last update.
    pub requests: u64,
    /// Whether `requests` is an estimate (encrypted HTTP/2).
    pub estimated: bool,
    /// Payload bytes, both ways, since the last update.
    pub bytes: u64,
    /// True on the connection's first update: the one whose first bytes
    /// the TLS-origination check reads.
    pub first: bool,
    /// What its first client bytes were, and the SNI they named (on the
    /// first update only).
    pub transport: Transport,
    pub sni: Option<String>,
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod optional_seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
