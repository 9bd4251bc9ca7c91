//! cgroup v2: finding the hierarchy, creating the lab's and pods' groups,
//! emptying them and removing them. A group can only be removed once no
//! process is left in it, so removal always kills first and then waits.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on most
/// machines, `/sys/fs/cgroup/unified` on hybrid ones), read from
/// `/proc/self/mountinfo` rather than guessed.
pub fn cgroup2_root() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| LabError::io("reading", "/proc/self/mountinfo", e))?;
    parse_mountinfo(&text).ok_or(LabError::NoCgroup2)
}

fn parse_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        // Fields before " - " are variable in number (optional tags); the
        // filesystem type is the first field after the separator.
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

fn child_groups(path: &Path) -> Vec<PathBuf> {
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
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
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
            Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(LabError::io("removing cgroup", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_among_v1_mounts() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape_octal(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_octal(r"/plain"), "/plain");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn no_cgroup2_is_none() {
        assert_eq!(parse_mountinfo("1 2 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }
}
