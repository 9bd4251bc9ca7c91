//! Traffic into the mesh that no proxy carried: what Istio's own telemetry
//! cannot report, because no proxy saw it.
//!
//! - `sidecar_bypassed` is judged on the client's side: an application socket
//!   in a pod with a sidecar that reached a mesh destination without its
//!   packets being redirected to the proxy (the kernel saw no rewrite of their
//!   destination).
//! - `no_sidecar` and `host_network` are judged where the connection arrives:
//!   the destination pod's accepted socket names the pod (so the subset) that
//!   kube-proxy really chose, whichever node the client ran on, and each
//!   connection is counted once, by the agent on the destination's node. The
//!   original port is gone when the destination's sidecar redirected the
//!   connection to its inbound port; the Service port is then the one that
//!   targets the pod (the first, by name, if several do).

use std::sync::Arc;

use super::{
    Answer, Attribution, Attributor, Chosen, Exclusion, choose_destination, expected_transport,
    observe, workload_of,
};
use crate::{
    inventory::{PodId, PodInfo},
    model::istio::PeerMode,
    observation::{BypassReason, Destination, ExpectedTransport, SplitKey},
    pipeline::ObservedFlow,
};

/// Where a sidecar's rules redirect inbound connections.
const INBOUND_CAPTURE_PORT: u16 = 15006;

impl Attributor {
    /// An application socket of a sidecar pod that left the pod without
    /// passing through its proxy.
    pub(super) fn around_sidecar(
        &mut self,
        flow: &ObservedFlow,
        client_id: Option<PodId>,
        client: &PodInfo,
        at_seconds: f64,
    ) -> Attribution {
        let record = &flow.record;
        let excluded = |reason| Attribution::Excluded {
            reason,
            first: flow.delta.first,
        };
        let mesh = Arc::clone(&self.mesh);
        let server = record.server();
        let (host, port, server_pod) = match mesh.service_for_vip(server) {
            // kube-proxy on the node picks the pod: the subset stays unknown here.
            Some((fqdn, port)) => (fqdn.to_owned(), port, None),
            None => {
                let Some(pod) = mesh.index.pod_by_ip(server.ip()) else {
                    return excluded(Exclusion::UnknownDestination);
                };
                if pod.sidecar.is_none() {
                    // Not a mesh destination: nothing was bypassed.
                    return excluded(Exclusion::UnknownDestination);
                }
                match mesh.service_for_endpoint(server) {
                    Some((fqdn, port)) => (fqdn.to_owned(), port, Some(pod)),
                    None => return excluded(Exclusion::NoService),
                }
            }
        };
        // What the proxy would have sent there, had it carried the connection.
        let (subset, expected) =
            match (self.expectation(client_id, client, &host, port), server_pod) {
                (Some(Answer { expectation, .. }), Some(_)) => {
                    match choose_destination(&expectation, server, None, false) {
                        Chosen::Declared(at) => {
                            let chosen = &expectation.destinations[at];
                            (chosen.subset.clone(), expected_transport(chosen, server))
                        }
                        Chosen::Unexpected(_) => (None, None),
                    }
                }
                _ => (None, None),
            };
        if let Some(sidecar) = &client.sidecar {
            tracing::debug!(
                client = %client.key(),
                %server,
                reason = ?sidecar.bypass(server.ip(), server.port()),
                "a connection went around the client's sidecar"
            );
        }
        let key = SplitKey {
            source: workload_of(client),
            host,
            port,
        };
        bypass(
            flow,
            key,
            subset,
            expected,
            at_seconds,
            BypassReason::SidecarBypassed,
        )
    }

    /// An accepted socket: a bypass when a client without a sidecar (or on
    /// the host's network) reached a pod with one.
    pub(super) fn server_side(&mut self, flow: &ObservedFlow, at_seconds: f64) -> Attribution {
        let record = &flow.record;
        let (server, client) = (record.local, record.remote);
        if client.ip().is_loopback() || server.ip().is_loopback() {
            return Attribution::ServerSide;
        }
        // Probes and the proxy's own ports are not application traffic.
        if server.port() != INBOUND_CAPTURE_PORT
            && super::MESH_INTERNAL_PORTS.contains(&server.port())
        {
            return Attribution::ServerSide;
        }
        let mesh = Arc::clone(&self.mesh);
        let Some(server_pod) = mesh.index.pod_by_ip(server.ip()) else {
            return Attribution::ServerSide;
        };
        if server_pod.sidecar.is_none() {
            return Attribution::ServerSide;
        }
        let started = self.wall_seconds(record.start_ns);
        let (source, reason, client_pod) = match mesh.index.pod_by_ip_at(client.ip(), started) {
            Some(pod) if pod.sidecar.is_some() => return Attribution::ServerSide,
            // In the mesh through ztunnel: shown on its own node, not a bypass.
            Some(pod) if mesh.index.in_ambient(pod) => return Attribution::ServerSide,
            Some(pod) => (workload_of(pod), BypassReason::NoSidecar, pod),
            None => match mesh.host_network_source(client.ip()) {
                Some(workload) => (workload, BypassReason::HostNetwork, server_pod),
                None => return Attribution::ServerSide,
            },
        };
        let service = if server.port() == INBOUND_CAPTURE_PORT {
            mesh.service_of_pod_ip(server.ip())
        } else {
            mesh.service_for_endpoint(server)
                .map(|(fqdn, port)| (fqdn, port, server.port()))
        };
        let Some((host, port, target_port)) = service else {
            return Attribution::ServerSide;
        };
        let subset = mesh
            .policies
            .subsets_of_pod(&mesh.index, client_pod, host, server_pod)
            .first()
            .map(|subset| (*subset).to_owned());
        // No proxy on the client: what the server's sidecar accepts decides.
        let expected = match mesh.policies.peer_authentications.server_mode(
            Some(server_pod),
            &server_pod.namespace,
            Some(target_port),
        ) {
            PeerMode::Strict => Some(ExpectedTransport::Mtls),
            PeerMode::Disable => Some(ExpectedTransport::Plaintext),
            PeerMode::Permissive | PeerMode::Unset => None,
        };
        let key = SplitKey {
            source,
            host: host.to_owned(),
            port,
        };
        bypass(flow, key, subset, expected, at_seconds, reason)
    }
}

/// A bypass row's observation: the subset reached, no client proxy.
fn bypass(
    flow: &ObservedFlow,
    key: SplitKey,
    subset: Option<String>,
    expected: Option<ExpectedTransport>,
    at_seconds: f64,
    reason: BypassReason,
) -> Attribution {
    Attribution::Bypass {
        observation: Box::new(observe(
            flow,
            key,
            Destination::Subset { subset },
            expected,
            at_seconds,
            Some(reason),
        )),
    }
}
