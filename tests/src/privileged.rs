//! The privileged suite: it fails (never skips) without root, and runs one
//! agent at a time: every agent's programs see every socket on the node, so
//! two at once would double the kernel's work under the tests' timing.

use std::sync::{Mutex, MutexGuard};

static ONE_AGENT: Mutex<()> = Mutex::new(());

pub fn privileged() -> MutexGuard<'static, ()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the end-to-end suite creates network namespaces and loads eBPF programs: \
         it needs root (run `cargo xtask test` as root)"
    );
    ONE_AGENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
