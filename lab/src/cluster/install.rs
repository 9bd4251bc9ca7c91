//! meshdrift installed as its users install it: `kubectl apply -k` of
//! `deploy/kubernetes` (through an overlay that only adds agent arguments,
//! as a user's own kustomization would), the DaemonSet controller and the
//! scheduler putting the agent's pod on the node, and the lab running that
//! pod as the node's kubelet and container runtime would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{AgentPod, Cluster};
use crate::Lab;
use crate::error::{LabError, Result};

/// The agent's namespace and pod selector in `deploy/kubernetes`.
pub const AGENT_NAMESPACE: &str = "meshdrift";
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=meshdrift";
/// Host number of the agent's pod on the node (`10.213.<id>.3`).
pub const AGENT_HOST: u8 = 3;

/// The agent's arguments for a lab scenario: `args`, after a one-second
/// `--update-interval` unless `args` set one, so tests wait seconds, not tens.
pub fn lab_agent_args(args: &[String]) -> Vec<String> {
    let mut all = Vec::with_capacity(args.len() + 1);
    if !args.iter().any(|arg| arg.starts_with("--update-interval")) {
        all.push("--update-interval=1s".to_owned());
    }
    all.extend(args.iter().cloned());
    all
}

/// `deploy/kubernetes` of the workspace.
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

impl Cluster {
    /// Applies `deploy/kubernetes` with `extra_args` added to the agent's
    /// container, then runs the agent's pod with `binary` for its image.
    pub fn install_agent(
        &self,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<AgentPod> {
        let overlay = self.agent_overlay(extra_args)?;
        self.kubectl
            .run(&["apply", "-k", &overlay.display().to_string()])?;
        self.run_scheduled_pod(lab, AGENT_NAMESPACE, AGENT_SELECTOR, AGENT_HOST, binary)
    }

    /// A kustomization over a copy of `deploy/kubernetes` that appends
    /// `extra_args` to the DaemonSet's container args.
    fn agent_overlay(&self, extra_args: &[String]) -> Result<PathBuf> {
        let root = self.dir.join("deploy");
        let base = root.join("base");
        std::fs::create_dir_all(&base).map_err(|e| LabError::io("creating", &base, e))?;
        let source = manifests_dir();
        for entry in std::fs::read_dir(&source).map_err(|e| LabError::io("reading", &source, e))? {
            let path = entry
                .map_err(|e| LabError::io("reading", &source, e))?
                .path();
            if path.is_file()
                && let Some(name) = path.file_name()
            {
                std::fs::copy(&path, base.join(name))
                    .map_err(|e| LabError::io("copying", &path, e))?;
            }
        }
        let overlay = root.join("overlay");
        std::fs::create_dir_all(&overlay).map_err(|e| LabError::io("creating", &overlay, e))?;
        let mut text = String::from(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../base\n",
        );
        if !extra_args.is_empty() {
            text.push_str(
                "patches:\n  - target: {kind: DaemonSet, name: meshdrift}\n    patch: |-\n",
            );
            for arg in extra_args {
                let value = serde_json::Value::String(arg.clone()).to_string();
                let _ = writeln!(
                    text,
                    "      - op: add\n        path: /spec/template/spec/containers/0/args/-\n        value: {value}"
                );
            }
        }
        let path = overlay.join("kustomization.yaml");
        std::fs::write(&path, text).map_err(|e| LabError::io("writing", &path, e))?;
        Ok(overlay)
    }
}
