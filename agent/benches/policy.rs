//! Policy engine at scale, on the synthetic benchmark mesh
//! (`meshdrift_testkit::SyntheticMesh::BENCHMARK`: 150 000 pods, 20 000
//! services in 200 namespaces, each service with a 90/10 VirtualService and
//! a two-subset DestinationRule), written as manifests and loaded by the
//! files source, as `meshdrift check --manifests` does.
//!
//! Measures loading the manifests (time, peak heap against the input's
//! size), the index builds (inventory + policies) and the heap they hold,
//! `check` on the whole mesh, and one expectation lookup. Budgets: build
//! ≤ 2 s, lookup ≤ 10 µs, check in seconds, loading within a small multiple
//! of the input.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use meshdrift::inventory::{Index, files};
use meshdrift::model::{Change, Object};
use meshdrift::policy::{Policies, PolicyStore, check};
use meshdrift_testkit::SyntheticMesh;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// Runs `f`, returning its result, the time it took, the heap it left
/// allocated and the peak above the heap it started with.
fn measured<T>(f: impl FnOnce() -> T) -> (T, std::time::Duration, usize, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    (out, took, held, peak)
}

/// A figure for `cargo xtask bench` (which collects these lines) and for people.
fn report(what: &str, value: String) {
    println!(
        "BENCH {}",
        serde_json::json!({ "what": what, "value": value })
    );
}

fn bench_policy(c: &mut Criterion) {
    let mesh = SyntheticMesh::BENCHMARK;
    let dir = std::env::temp_dir().join(format!("meshdrift-bench-mesh-{}", std::process::id()));
    let input = mesh.write_manifests(&dir).expect("write the manifests");

    let (outcome, load_time, objects_held, load_peak) =
        measured(|| files::load_dir(&dir).expect("load the manifests"));
    std::fs::remove_dir_all(&dir).expect("remove the manifests");
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
    let objects = outcome.objects;
    report(
        "synthetic mesh",
        format!(
            "{} pods, {} services, {} VirtualServices, {} DestinationRules in {:.1} MB of manifests",
            objects.pods.len(),
            objects.services.len(),
            objects.virtual_services.len(),
            objects.destination_rules.len(),
            input as f64 / 1e6
        ),
    );
    report(
        "manifests loaded at 150 k pods",
        format!(
            "{load_time:.2?}; peak heap {:.1} MiB ({:.1}× the input), objects held {:.1} MiB",
            mib(load_peak),
            load_peak as f64 / input as f64,
            mib(objects_held)
        ),
    );

    let (index, index_time, index_held, _) = measured(|| Index::build(&objects));
    let (policies, policies_time, policies_held, _) = measured(|| Policies::build(&objects));
    report(
        "cold build at 150 k pods (inventory index, policies)",
        format!("{index_time:.2?}, {policies_time:.2?}"),
    );
    // What a watching agent keeps besides: every policy object, to rebuild
    // the policies when one changes.
    let (store, _, store_held, _) = measured(|| {
        let mut store = PolicyStore::default();
        let changes = (objects.virtual_services.iter())
            .map(|vs| Object::VirtualService(Box::new(vs.clone())))
            .chain(
                (objects.destination_rules.iter())
                    .map(|dr| Object::DestinationRule(Box::new(dr.clone()))),
            )
            .chain(
                (objects.peer_authentications.iter())
                    .map(|pa| Object::PeerAuthentication(Box::new(pa.clone()))),
            );
        for object in changes {
            store.apply(&Change::Applied(object));
        }
        store
    });
    report(
        "heap held at 150 k pods (inventory index, policies, policy objects kept for rebuilds)",
        format!(
            "{:.1} MiB, {:.1} MiB, {:.1} MiB",
            mib(index_held),
            mib(policies_held),
            mib(store_held)
        ),
    );
    drop(store);
    let (findings, check_time, _, check_peak) = measured(|| check(&index, &policies));
    report(
        "meshdrift check at 150 k pods",
        format!(
            "{check_time:.2?}, {} findings, peak heap {:.1} MiB",
            findings.len(),
            mib(check_peak)
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

    let mut group = c.benchmark_group("check");
    group.sample_size(10);
    group.bench_function("check_150k_pods_20k_services", |b| {
        b.iter(|| black_box(check(black_box(&index), black_box(&policies))))
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
