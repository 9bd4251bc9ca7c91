//! meshdrift installed as its users install it: `kubectl apply -k` of
//! `deploy/kubernetes` (through an overlay that only adds agent arguments,
//! as a user's own kustomization would) or `helm install` of the chart
//! `deploy/helm/meshdrift`, the DaemonSet controller and the scheduler
//! putting the agent's pod on the node, and the lab running that pod as the
//! node's kubelet and container runtime would.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{AgentPod, Cluster};
use crate::Lab;
use crate::error::{LabError, Result};

/// How the agent is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// `kubectl apply -k` of an overlay over `deploy/kubernetes`.
    Kustomize,
    /// `helm install meshdrift deploy/helm/meshdrift --namespace meshdrift
    /// --create-namespace`, with the chart's default values (the agent's
    /// extra arguments in `extraArgs`).
    Helm,
}

/// The Helm release the lab installs.
pub const HELM_RELEASE: &str = "meshdrift";

/// The agent's namespace and pod selector in `deploy/kubernetes`.
pub const AGENT_NAMESPACE: &str = "meshdrift";
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=meshdrift";
/// Host number of the agent's pod on the node (`10.213.<id>.3`).
pub const AGENT_HOST: u8 = 3;

/// Host number of the agent's pod on lab node `node`: [`AGENT_HOST`] on
/// node 1, the next ones on the others (`.4` on node 2, …), below the
/// numbers scenarios give their own pods.
pub fn agent_host(node: u8) -> u8 {
    AGENT_HOST.saturating_add(node.saturating_sub(1))
}

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

/// The Helm chart of the workspace, `deploy/helm/meshdrift`.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/helm/meshdrift")
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
        self.install_agent_with(Installer::Kustomize, lab, binary, extra_args)
    }

    /// Installs the agent with `installer` (`extra_args` added to its
    /// container's), then runs the agent's pod with `binary` for its image.
    /// Only node-1's: see [`Cluster::install_agents_with`] for every node's.
    pub fn install_agent_with(
        &self,
        installer: Installer,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<AgentPod> {
        self.apply_agent(installer, extra_args)?;
        self.run_scheduled_pod(lab, AGENT_NAMESPACE, AGENT_SELECTOR, AGENT_HOST, binary)
    }

    /// Applies `deploy/kubernetes` with `extra_args` added to the agent's
    /// container, then runs the pod the DaemonSet puts on every node, each
    /// attached to its own node's cgroup hierarchy; in node order.
    pub fn install_agents(
        &self,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<Vec<AgentPod>> {
        self.install_agents_with(Installer::Kustomize, lab, binary, extra_args)
    }

    /// [`Cluster::install_agent_with`], then the agent's pod on every node,
    /// in node order.
    pub fn install_agents_with(
        &self,
        installer: Installer,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<Vec<AgentPod>> {
        self.apply_agent(installer, extra_args)?;
        self.run_agent_pods(lab, binary)
    }

    /// Runs the agent's pod the DaemonSet put on each node, as that node's
    /// kubelet, in node order.
    pub fn run_agent_pods(&self, lab: &Lab, binary: &Path) -> Result<Vec<AgentPod>> {
        self.nodes
            .iter()
            .map(|node| {
                self.run_scheduled_pod_on(
                    lab,
                    AGENT_NAMESPACE,
                    AGENT_SELECTOR,
                    node.number,
                    agent_host(node.number),
                    binary,
                )
            })
            .collect()
    }

    /// The agent's objects, as `installer` writes them.
    fn apply_agent(&self, installer: Installer, extra_args: &[String]) -> Result<()> {
        match installer {
            Installer::Kustomize => {
                let overlay = self.agent_overlay(extra_args)?;
                self.kubectl
                    .run(&["apply", "-k", &overlay.display().to_string()])?;
            }
            Installer::Helm => {
                self.helm_install(extra_args, &[])?;
            }
        }
        Ok(())
    }

    /// `helm ARGS…` against the cluster, as its admin; Helm's cache,
    /// configuration and data stay in the cluster's directory.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let home = self.dir.join("helm");
        std::fs::create_dir_all(&home).map_err(|e| LabError::io("creating", &home, e))?;
        crate::cmd::run(
            Command::new(self.upstream.bin("helm"))
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data"))
                .arg("--kubeconfig")
                .arg(self.kubectl.kubeconfig())
                .args(args),
        )
    }

    /// `helm upgrade --install` of the chart into the agent's namespace,
    /// which Helm creates first (the chart's own Namespace object then takes
    /// it over, labels included), with `set` (`key=value`) over the chart's
    /// values. Not `--wait`: the pod runs only once the lab, as the node's
    /// kubelet, starts it.
    pub(super) fn helm_install(&self, extra_args: &[String], set: &[&str]) -> Result<String> {
        let chart = chart_dir().display().to_string();
        let mut args = vec![
            "upgrade",
            "--install",
            HELM_RELEASE,
            &chart,
            "--namespace",
            AGENT_NAMESPACE,
            "--create-namespace",
            "--timeout",
            "2m",
        ];
        // JSON is YAML: a values file with the arguments alone, and none
        // without them (the chart's defaults, untouched).
        let values = self.dir.join("helm-values.json");
        let values_arg = values.display().to_string();
        if !extra_args.is_empty() {
            let text = serde_json::json!({ "extraArgs": extra_args }).to_string();
            std::fs::write(&values, text).map_err(|e| LabError::io("writing", &values, e))?;
            args.extend(["--values", &values_arg]);
        }
        for value in set {
            args.extend(["--set", value]);
        }
        self.helm(&args)
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
