//! meshdrift: compares the TCP traffic the kernel sees with what an Istio mesh
//! declares.
//!
//! ```text
//!  kernel ─ sock_ops, cgroup_skb ─► ring buffer, flow map
//!    │
//!  probe ──────── records: flow updates, closes, first client bytes
//!    │
//!  pipeline ───── joins each flow's records with wire's classification of its
//!    │            first bytes (istio_mtls, tls, http, ...); cumulative → delta
//!    │
//!  attribution ── source workload, host, port, subset, transport, using
//!    │            inventory (who is who) and policy (what is declared),
//!    │            both built from model's objects (manifests or the API)
//!    ▼
//!  observation ── one attributed increment, next to its declared split
//!    │
//!  drift ──────── windowed tallies, goodness-of-fit + tolerance → verdicts
//!    │
//!  report ─────── the snapshot export (metrics) and http (/report, page) render
//! ```
//!
//! `runtime` runs that chain as the agent (`meshdrift run`) and shares its
//! probe loop with `meshdrift observe`; `cli` only parses flags and starts it.
//! `findings` names what is wrong with a configuration (`check`, the report).
//! See `docs/architecture.md` for one paragraph per module and the dependency
//! rules the code keeps.

// The unit-test build also links the integration tests' and benchmarks' dev-dependencies.
#![cfg_attr(test, allow(unused_crate_dependencies))]

pub mod attribution;
pub mod cli;
pub mod drift;
pub mod export;
pub mod federation;
pub mod findings;
pub mod http;
pub mod inventory;
pub mod model;
pub mod observation;
pub mod pipeline;
pub mod policy;
pub mod probe;
pub mod report;
pub mod runtime;
pub mod traffic;
pub mod wire;
