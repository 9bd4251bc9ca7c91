//! Fixtures the tests share: the demo's situation as a report and as
//! observations, a synthetic mesh of any size, the agent's HTTP server on a
//! free port, a stand-in Kubernetes API server, and the external programs
//! (promtool) some tests run. Tests may panic here: a panic is the test's
//! failure report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod apiserver;
pub mod fixtures;
pub mod hex;
pub mod mesh;
pub mod programs;
pub mod server;
pub mod split_simulation;

pub use fixtures::{HOST, drift_report, observation, populated_metrics, workload};
pub use hex::hex_fixture;
pub use mesh::SyntheticMesh;
pub use programs::promtool;
pub use server::{Server, get};
