//! cgroup v2: finding the hierarchy, creating the lab's and pods' groups,
//! emptying them and removing them. A group can only be removed once no
//! process is left in it, so removal always kills first and then waits.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// Where the cgroup v2 hierarchy is mounted, as the agent finds it.
pub fn cgroup2_root() -> Result<PathBuf> {
    Ok(meshdrift_host::cgroup2_root()?)
}

/// The kernel's cgroup id is the inode number of the group's directory; this
/// is what `bpf_get_current_cgroup_id()` and `bpf_skb_cgroup_id()` return.
pub fn cgroup_id(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.ino())
        .map_err(|e| LabError::io("reading cgroup", path, e))
}

/// Creates a cgroup directory; `Ok(false)` when it already exists.
pub(crate) fn create(path: &Path) -> Result<bool> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(LabError::io("creating cgroup", path, e)),
    }
}

fn populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l.trim() == "populated 1"))
        .unwrap_or(false)
}

/// Every pid in the group and all of its descendants.
fn pids_recursive(path: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(path.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for child in child_groups(path) {
        pids_recursive(&child, out);
    }
}

pub(crate) fn child_groups(path: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILLs every process in the group (and below) and waits until the
/// kernel reports the group empty. Uses `cgroup.kill` (Linux ≥ 5.14), which
/// also catches processes forked while killing; falls back to signalling
/// each pid in a loop.
pub(crate) fn kill_all(path: &Path, timeout: Duration) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    let kill_file = path.join("cgroup.kill");
    let has_kill_file = kill_file.exists();
    loop {
        if !populated(path) {
            return Ok(());
        }
        if has_kill_file {
            if let Err(e) = std::fs::write(&kill_file, "1") {
                tracing::debug!(path = %kill_file.display(), error = %e, "cgroup.kill");
            }
        } else {
            let mut pids = Vec::new();
            pids_recursive(path, &mut pids);
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if Instant::now() >= deadline {
            let mut pids = Vec::new();
            pids_recursive(path, &mut pids);
            return Err(LabError::NotReady {
                what: format!("emptying cgroup {}", path.display()),
                pod: "-".into(),
                timeout,
                detail: format!("processes still inside: {pids:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills everything inside, then removes the group and its descendants
/// (deepest first, as rmdir requires).
pub(crate) fn remove_tree(path: &Path, timeout: Duration) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    kill_all(path, timeout)?;
    rmdir_recursive(path, Instant::now() + timeout)
}

fn rmdir_recursive(path: &Path, deadline: Instant) -> Result<()> {
    for child in child_groups(path) {
        rmdir_recursive(&child, deadline)?;
    }
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // EBUSY lingers for a moment after the last task exits.
            Err(e)
                if Instant::now() < deadline && e.raw_os_error() == Some(Errno::EBUSY as i32) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(LabError::io("removing cgroup", path, e)),
        }
    }
}
