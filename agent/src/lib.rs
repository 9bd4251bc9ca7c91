//! meshdrift: compares the TCP traffic the kernel sees with what an Istio mesh declares.
//!
//! Data flows top to bottom: `probe` (kernel events) → `wire` (first client bytes) →
//! `inventory` (who is who) → `policy` (what Istio declares) → drift and reporting.

pub mod attribution;
pub mod cli;
pub mod drift;
pub mod export;
pub mod http;
pub mod inventory;
pub mod observation;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod report;
pub mod wire;
