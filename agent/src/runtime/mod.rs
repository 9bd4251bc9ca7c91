//! The running agent, apart from how it is configured: the probe loop that
//! `run` and `observe` share, the feed of the declared world (manifest files
//! or the Kubernetes API), the agent's state and its event loop. The CLI only
//! fills an [`AgentConfig`] and calls [`run`], or drives a [`ProbeLoop`].

mod agent;
mod declared;
mod keeper;
mod probe_loop;
mod run;
mod shutdown;

pub use agent::Agent;
pub use declared::{Declared, DeclaredFeed, DeclaredUpdate, from_batches};
pub use keeper::FINDINGS_REFRESH;
pub use probe_loop::ProbeLoop;
pub use run::{AgentConfig, AuthMode, run};
pub use shutdown::Shutdown;
