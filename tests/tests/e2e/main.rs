//! The end-to-end suite, in one binary: the real eBPF programs, the real
//! `meshdrift` binary, the lab's nginx, HAProxy and load generators, a real
//! Prometheus and a headless browser. Needs root and the lab's programs
//! (`cargo xtask setup`); every test fails, never skips, without them.

// The binary links every dependency of the package; it names only some.
#![allow(unused_crate_dependencies)]
// A panic is a test's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bypass;
mod capabilities;
mod chart;
mod cluster;
mod cluster_report;
mod counting;
mod drift;
mod failed_connect;
mod grafana;
mod http2;
mod kernel_selftest;
mod lab;
mod nodes;
mod observe;
mod prometheus_scrape;
mod report_page;
mod rules;
mod traffic_policy;
