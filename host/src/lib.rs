//! Facts about the machine that both meshdrift and its lab read. Today one:
//! where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on most nodes,
//! `/sys/fs/cgroup/unified` on hybrid ones), read from `/proc/self/mountinfo`
//! rather than guessed.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted (no `cgroup2` entry in {path}); mount one \
         (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup"
    )]
    NotMounted { path: PathBuf },
}

/// The mount point of the first cgroup2 file system in `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })?;
    cgroup2_mount_point(&text).ok_or_else(|| CgroupError::NotMounted {
        path: path.to_owned(),
    })
}

/// Parses mountinfo text: `id parent maj:min root mount-point options [optional...] - fstype source super-options`.
/// The fields before ` - ` vary in number (optional tags); the file system
/// type is the first field after it.
pub fn cgroup2_mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .map(|digits| {
                digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'))
            })
            .and_then(|value| u8::try_from(value).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 25 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_cgroup2_in_a_hybrid_layout() {
        assert_eq!(
            cgroup2_mount_point(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_cgroup2_with_optional_fields() {
        let text =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount_point(text),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }

    #[test]
    fn reports_absence_of_cgroup2() {
        let text = "26 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount_point(text), None);
        assert_eq!(
            cgroup2_mount_point("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn unescapes_spaces_in_mount_points() {
        let text = "30 23 0:26 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_point(text),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
    }

    #[test]
    fn an_escape_beyond_a_byte_is_kept_literally() {
        let text = "30 23 0:26 / /mnt/a\\777b rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_point(text),
            Some(PathBuf::from("/mnt/a\\777b"))
        );
    }

    #[test]
    fn ignores_garbage_lines() {
        assert_eq!(cgroup2_mount_point("garbage\n - \n\\\\\n"), None);
    }
}
