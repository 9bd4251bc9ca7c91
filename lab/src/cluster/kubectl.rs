//! kubectl, the upstream client, run against the lab's cluster with a
//! kubeconfig. Every call is bounded in time, and a failure carries the
//! command line and what kubectl printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::cmd;
use crate::error::{LabError, Result};

/// How long one API request may take.
const REQUEST_TIMEOUT: &str = "--request-timeout=30s";

#[derive(Debug, Clone)]
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    /// Where documents handed to kubectl are written.
    scratch: PathBuf,
}

static DOCUMENT: AtomicU64 = AtomicU64::new(0);

impl Kubectl {
    pub fn new(binary: &Path, kubeconfig: &Path, scratch: &Path) -> Self {
        Self {
            binary: binary.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
            scratch: scratch.to_path_buf(),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `kubectl ARGS…`; its standard output.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        cmd::run(
            Command::new(&self.binary)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg(REQUEST_TIMEOUT)
                .args(args),
        )
    }

    /// `kubectl ARGS… -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.run(&all)?;
        serde_json::from_str(&text).map_err(|e| LabError::Parse {
            what: "kubectl's JSON output",
            detail: format!("kubectl {}: {e}", args.join(" ")),
        })
    }

    /// Writes `document` aside and runs `kubectl VERB -f <file> EXTRA…`.
    pub fn with_document(&self, verb: &[&str], document: &Value, extra: &[&str]) -> Result<String> {
        let n = DOCUMENT.fetch_add(1, Ordering::Relaxed);
        let path = self.scratch.join(format!("document-{n}.json"));
        let text = serde_json::to_string(document).map_err(|e| LabError::Parse {
            what: "a document for kubectl",
            detail: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| LabError::io("writing", &path, e))?;
        let file = path.display().to_string();
        let mut args = verb.to_vec();
        args.extend(["-f", &file]);
        args.extend(extra);
        let out = self.run(&args);
        let _ = std::fs::remove_file(&path);
        out
    }

    /// Merges `patch` into the status of `kind/name` (the subresource a
    /// kubelet writes).
    pub fn patch_status(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<()> {
        let patch = patch.to_string();
        self.run(&[
            "patch",
            kind,
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ])
        .map(drop)
    }
}
