//! Kernel settings a benchmark needs for a while (per-program statistics,
//! JIT symbols for perf), put back as they were when it ends.

use anyhow::Context as _;

/// A sysctl set for a while, restored when dropped.
pub struct Sysctl {
    path: &'static str,
    previous: String,
}

impl Sysctl {
    pub fn set(path: &'static str, value: &str) -> anyhow::Result<Self> {
        let previous = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        std::fs::write(path, value).with_context(|| format!("writing {path}"))?;
        Ok(Self { path, previous })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.previous.trim());
    }
}
