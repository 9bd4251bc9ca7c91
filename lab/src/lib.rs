//! meshdrift's lab: "pods" made of network namespaces on this machine, each
//! with its own cgroup v2 group, running real nginx, HAProxy, curl and wrk.
//! The end-to-end tests, the demo and the benchmarks build on it.
//!
//! Everything needs root. A [`Lab`] owns a bridge `mdl<id>br` (its claim on
//! the id), a node namespace `mdl<id>-node` that routes between its pods and
//! holds kube-proxy's rules ([`Lab::sync_services`]), the subnets
//! `10.213.<id>.0/24` (pods from .10, the node at .1, cluster IPs from .200)
//! and `fd00:213:<id>::/64` ([`Lab::add_node`] adds nodes 2 to 5, each a
//! namespace of its own linked to the first, at `10.213.<id>.<248+k>`), the cgroup
//! `<cgroup2 root>/meshdrift-lab-<id>` (its pods' groups directly below it,
//! or, once the lab has more than one node, below a subtree per node,
//! `…/node-<k>/<pod>`, so an agent attached to one sees that node's sockets
//! only; nodes are added before the first pod) and a work directory; several labs can
//! exist at once, in one process or many. Dropping the lab kills its processes
//! and removes all of it; [`cleanup_stale`] removes what crashed runs left.
//!
//! ```no_run
//! use meshdrift_lab::{Curl, CurlTls, Haproxy, Lab, Nginx, ProxyMode, Upstream, UpstreamTls};
//! use std::net::SocketAddr;
//!
//! # fn main() -> meshdrift_lab::Result<()> {
//! let lab = Lab::new("example")?;
//! let client = lab.add_pod("client")?;
//! let v1 = lab.add_pod("frontend-v1")?;
//! let _nginx = Nginx::builder("v1").http(8080).tls(8443).verify_client(true).start(&v1)?;
//! let host = "frontend.default.svc.cluster.local";
//! let proxy = Haproxy::builder(15001, ProxyMode::Http)
//!     .server(Upstream::new("v1", SocketAddr::new(v1.ip(false), 8443), 100)
//!         .tls(UpstreamTls::istio_http(80, "v1", host, "client")))
//!     .start(&client)?;
//! let report = Curl::new(&proxy.url(false)).count(100).run(&client)?;
//! assert_eq!(report.count_status(200), 100);
//! let stats = proxy.stats()?;
//! println!("v1: {} requests over {} connections", stats.server("v1").map_or(0, |s| s.stot), stats.total().connect);
//! # Ok(()) }
//! ```
//!
//! Load, always bounded in count and time:
//! - [`Curl`]: one curl process for N requests over one kept-alive
//!   connection, or one connection per request
//!   ([`Curl::new_connection_per_request`]), or spaced out over one held
//!   connection ([`Curl::interval`]: `.count(7).interval(5 s)` holds a
//!   connection for 30 s). Each [`Response`] says its status, body, remote
//!   address and whether it opened a new connection.
//! - [`Wrk`]: `wrk --latency` for a bounded duration, parsed into requests/s
//!   and latency percentiles.
//!
//! Processes run through [`Pod::spawn`] / [`Pod::run`] / [`Pod::exec`] live
//! in the pod's network namespace *and* cgroup from their first instruction;
//! their output goes to files in the lab directory. Readiness checks read
//! the pod's listening sockets and never open a connection, so the only
//! flows in a lab are the ones a test makes.
//!
//! Long-running users call [`install_signal_cleanup`] (Ctrl-C / SIGTERM tear
//! every lab of the process down) and may block in [`wait_for_signal`].
//! Set `MESHDRIFT_LAB_KEEP=1` to keep the work directory for debugging;
//! logs go through `tracing`.

mod agent;
mod cgroup;
mod cmd;
mod error;
mod lab;
mod live;
mod netns;
mod pod;
mod process;
mod ready;
mod shared;
mod signals;
mod stale;

pub mod browser;
pub mod certs;
pub mod cluster;
pub mod h2_error;
pub mod haproxy;
pub mod iperf;
pub mod kube_proxy;
pub mod load;
pub mod nginx;
pub mod prometheus;
pub mod scenario;
pub mod sidecar;
pub mod stale_sidecar;
pub mod traffic_policy;

pub use agent::{AgentOutput, AgentProcess, meshdrift_bin};
pub use certs::{CertAuthority, Identity};
pub use cgroup::{cgroup_id, cgroup2_root};
pub use error::{LabError, Result};
pub use haproxy::{
    Balance, Haproxy, HaproxyBuilder, HaproxyStats, Observe, ProxyMode, ServerConnections,
    ServerStats, Upstream, UpstreamTls,
};
pub use kube_proxy::ClusterService;
pub use lab::Lab;
pub use load::{
    Curl, CurlReport, CurlRun, CurlTls, H2load, H2loadReport, Response, Wrk, WrkReport, WrkRun,
};
pub use netns::NAME_PREFIX;
pub use nginx::{Nginx, NginxBuilder, SlowResponses};
pub use pod::{DEFAULT_RUN_TIMEOUT, Pod};
pub use process::{Output, Process};
pub use shared::{CGROUP_PREFIX, KEEP_ENV};
pub use sidecar::{InboundProxy, Interception};
pub use signals::{install_signal_cleanup, wait_for_signal, wait_for_signal_timeout};
pub use stale::{CleanupReport, cleanup_all, cleanup_stale};
