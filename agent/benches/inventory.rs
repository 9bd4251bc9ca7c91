//! The inventory index as the cluster grows: synthetic meshes
//! (`SyntheticMesh`, 100 services per namespace, the benchmark's shape) of
//! 1 000, 10 000, 50 000 and 150 000 pods.
//!
//! For each size: the time to build the index from the objects, the heap it
//! holds afterwards (a counting allocator), and the CPU time one pod change
//! costs at that size, applied as the kube source delivers it (a
//! [`Change`]): a pod added, then deleted, the median of several. Printed as
//! `BENCH {json}` lines for `cargo xtask bench`.

// The benchmark links the library's dependencies; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a benchmark's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshdrift::inventory::Index;
use meshdrift::model::pod::{PodIp, PodMeta, PodSpec, PodStatus};
use meshdrift::model::{Change, Kind, Object, ObjectKey, Pod};
use meshdrift_testkit::SyntheticMesh;

/// Counts live heap bytes.
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

/// Pod changes timed at each size.
const CHANGES: usize = 21;

fn report(what: &str, value: String) {
    println!(
        "BENCH {}",
        serde_json::json!({ "what": what, "value": value })
    );
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A pod of an existing Service (`svc-1` of `ns-0`), as the kube source
/// delivers it.
fn extra_pod(i: usize) -> Pod {
    Pod {
        metadata: PodMeta {
            name: Some(format!("extra-{i}")),
            namespace: Some("ns-0".to_owned()),
            labels: [
                ("app", "svc-1"),
                ("version", "v1"),
                ("security.istio.io/tlsMode", "istio"),
                ("pod-template-hash", "extra"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..PodMeta::default()
        },
        spec: PodSpec::default(),
        status: PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: None,
            pod_ips: vec![PodIp {
                ip: format!("10.250.{}.{}", i / 256, i % 256),
            }],
        },
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values[values.len() / 2]
}

fn main() {
    for pods in [1_000, 10_000, 50_000, 150_000] {
        let mesh = SyntheticMesh {
            pods,
            // 100 services per namespace, one namespace per 750 pods, as
            // in the benchmark mesh.
            namespaces: pods.div_ceil(750).max(1),
            services_per_namespace: 100,
        };
        let objects = mesh.objects();
        let before = LIVE.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut index = Index::build(&objects);
        let build = started.elapsed();
        let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
        drop(objects);

        let mut added = Vec::new();
        let mut deleted = Vec::new();
        for i in 0..CHANGES {
            let change = Change::Applied(Object::Pod(Box::new(extra_pod(i))));
            let start = thread_cpu();
            assert!(index.apply(&change));
            added.push(thread_cpu() - start);
        }
        for i in 0..CHANGES {
            let change = Change::Deleted(Kind::Pod, ObjectKey::new("ns-0", format!("extra-{i}")));
            let start = thread_cpu();
            assert!(index.apply(&change));
            deleted.push(thread_cpu() - start);
        }
        assert_eq!(index.pod_count(), pods);
        report(
            &format!(
                "inventory at {} k pods (build, heap held, one pod added, one pod deleted)",
                pods / 1000
            ),
            format!(
                "{build:.2?}, {:.1} MiB, {:.1} µs, {:.1} µs",
                held as f64 / 1_048_576.0,
                median(added).as_secs_f64() * 1e6,
                median(deleted).as_secs_f64() * 1e6
            ),
        );
    }
}
