//! Policy engine at scale: a synthetic mesh of 150 000 pods and 20 000
//! services (200 namespaces × 100 services × 7–8 pods, each service with a
//! 90/10 VirtualService and a two-subset DestinationRule).
//!
//! Measures the index build (inventory + policies), the memory the built
//! index holds, and one expectation lookup. Budgets: build ≤ 2 s, lookup ≤ 10 µs.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Pod, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshdrift::inventory::Index;
use meshdrift::model::Objects;
use meshdrift::model::istio::{
    ClientTlsSettings, Destination, DestinationRule, DestinationRuleSpec, HttpRoute,
    PeerAuthentication, PeerAuthenticationSpec, PeerMode, PeerMtls, RouteDestination, Subset,
    TlsMode, TrafficPolicy, VirtualService, VirtualServiceSpec,
};
use meshdrift::policy::Policies;

/// Counts live heap bytes so the index's footprint can be reported.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const NAMESPACES: usize = 200;
const SERVICES_PER_NAMESPACE: usize = 100;
const PODS: usize = 150_000;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(ns: &str, name: &str, labels: Option<BTreeMap<String, String>>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        labels,
        ..ObjectMeta::default()
    }
}

fn synthetic_mesh() -> Objects {
    let services = NAMESPACES * SERVICES_PER_NAMESPACE;
    let mut objects = Objects::default();
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        objects.namespaces.push(Namespace {
            metadata: meta("", &ns, None),
            ..Namespace::default()
        });
        objects.peer_authentications.push(PeerAuthentication {
            metadata: meta(&ns, "default", None),
            spec: PeerAuthenticationSpec {
                mtls: Some(PeerMtls {
                    mode: if n.is_multiple_of(2) {
                        PeerMode::Strict
                    } else {
                        PeerMode::Permissive
                    },
                }),
                ..PeerAuthenticationSpec::default()
            },
        });
    }
    for s in 0..services {
        let ns = format!("ns-{}", s / SERVICES_PER_NAMESPACE);
        let app = format!("svc-{s}");
        objects.services.push(Service {
            metadata: meta(&ns, &app, None),
            spec: Some(ServiceSpec {
                selector: Some(labels(&[("app", &app)])),
                ports: Some(vec![ServicePort {
                    name: Some("http".to_owned()),
                    port: 80,
                    target_port: Some(IntOrString::Int(8080)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        });
        let subset = |name: &str| Subset {
            name: name.to_owned(),
            labels: labels(&[("version", name)]),
            traffic_policy: None,
        };
        objects.destination_rules.push(DestinationRule {
            metadata: meta(&ns, &app, None),
            spec: DestinationRuleSpec {
                host: app.clone(),
                traffic_policy: s.is_multiple_of(2).then(|| TrafficPolicy {
                    tls: Some(ClientTlsSettings {
                        mode: TlsMode::IstioMutual,
                    }),
                    port_level_settings: Vec::new(),
                }),
                subsets: vec![subset("v1"), subset("v2")],
                ..DestinationRuleSpec::default()
            },
        });
        let destination = |subset: &str, weight: i64| RouteDestination {
            destination: Destination {
                host: app.clone(),
                subset: Some(subset.to_owned()),
                port: None,
            },
            weight: Some(weight),
        };
        objects.virtual_services.push(VirtualService {
            metadata: meta(&ns, &app, None),
            spec: VirtualServiceSpec {
                hosts: vec![app.clone()],
                http: vec![HttpRoute {
                    route: vec![destination("v1", 90), destination("v2", 10)],
                    ..HttpRoute::default()
                }],
                ..VirtualServiceSpec::default()
            },
        });
    }
    for p in 0..PODS {
        let s = p % services;
        let ns = format!("ns-{}", s / SERVICES_PER_NAMESPACE);
        let app = format!("svc-{s}");
        let version = if (p / services).is_multiple_of(4) {
            "v2"
        } else {
            "v1"
        };
        let ip = format!("10.{}.{}.{}", 64 + p / 65_536, (p / 256) % 256, p % 256);
        objects.pods.push(Pod {
            metadata: meta(
                &ns,
                &format!("{app}-{version}-{p}"),
                Some(labels(&[
                    ("app", &app),
                    ("version", version),
                    ("security.istio.io/tlsMode", "istio"),
                    ("pod-template-hash", &format!("{:x}", p % 97)),
                ])),
            ),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".to_owned()),
                        container_port: 8080,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(ip),
                phase: Some("Running".to_owned()),
                ..PodStatus::default()
            }),
        });
    }
    objects
}

/// A figure for `cargo xtask bench` (which collects these lines) and for people.
fn report(what: &str, value: String) {
    println!(
        "BENCH {}",
        serde_json::json!({ "what": what, "value": value })
    );
}

fn bench_policy(c: &mut Criterion) {
    let objects = synthetic_mesh();

    // One cold build, timed and measured outside criterion for the report.
    let before = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let index = Index::build(&objects);
    let index_time = start.elapsed();
    let after_index = LIVE.load(Ordering::Relaxed);
    let start = Instant::now();
    let policies = Policies::build(&objects);
    let policies_time = start.elapsed();
    let after_policies = LIVE.load(Ordering::Relaxed);
    report(
        "synthetic mesh",
        format!(
            "{} pods, {} services, {} VirtualServices, {} DestinationRules",
            objects.pods.len(),
            objects.services.len(),
            objects.virtual_services.len(),
            objects.destination_rules.len()
        ),
    );
    report(
        "cold build at 150 k pods (inventory index, policies)",
        format!("{index_time:.2?}, {policies_time:.2?}"),
    );
    report(
        "heap held at 150 k pods (inventory index, policies)",
        format!(
            "{:.1} MiB, {:.1} MiB",
            (after_index - before) as f64 / 1_048_576.0,
            (after_policies - after_index) as f64 / 1_048_576.0
        ),
    );

    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    group.bench_function("inventory_index_150k_pods_20k_services", |b| {
        b.iter(|| black_box(Index::build(black_box(&objects))))
    });
    group.bench_function("policies_20k_vs_20k_dr", |b| {
        b.iter(|| black_box(Policies::build(black_box(&objects))))
    });
    group.finish();

    let client = index
        .pod_by_name("ns-7", "svc-700-v2-700")
        .expect("synthetic client pod exists");
    let host = "svc-12345.ns-123.svc.cluster.local";
    let sample = policies
        .expect(&index, client, host, Some(80))
        .expect("synthetic host resolves");
    assert_eq!(sample.destinations.len(), 2);
    report(
        "expectation lookup sample",
        format!(
            "{} destinations, {} endpoints",
            sample.destinations.len(),
            sample
                .destinations
                .iter()
                .map(|d| d.endpoints.len())
                .sum::<usize>()
        ),
    );
    c.bench_function("expectation_lookup", |b| {
        b.iter(|| black_box(policies.expect(&index, client, black_box(host), Some(80))))
    });
    c.bench_function("pod_by_ip", |b| {
        let ip = "10.65.20.30".parse().expect("literal IP");
        b.iter(|| black_box(index.pod_by_ip(black_box(ip))))
    });
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
