//! Clients in Istio's ambient mode (docs/istio-semantics.md, AMB-1): no
//! sidecar, yet in the mesh — ztunnel on their node carries their traffic,
//! and waypoints (not ztunnel) apply VirtualService weights. Their
//! connections are neither a bypass nor a transport violation. Until
//! meshdrift verifies ztunnel and waypoints, they are shown as `ambient`,
//! counted once, on the client's node (where the application's socket is).

use std::sync::Arc;

use super::{Attribution, Attributor, Exclusion, observe, workload_of};
use crate::{
    inventory::PodInfo,
    observation::{Destination, SplitKey},
    pipeline::ObservedFlow,
};

impl Attributor {
    /// An application socket of an ambient pod: the Service it dialled (its
    /// cluster IP, or a pod behind it), and the subset when the pod is known.
    pub(super) fn ambient_client(
        &mut self,
        flow: &ObservedFlow,
        client: &PodInfo,
        at_seconds: f64,
    ) -> Attribution {
        let excluded = |reason| Attribution::Excluded {
            reason,
            first: flow.delta.first,
        };
        let mesh = Arc::clone(&self.mesh);
        let server = flow.record.server();
        let (host, port, subset) = match mesh.service_for_vip(server) {
            // kube-proxy (or ztunnel) picks the pod: the subset is unknown here.
            Some((fqdn, port)) => (fqdn.to_owned(), port, None),
            None => {
                let Some(pod) = mesh.index.pod_by_ip(server.ip()) else {
                    return excluded(Exclusion::UnknownDestination);
                };
                let Some((fqdn, port)) = mesh.service_for_endpoint(server) else {
                    return excluded(Exclusion::NoService);
                };
                let subset = mesh
                    .policies
                    .subsets_of_pod(&mesh.index, client, fqdn, pod)
                    .first()
                    .map(|subset| (*subset).to_owned());
                (fqdn.to_owned(), port, subset)
            }
        };
        let key = SplitKey {
            source: workload_of(client),
            host,
            port,
        };
        let mut observation = observe(
            flow,
            key,
            Destination::Subset { subset },
            None,
            at_seconds,
            None,
        );
        observation.ambient = true;
        Attribution::Ambient {
            observation: Box::new(observation),
        }
    }
}
