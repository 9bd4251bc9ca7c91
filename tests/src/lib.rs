//! Support for the end-to-end suite: the real eBPF programs and the real
//! `meshdrift` binary against lab traffic, Prometheus and a browser. Every
//! test here needs root or an installed program (`cargo xtask setup` installs
//! them); none skips when they are missing, each fails saying what is.
//! A panic is a test's failure report.

// The unit-test build also links the test binary's dev-dependencies.
#![cfg_attr(test, allow(unused_crate_dependencies))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod observe_agent;
mod privileged;

pub use observe_agent::{Agent, Observed, count, host_of, port_of};
pub use privileged::privileged;
