//! The fixtures the drift simulations share (the statistics tests in
//! `agent/tests` and the `drift_alarms` benchmark): one split key, a split
//! declared over subsets `v1`, `v2`, … with given weights, and one
//! observation of requests to one of those subsets.

use meshdrift::observation::{
    DeclaredSplit, DeclaredSubset, Destination, ExpectedTransport, Observation, SplitKey, Unit,
    Workload,
};
use meshdrift::wire::Transport;

/// The simulated split: `shop/web` to `frontend.shop.svc.cluster.local:80`.
pub fn key() -> SplitKey {
    SplitKey {
        source: Workload {
            namespace: "shop".into(),
            name: "web".into(),
        },
        host: "frontend.shop.svc.cluster.local".into(),
        port: 80,
    }
}

/// Requests split over `v1`, `v2`, … with `weights`, in that order.
pub fn declared(weights: &[f64]) -> DeclaredSplit {
    DeclaredSplit {
        unit: Unit::Request,
        determinable: true,
        reason: None,
        subsets: weights
            .iter()
            .enumerate()
            .map(|(i, w)| DeclaredSubset {
                subset: Some(format!("v{}", i + 1)),
                weight: *w,
            })
            .collect(),
    }
}

/// `requests` of [`key`] to subset number `subset` (0 is `v1`) over mTLS,
/// observed at `at` seconds.
pub fn observation(subset: usize, requests: u64, at: f64) -> Observation {
    Observation {
        key: key(),
        destination: Destination::Subset {
            subset: Some(format!("v{}", subset + 1)),
        },
        transport: Transport::IstioMtls,
        expected_transport: Some(ExpectedTransport::Mtls),
        requests,
        estimated: false,
        connections: 1,
        bytes: requests * 512,
        at_seconds: at,
        bypass: None,
        ambient: false,
        endpoint: None,
        source_pod: None,
    }
}
