//! The demo's situation as data: a declared 50/50 split served 80/20 and a
//! client sending plaintext to v2, as a report and as observations.

use std::collections::BTreeMap;

use meshdrift::export::Metrics;
use meshdrift::findings::{Finding, Severity};
use meshdrift::observation::{
    BypassReason, Destination, ExpectedTransport, Observation, SplitKey, Unit, Workload,
};
use meshdrift::report::{
    AgentHealth, AmbientRow, BypassRow, PolicyCheck, PolicyOutcome, PolicyVerdict, Report,
    ServiceDestination, SplitVerdict, SubsetShare, TransportVerdict, UnexpectedDestination,
};
use meshdrift::wire::Transport;

pub const HOST: &str = "frontend.default.svc.cluster.local";

pub fn workload(name: &str) -> Workload {
    Workload {
        namespace: "default".into(),
        name: name.into(),
    }
}

pub fn drift_report() -> Report {
    Report {
        generated_at: "2026-11-24T06:30:00Z".into(),
        node: "lab-node-1".into(),
        window_seconds: 600,
        splits: vec![
            SplitVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                port: 80,
                unit: Unit::Request,
                samples: 4000,
                estimated: false,
                p_value: Some(2.5e-300),
                drift: true,
                reason: "subset v2 received 20.0% of requests, declared 50.0% (beyond the 5.0% tolerance, p < 0.001)".into(),
                subsets: vec![
                    SubsetShare {
                        subset: Some("v1".into()),
                        declared: 0.5,
                        observed: 0.8,
                        count: 3200,
                        ci_low: 0.7874,
                        ci_high: 0.8120,
                    },
                    SubsetShare {
                        subset: Some("v2".into()),
                        declared: 0.5,
                        observed: 0.2,
                        count: 800,
                        ci_low: 0.1880,
                        ci_high: 0.2126,
                    },
                ],
                evidence: None,
            },
            SplitVerdict {
                source: workload("checkout"),
                host: "payments.shop.svc.cluster.local".into(),
                port: 8443,
                unit: Unit::Connection,
                samples: 1200,
                estimated: false,
                p_value: Some(0.41),
                drift: false,
                reason: "within tolerance".into(),
                subsets: vec![
                    SubsetShare {
                        subset: Some("stable".into()),
                        declared: 0.9,
                        observed: 0.905,
                        count: 1086,
                        ci_low: 0.887,
                        ci_high: 0.920,
                    },
                    SubsetShare {
                        subset: Some("canary".into()),
                        declared: 0.1,
                        observed: 0.095,
                        count: 114,
                        ci_low: 0.080,
                        ci_high: 0.113,
                    },
                ],
                evidence: None,
            },
        ],
        transport: vec![
            TransportVerdict {
                source: workload("curl"),
                host: HOST.into(),
                subset: Some("v2".into()),
                expected: Some(ExpectedTransport::Mtls),
                observed: BTreeMap::from([("http".to_owned(), 57)]),
                violation: true,
                mismatch: false,
                violations: 57,
                mismatches: 0,
            },
            TransportVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                subset: Some("v1".into()),
                expected: Some(ExpectedTransport::Mtls),
                observed: BTreeMap::from([("istio_mtls".to_owned(), 310)]),
                violation: false,
                mismatch: false,
                violations: 0,
                mismatches: 0,
            },
        ],
        unexpected: vec![UnexpectedDestination {
            source: workload("loadgen"),
            host: HOST.into(),
            port: 80,
            destination: "default/frontend-v3-7d9f".into(),
            reason: "pod matches no subset of the DestinationRule".into(),
            connections: 4,
            requests: 40,
        }],
        bypass: vec![BypassRow {
            source: workload("legacy"),
            destination: ServiceDestination {
                host: HOST.into(),
                port: 80,
                subset: Some("v2".into()),
            },
            reason: BypassReason::NoSidecar,
            transport: "http".into(),
            connections: 12,
            requests: 12,
        }],
        ambient: vec![AmbientRow {
            source: workload("batch"),
            destination: ServiceDestination {
                host: HOST.into(),
                port: 80,
                subset: None,
            },
            transport: "http".into(),
            connections: 3,
            requests: 9,
        }],
        policies: vec![
            PolicyVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                port: 80,
                subset: Some("v1".into()),
                check: PolicyCheck::MaxRequestsPerConnection,
                declared: "at most 100 requests per connection".into(),
                observed: "the busiest of 4 connections carried 3200 requests".into(),
                verdict: PolicyOutcome::Violation,
                reason: "4 connections carried more than 100 requests (the most: 3200)".into(),
                samples: 4,
            },
            PolicyVerdict {
                source: workload("loadgen"),
                host: HOST.into(),
                port: 80,
                subset: Some("v1".into()),
                check: PolicyCheck::LoadBalancer,
                declared: "LEAST_REQUEST (Istio's default) over 1 endpoint".into(),
                observed: "default/frontend-v1 100.0 % of 3200 requests".into(),
                verdict: PolicyOutcome::Untested,
                reason: "the subset has one endpoint: nothing to balance".into(),
                samples: 3200,
            },
        ],
        findings: vec![Finding {
            code: "IST0101".into(),
            severity: Severity::Warning,
            resource: "VirtualService default/frontend".into(),
            message: "route references subset v3 that no DestinationRule defines".into(),
        }],
        agent: AgentHealth {
            version: "0.1.0".into(),
            uptime_seconds: 3_725,
            counting_since: None,
            lost_events: BTreeMap::from([("ringbuf_full".to_owned(), 0)]),
            flows_tracked: 42,
            inventory: BTreeMap::from([("Pod".to_owned(), 6), ("Service".to_owned(), 2)]),
            excluded_flows: BTreeMap::from([("mesh_internal_port".to_owned(), 17)]),
        },
        pods: Vec::new(),
        nodes: Vec::new(),
    }
}

pub fn observation(source: &str, subset: Option<&str>, transport: Transport) -> Observation {
    Observation {
        key: SplitKey {
            source: workload(source),
            host: HOST.into(),
            port: 80,
        },
        destination: Destination::Subset {
            subset: subset.map(str::to_owned),
        },
        transport,
        expected_transport: Some(ExpectedTransport::Mtls),
        requests: 10,
        estimated: false,
        connections: 1,
        bytes: 2048,
        at_seconds: 1.0,
        bypass: None,
        ambient: false,
        endpoint: subset.map(|s| format!("default/frontend-{s}")),
        source_pod: None,
    }
}

/// Metrics that have recorded the demo's observations (a stray pod, TLS
/// where plaintext is expected and a client without a sidecar among them)
/// and published [`drift_report`].
pub fn populated_metrics() -> Metrics {
    let metrics = Metrics::new();
    metrics.record(&observation("loadgen", Some("v1"), Transport::IstioMtls));
    metrics.record(&observation("loadgen", Some("v2"), Transport::IstioMtls));
    metrics.record(&observation("curl", Some("v2"), Transport::Http));
    let mut stray = observation("loadgen", None, Transport::IstioMtls);
    stray.destination = Destination::Unexpected {
        destination: "default/frontend-v3-7d9f".into(),
        reason: "pod matches no subset".into(),
    };
    metrics.record(&stray);
    let mut tls_to_plain = observation("legacy", None, Transport::Tls);
    tls_to_plain.expected_transport = Some(ExpectedTransport::Plaintext);
    metrics.record(&tls_to_plain);
    let mut around = observation("legacy", Some("v2"), Transport::Http);
    around.bypass = Some(BypassReason::NoSidecar);
    metrics.record(&around);
    metrics.update(&drift_report());
    metrics
}
