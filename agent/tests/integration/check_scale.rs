//! `meshdrift check` on a large mesh: every lookup is indexed, so the work
//! grows with pods plus routes rather than their product, and the loaded
//! manifests stay within a small multiple of their size in memory.
//!
//! The mesh puts 1 000 services and 40 000 pods in one namespace, so every
//! subset's labels (`version: v1`) match tens of thousands of pods: a check
//! that scans the pods per route destination does not finish in time. Timings
//! proper belong to the benchmark (`agent/benches/policy.rs`); the deadline
//! here only catches work that grows with the product.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshdrift_testkit::SyntheticMesh;

const MESH: SyntheticMesh = SyntheticMesh {
    namespaces: 1,
    services_per_namespace: 1_000,
    pods: 40_000,
};

/// Exit status and peak resident memory (bytes) of `meshdrift args`, killed
/// after `deadline`.
// Reaped by wait4 below, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], deadline: Duration) -> (i32, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let started = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own child; status and usage are valid out-pointers.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(reaped >= 0, "wait4: {}", std::io::Error::last_os_error());
        if reaped == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            };
            // ru_maxrss is in KiB on Linux.
            return (code, u64::try_from(usage.ru_maxrss).unwrap() * 1024);
        }
        if started.elapsed() > deadline {
            // SAFETY: pid is our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("meshdrift {args:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn check_on_a_large_mesh_is_indexed_and_bounded_in_memory() {
    let dir = std::env::temp_dir().join(format!("meshdrift-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let input = MESH.write_manifests(&dir).unwrap();
    let (code, peak) = run_measured(
        &["check", "--manifests", dir.to_str().unwrap()],
        Duration::from_secs(120),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "check: {} MB of manifests, peak resident memory {} MiB",
        input / 1_000_000,
        peak >> 20
    );
    assert_eq!(code, 0, "the synthetic mesh is clean");
    // The process itself (code, runtime, allocator) takes some 20 MiB.
    let budget = 64 * 1024 * 1024 + 6 * input;
    assert!(
        peak <= budget,
        "peak resident memory {} MiB for {} MB of manifests (budget {} MiB)",
        peak >> 20,
        input / 1_000_000,
        budget >> 20
    );
}
