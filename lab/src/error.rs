//! The one error type of the lab: every variant says what was being done and,
//! for external commands, which command failed and what it printed.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "the lab must run as root (uid is {uid}): it creates network namespaces, veth pairs, a bridge and cgroups"
    )]
    NotRoot { uid: u32 },

    #[error(transparent)]
    Cgroup(#[from] meshdrift_host::CgroupError),

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error(
        "could not start `{command}`: {source} (is it installed? `cargo xtask setup` installs the lab's packages)"
    )]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no free lab id: ids 1..=250 are all taken (run `cargo xtask lab down` to remove leftovers)"
    )]
    NoFreeId,

    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },

    #[error("{what} in pod {pod} did not become ready within {timeout:?}: {detail}")]
    NotReady {
        what: String,
        pod: String,
        timeout: Duration,
        detail: String,
    },

    #[error("{program} rejected its configuration {path}: {stderr}")]
    Config {
        program: &'static str,
        path: PathBuf,
        stderr: String,
    },

    #[error("cannot parse {what}: {detail}")]
    Parse { what: &'static str, detail: String },

    #[error("lab {id} has already been torn down")]
    TornDown { id: u8 },
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

impl LabError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LabError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        LabError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn parse(what: &'static str, detail: impl Into<String>) -> Self {
        LabError::Parse {
            what,
            detail: detail.into(),
        }
    }
}
