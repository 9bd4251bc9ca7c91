//! The traffic-policy path through the agent, fed kernel records the way the
//! probe loop hands them over: a client proxy's connections and failed
//! attempts are attributed to their cluster (a Service subset, or a
//! ServiceEntry host by its address or by the SNI the proxy presents) and
//! judged. The lab tests (`tests/tests/e2e/traffic_policy.rs`) drive the
//! same path with real proxies and the real kernel.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use meshdrift::{
    attribution::Mesh,
    drift::{DriftConfig, DriftEngine},
    export::Metrics,
    inventory::files,
    pipeline::{FlowDelta, ObservedFlow},
    probe::{FlowCounters, FlowKind, FlowRecord, LossCounters, Role, monotonic_ns},
    report::{PolicyCheck, PolicyOutcome, PolicyVerdict},
    runtime::{Agent, Declared},
    wire::{Classification, Transport, parse_istio_sni},
};

const CLIENT: &str = "10.1.0.10";
const REFUSING: &str = "10.1.0.3";
const EXTERNAL: &str = "198.51.100.7";

fn manifests() -> String {
    let pod = |name: &str, ip: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{{labels}, security.istio.io/tlsMode: istio}}\n  annotations: {{sidecar.istio.io/status: '{{\"containers\":[\"istio-proxy\"]}}'}}\nspec:\n  containers: [{{name: app, image: app, ports: [{{containerPort: 8080}}]}}, {{name: istio-proxy, image: proxyv2}}]\nstatus:\n  phase: Running\n  podIP: {ip}\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n".to_owned(),
        pod("client", CLIENT, "app: client"),
        pod("backend-v1-a", "10.1.0.1", "app: backend, version: v1"),
        pod("backend-v1-b", "10.1.0.2", "app: backend, version: v1"),
        pod("backend-v1-c", REFUSING, "app: backend, version: v1"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: backend, namespace: default}\nspec:\n  clusterIP: 10.96.0.9\n  selector: {app: backend}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n".to_owned(),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: backend, namespace: default}\nspec:\n  host: backend\n  trafficPolicy:\n    tls: {mode: ISTIO_MUTUAL}\n    outlierDetection: {consecutive5xxErrors: 3, baseEjectionTime: 60s, maxEjectionPercent: 100}\n  subsets: [{name: v1, labels: {version: v1}}]\n".to_owned(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: backend, namespace: default}\nspec:\n  hosts: [backend]\n  http: [{route: [{destination: {host: backend, subset: v1}}]}]\n".to_owned(),
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: api, namespace: default}}\nspec:\n  hosts: [api.external.test]\n  location: MESH_EXTERNAL\n  resolution: STATIC\n  ports: [{{number: 443, name: tls, protocol: TLS}}]\n  endpoints: [{{address: {EXTERNAL}}}]\n"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: dns-api, namespace: default}\nspec:\n  hosts: [dns.external.test]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 443, name: tls, protocol: TLS}]\n".to_owned(),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api, namespace: default}\nspec:\n  host: api.external.test\n  trafficPolicy: {tls: {mode: SIMPLE, sni: api.external.test}}\n".to_owned(),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dns-api, namespace: default}\nspec:\n  host: dns.external.test\n  trafficPolicy: {tls: {mode: SIMPLE}}\n".to_owned(),
    ]
    .join("---\n")
}

fn agent() -> Agent {
    let dir = tempfile_dir();
    std::fs::write(dir.join("mesh.yaml"), manifests()).expect("write manifests");
    let outcome = files::load_dir(&dir).expect("the manifests load");
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let declared = Declared {
        mesh: Arc::new(Mesh::build(&outcome.objects)),
        load_findings: Vec::new(),
    };
    let mut agent = Agent::new(
        "test".to_owned(),
        DriftEngine::new(DriftConfig::default()).expect("defaults are valid"),
        Arc::new(Metrics::new()),
    );
    // Events settle one millisecond (plus a second) after they happen.
    agent.set_update_interval(Duration::from_millis(1));
    agent.use_declared(&declared);
    agent
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshdrift-traffic-agent-{}-{}",
        std::process::id(),
        monotonic_ns()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Kernel time `seconds_ago` before now.
fn ago(seconds_ago: f64) -> u64 {
    monotonic_ns() - (seconds_ago * 1e9) as u64
}

fn record(kind: FlowKind, cookie: u64, client_port: u16, server: &str, at_ns: u64) -> FlowRecord {
    FlowRecord {
        kind,
        cookie,
        cgroup_id: 1,
        uid: 1337,
        role: Role::Client,
        local: SocketAddr::new(CLIENT.parse().expect("ip"), client_port),
        remote: server.parse().expect("server address"),
        start_ns: at_ns,
        time_ns: at_ns,
        counters: FlowCounters::default(),
        adopted: false,
        nat: None,
    }
}

fn failed(cookie: u64, server: &str, at_ns: u64) -> ObservedFlow {
    ObservedFlow {
        record: record(
            FlowKind::ConnectFailed { timed_out: false },
            cookie,
            40_000 + cookie as u16,
            server,
            at_ns,
        ),
        classification: Arc::new(Classification::plain(Transport::None)),
        delta: FlowDelta {
            counters: FlowCounters::default(),
            first: true,
        },
    }
}

/// A whole short connection (one close record) of one request.
fn closed(cookie: u64, server: &str, at_ns: u64, classification: Classification) -> ObservedFlow {
    let counters = FlowCounters {
        client_bytes: 300,
        server_bytes: 500,
        requests: 1,
        ..FlowCounters::default()
    };
    let mut record = record(
        FlowKind::Close,
        cookie,
        40_000 + cookie as u16,
        server,
        at_ns,
    );
    record.counters = counters;
    record.time_ns = at_ns + 1_000_000;
    ObservedFlow {
        record,
        classification: Arc::new(classification),
        delta: FlowDelta {
            counters,
            first: true,
        },
    }
}

fn istio(subset: &str) -> Classification {
    let sni = format!("outbound_.80_.{subset}_.backend.default.svc.cluster.local");
    Classification {
        transport: Transport::IstioMtls,
        istio: parse_istio_sni(&sni),
        sni: Some(sni),
        alpn: vec!["istio-http/1.1".into()],
        tls_versions: vec!["TLS1.3".into()],
    }
}

fn tls(sni: &str) -> Classification {
    Classification {
        transport: Transport::Tls,
        sni: Some(sni.to_owned()),
        alpn: Vec::new(),
        tls_versions: vec!["TLS1.3".into()],
        istio: None,
    }
}

fn policy<'a>(report: &'a [PolicyVerdict], host: &str, check: PolicyCheck) -> &'a PolicyVerdict {
    report
        .iter()
        .find(|p| p.host == host && p.check == check)
        .unwrap_or_else(|| panic!("no {check:?} row for {host} in {report:#?}"))
}

#[test]
fn a_proxy_that_keeps_dialing_an_ejected_endpoint_is_an_outlier_violation() {
    let mut agent = agent();
    let refusing = format!("{REFUSING}:8080");
    // Three refused attempts eject backend-v1-c; three more follow anyway.
    for (i, seconds_ago) in [9.0, 8.5, 8.0, 6.0, 5.0, 4.0].into_iter().enumerate() {
        agent.consume(&failed(i as u64 + 1, &refusing, ago(seconds_ago)));
    }
    agent.consume(&closed(50, "10.1.0.1:8080", ago(7.0), istio("v1")));
    let report = agent.report(LossCounters::default(), 0);
    let host = "backend.default.svc.cluster.local";
    let row = policy(&report.policies, host, PolicyCheck::OutlierDetection);
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert_eq!(row.subset.as_deref(), Some("v1"));
    assert_eq!(row.source.to_string(), "default/client");
    assert!(
        row.reason.contains("default/backend-v1-c"),
        "{}",
        row.reason
    );
    assert_eq!(row.samples, 7, "six failed attempts and one connection");
}

#[test]
fn failed_attempts_from_pods_without_a_sidecar_or_to_unknown_servers_are_not_evidence() {
    let mut agent = agent();
    for (i, seconds_ago) in [9.0, 8.5, 8.0, 6.0].into_iter().enumerate() {
        // Not an endpoint of anything declared.
        agent.consume(&failed(i as u64 + 1, "10.9.9.9:8080", ago(seconds_ago)));
    }
    let report = agent.report(LossCounters::default(), 0);
    assert!(report.policies.is_empty(), "{:#?}", report.policies);
    assert_eq!(report.agent.excluded_flows.get("no_service"), Some(&4));
}

#[test]
fn originated_tls_to_a_service_entry_is_judged_by_address_or_by_sni() {
    let mut agent = agent();
    let external = format!("{EXTERNAL}:443");
    agent.consume(&closed(1, &external, ago(5.0), tls("api.external.test")));
    let report = agent.report(LossCounters::default(), 0);
    let row = policy(
        &report.policies,
        "api.external.test",
        PolicyCheck::TlsOrigination,
    );
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");

    // The same address with another SNI: the address names the host.
    agent.consume(&closed(2, &external, ago(4.0), tls("wrong.external.test")));
    let report = agent.report(LossCounters::default(), 0);
    let row = policy(
        &report.policies,
        "api.external.test",
        PolicyCheck::TlsOrigination,
    );
    assert_eq!(row.verdict, PolicyOutcome::Violation, "{row:#?}");
    assert!(
        row.observed.contains("wrong.external.test"),
        "{}",
        row.observed
    );

    // A DNS-resolved host has no address in the inventory: its SNI names it.
    agent.consume(&closed(
        3,
        "203.0.113.50:443",
        ago(3.0),
        tls("dns.external.test"),
    ));
    let report = agent.report(LossCounters::default(), 0);
    let row = policy(
        &report.policies,
        "dns.external.test",
        PolicyCheck::TlsOrigination,
    );
    assert_eq!(row.verdict, PolicyOutcome::Ok, "{row:#?}");
    assert_eq!(row.subset, None);
}
