//! The agent's integration tests, in one binary: every test here needs
//! neither root nor an installed program, so plain `cargo test` runs them.
//! Tests that do (the lab, the kernel, Prometheus, a browser) live in the
//! end-to-end package, `tests/`.

// The binary links the library's dependencies; only some are named here.
#![allow(unused_crate_dependencies)]
// A panic is a test's failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod check_scale;
mod cli_flags;
mod cli_manifests;
mod cli_output;
mod cli_terminal;
mod drift_statistics;
mod http_manifests;
mod http_report_cli;
mod http_server;
mod inventory_files;
mod inventory_incremental;
mod inventory_index;
mod kube_source;
mod metrics_exposition;
mod policy_check;
mod policy_cli;
mod policy_default_route;
mod policy_destination_rule;
mod policy_endpoint_mtls;
mod policy_mtls;
mod policy_properties;
mod policy_tls_merge;
mod policy_traffic;
mod policy_virtual_service;
mod traffic_agent;
mod wire_classify;
