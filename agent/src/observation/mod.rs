//! What attribution hands to the drift engine and the metrics: one attributed
//! increment of traffic, and the declared split it is compared with. Plain data,
//! shared by `drift`, `export` and the attribution code in `cli`.

pub mod conduct;

use serde::{Deserialize, Serialize};

use crate::wire::Transport;

/// A workload: the owner of the client pods (Deployment, StatefulSet, ...), or the
/// `app` label when the pods have no owner. Metrics never go below this level.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One split under test: a client workload talking to a host on a Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SplitKey {
    pub source: Workload,
    /// Destination host, an FQDN (`frontend.default.svc.cluster.local`).
    pub host: String,
    /// The Service port the client addressed.
    pub port: u16,
}

/// What an http route splits (per request) or a tcp/tls route splits (per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Request,
    Connection,
}

/// The declared split for a key, from the policy engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredSplit {
    pub unit: Unit,
    /// False when an L7 match decides the route: the split is then not compared.
    pub determinable: bool,
    /// Why the split is not determinable.
    pub reason: Option<String>,
    /// Subsets with their weights as fractions (sum 1 when determinable). `None`
    /// is the whole host without a subset.
    pub subsets: Vec<DeclaredSubset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeclaredSubset {
    pub subset: Option<String>,
    pub weight: f64,
}

impl DeclaredSplit {
    /// A stable fingerprint: the window restarts when it changes (a canary step).
    pub fn generation_key(&self) -> String {
        let mut parts: Vec<String> = self
            .subsets
            .iter()
            .map(|s| format!("{}={:.6}", s.subset.as_deref().unwrap_or("-"), s.weight))
            .collect();
        parts.sort();
        format!("{:?}|{}|{}", self.unit, self.determinable, parts.join(","))
    }
}

/// The transport the policy expects on the wire for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedTransport {
    /// Istio mutual TLS (ISTIO_MUTUAL, or auto mTLS to a sidecar).
    Mtls,
    /// Plaintext (DISABLE, or auto mTLS to a pod without sidecar).
    Plaintext,
    /// Originated TLS that is not Istio's (SIMPLE, MUTUAL).
    Tls,
}

impl ExpectedTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedTransport::Mtls => "mtls",
            ExpectedTransport::Plaintext => "plaintext",
            ExpectedTransport::Tls => "tls",
        }
    }
}

/// Where an attributed flow went, relative to the declared split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Destination {
    /// A subset of the declared split (`None`: the host has no subsets).
    Subset { subset: Option<String> },
    /// A destination the declared policy does not send this client to.
    Unexpected {
        /// `namespace/pod`, or the IP when the pod is unknown.
        destination: String,
        reason: String,
    },
}

/// Why traffic into the mesh did not pass through the client's sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BypassReason {
    /// The client pod has no sidecar: kube-proxy, not the VirtualService,
    /// chose the endpoint.
    NoSidecar,
    /// The client pod has a sidecar, but this connection left the pod without
    /// passing through it (ports or ranges its annotations exclude).
    SidecarBypassed,
    /// The client is a hostNetwork pod (or the node): no sidecar can see it.
    HostNetwork,
}

impl BypassReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::NoSidecar => "no_sidecar",
            BypassReason::SidecarBypassed => "sidecar_bypassed",
            BypassReason::HostNetwork => "host_network",
        }
    }
}

/// How far the share of a subset counted in estimated requests (encrypted,
/// multiplexed HTTP/2) can be from the true share: the largest error measured
/// in BENCHMARKS.md (`cargo xtask bench`: 4.3 points) doubled for the
/// estimator's run-to-run variation. A split counted in estimates is flagged
/// only when it is off by more than the tolerance plus this, so an
/// estimator's bias never reads as drift.
pub const ESTIMATED_SHARE_ERROR: f64 = 0.10;

/// One attributed increment of traffic: a closed flow, or the growth of a
/// long-lived flow since its last update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub key: SplitKey,
    pub destination: Destination,
    /// What the first client bytes were.
    pub transport: Transport,
    /// What the policy expects for the endpoint the flow reached, when known.
    pub expected_transport: Option<ExpectedTransport>,
    /// New requests in this increment.
    pub requests: u64,
    /// Whether `requests` is an estimate (multiplexed HTTP/2) rather than an
    /// exact count of request turns.
    #[serde(default)]
    pub estimated: bool,
    /// 1 when this increment opens the flow's account (first update or close), else 0.
    pub connections: u64,
    /// New bytes, both directions.
    pub bytes: u64,
    /// Seconds since the agent started (monotonic), when it was observed.
    pub at_seconds: f64,
    /// Set when the traffic went around the mesh's proxies: it is judged for
    /// its transport, never against the declared split.
    #[serde(default)]
    pub bypass: Option<BypassReason>,
    /// Set when ztunnel (Istio's ambient mode), not a sidecar, carries the
    /// client's traffic: shown as such, never judged until ambient
    /// verification exists.
    #[serde(default)]
    pub ambient: bool,
    /// The endpoint the flow reached (`namespace/pod`, or its address), when
    /// it was counted against a declared subset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The client pod (`namespace/name`) whose proxy made the connection,
    /// when it is known: its own split is judged too.
    #[serde(default)]
    pub source_pod: Option<String>,
}

/// How an observed transport compares with the expected one. The one rule the
/// verdicts, the metrics and the report page share, so a counted violation and
/// a highlighted cell always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportOutcome {
    Expected,
    /// Plaintext where mTLS is expected: traffic bypassed the sidecar's encryption.
    Violation,
    /// Any other difference: TLS where plaintext is expected, non-Istio TLS where
    /// mTLS is expected, plaintext or mTLS where originated TLS is expected.
    Mismatch,
    /// Nothing to judge: no client bytes, or no expectation.
    Neutral,
}

pub fn judge_transport(
    expected: Option<ExpectedTransport>,
    observed: Transport,
) -> TransportOutcome {
    let Some(expected) = expected else {
        return TransportOutcome::Neutral;
    };
    let plaintext = matches!(
        observed,
        Transport::Http | Transport::Http2 | Transport::Other
    );
    match (expected, observed) {
        (_, Transport::None) => TransportOutcome::Neutral,
        // TLS whose handshake was not seen: surely encrypted, maybe Istio's.
        (ExpectedTransport::Plaintext, Transport::Encrypted) => TransportOutcome::Mismatch,
        (_, Transport::Encrypted) => TransportOutcome::Neutral,
        (ExpectedTransport::Mtls, Transport::IstioMtls) => TransportOutcome::Expected,
        (ExpectedTransport::Mtls, _) if plaintext => TransportOutcome::Violation,
        (ExpectedTransport::Plaintext, _) if plaintext => TransportOutcome::Expected,
        (ExpectedTransport::Tls, Transport::Tls) => TransportOutcome::Expected,
        _ => TransportOutcome::Mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_where_mtls_is_expected_is_a_violation() {
        for observed in [Transport::Http, Transport::Http2, Transport::Other] {
            assert_eq!(
                judge_transport(Some(ExpectedTransport::Mtls), observed),
                TransportOutcome::Violation,
                "{observed}"
            );
        }
    }

    #[test]
    fn matching_transports_silent_clients_and_missing_expectations_are_not_flagged() {
        let expected = [
            (ExpectedTransport::Mtls, Transport::IstioMtls),
            (ExpectedTransport::Plaintext, Transport::Http),
            (ExpectedTransport::Plaintext, Transport::Other),
            (ExpectedTransport::Tls, Transport::Tls),
        ];
        for (wanted, observed) in expected {
            assert_eq!(
                judge_transport(Some(wanted), observed),
                TransportOutcome::Expected,
                "{wanted:?} {observed}"
            );
        }
        assert_eq!(
            judge_transport(Some(ExpectedTransport::Mtls), Transport::None),
            TransportOutcome::Neutral
        );
        assert_eq!(
            judge_transport(None, Transport::Http),
            TransportOutcome::Neutral
        );
    }

    #[test]
    fn tls_whose_handshake_was_not_seen_is_judged_only_against_plaintext() {
        for expected in [ExpectedTransport::Mtls, ExpectedTransport::Tls] {
            assert_eq!(
                judge_transport(Some(expected), Transport::Encrypted),
                TransportOutcome::Neutral,
                "{expected:?}"
            );
        }
        assert_eq!(
            judge_transport(Some(ExpectedTransport::Plaintext), Transport::Encrypted),
            TransportOutcome::Mismatch
        );
    }

    #[test]
    fn other_disagreements_are_mismatches_not_violations() {
        let mismatches = [
            (ExpectedTransport::Plaintext, Transport::IstioMtls),
            (ExpectedTransport::Plaintext, Transport::Tls),
            (ExpectedTransport::Mtls, Transport::Tls),
            (ExpectedTransport::Tls, Transport::IstioMtls),
            (ExpectedTransport::Tls, Transport::Http),
        ];
        for (wanted, observed) in mismatches {
            assert_eq!(
                judge_transport(Some(wanted), observed),
                TransportOutcome::Mismatch,
                "{wanted:?} {observed}"
            );
        }
    }
}
