//! Auto mTLS: what a client sidecar sends to each endpoint when the cluster
//! has no TLS setting of its own (docs/istio-semantics.md, MTLS-2 to MTLS-4).
//!
//! Istio decides in two places. The cluster builder first infers a mode for
//! the Service as a whole (`push_context.go` BestEffortInferServiceMTLSMode):
//! none for a mesh-external host, none when the namespace's (or mesh's)
//! PeerAuthentication is DISABLE, and for a headless Service none unless
//! every pod has a sidecar — a headless cluster then sends mTLS to all its
//! pods alike. Otherwise the endpoint builder labels each endpoint
//! (`mtls_checker.go` checkMtlsEnabled): only an endpoint whose pod carries
//! the sidecar's `security.istio.io/tlsMode: istio` label can be labelled for
//! mTLS (`endpoint_builder.go` buildEnvoyLbEndpoint keeps the pod's own
//! label and only ever clears it); the DestinationRule's mode for the subset
//! and port, when it names one, then decides, else the endpoint's own
//! PeerAuthentication for its port.

use super::destination_rule::{MergedRule, TlsLevel};
use super::peer_authentication::PeerAuthenticationIndex;
use crate::inventory::{Index, PodInfo, ServiceInfo};
use crate::model::istio::{PeerMode, TlsMode};

/// How auto mTLS treats the endpoints of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AutoMtls {
    /// Plaintext to every endpoint; the text says why.
    Off(String),
    /// mTLS to every endpoint: a headless Service whose pods all have a sidecar.
    All,
    /// Decided per endpoint: never mTLS to a pod without a sidecar. A
    /// DestinationRule mode for the subset and port, when there is one,
    /// decides for every endpoint with a sidecar alike.
    PerEndpoint(Option<(TlsMode, TlsLevel)>),
}

impl AutoMtls {
    /// The mode Istio infers for `service` (BestEffortInferServiceMTLSMode),
    /// then how its endpoints are labelled.
    pub fn for_service(
        peer_authentications: &PeerAuthenticationIndex,
        index: &Index,
        service: &ServiceInfo,
        rule_mode: Option<(TlsMode, TlsLevel)>,
    ) -> AutoMtls {
        if service.mesh_external {
            return AutoMtls::Off(
                "the host is outside the mesh (MESH_EXTERNAL): no auto mTLS".to_owned(),
            );
        }
        if service.headless {
            if service.endpoints.is_empty() {
                return AutoMtls::Off("headless Service without endpoints".to_owned());
            }
            let without_sidecar = service.endpoints.iter().find(|endpoint| {
                !index
                    .endpoint_pod(endpoint)
                    .is_some_and(PodInfo::has_istio_tls_mode)
            });
            if let Some(endpoint) = without_sidecar {
                return AutoMtls::Off(format!(
                    "headless Service with an endpoint without a sidecar ({}): clients send plaintext to every pod",
                    endpoint.ip
                ));
            }
        }
        if peer_authentications.client_view(&service.namespace) == PeerMode::Disable {
            return AutoMtls::Off(
                "namespace- or mesh-level PeerAuthentication is DISABLE: clients send plaintext"
                    .to_owned(),
            );
        }
        if service.headless {
            return AutoMtls::All;
        }
        AutoMtls::PerEndpoint(rule_mode)
    }

    /// Whether an endpoint (its pod, and the mode its own PeerAuthentication
    /// enforces on the target port) receives Istio mTLS.
    pub fn endpoint_gets_mtls(&self, pod: Option<&PodInfo>, server: PeerMode) -> bool {
        match self {
            AutoMtls::Off(_) => false,
            AutoMtls::All => true,
            AutoMtls::PerEndpoint(rule_mode) => {
                let sidecar = pod.is_some_and(PodInfo::has_istio_tls_mode);
                sidecar
                    && match rule_mode {
                        Some((mode, _)) => *mode == TlsMode::IstioMutual,
                        None => server != PeerMode::Disable,
                    }
            }
        }
    }

    /// Why the endpoints get what they get, for explanations; `None` for the
    /// ordinary per-endpoint decision.
    pub fn detail(&self, rule: Option<&MergedRule>) -> Option<String> {
        match self {
            AutoMtls::Off(why) => Some(why.clone()),
            AutoMtls::All => {
                Some("headless Service whose pods all have a sidecar: mTLS to every pod".to_owned())
            }
            AutoMtls::PerEndpoint(Some((mode, level))) => {
                let rule = rule.map(MergedRule::name).unwrap_or_default();
                let outcome = if *mode == TlsMode::IstioMutual {
                    "mTLS to the endpoints with a sidecar, plaintext to the others"
                } else {
                    "plaintext to every endpoint"
                };
                Some(format!(
                    "no TLS setting for this port; auto mTLS labels endpoints from DestinationRule {rule}, {level} ({}): {outcome}",
                    mode.as_str()
                ))
            }
            AutoMtls::PerEndpoint(None) => None,
        }
    }
}
