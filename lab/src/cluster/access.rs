//! Who reads the agents, as users set it up: the agent behind the cluster's
//! authentication (`--auth kubernetes`: the chart with
//! `auth.mode=kubernetes`, and a service account granted `get` on the
//! agent's paths, as a Prometheus's would be, with a token for it), and a
//! Prometheus that finds every node's agent through the API server.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::install::{AGENT_HOST, AGENT_NAMESPACE, AGENT_SELECTOR};
use super::{AgentPod, Cluster};
use crate::Lab;
use crate::error::{LabError, Result};
use crate::prometheus::{KubernetesDiscovery, Prometheus};

/// The agent's paths a reader of its report and metrics is granted.
pub const AGENT_PATHS: [&str; 3] = ["/metrics", "/report", "/"];

impl Cluster {
    /// The chart installed with `auth.mode=kubernetes` and `extra_args` for
    /// the agent, then the agent's pod run with `binary` for its image.
    pub fn install_agent_with_auth(
        &self,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<AgentPod> {
        self.helm_install(extra_args, &["auth.mode=kubernetes"])?;
        self.run_scheduled_pod(lab, AGENT_NAMESPACE, AGENT_SELECTOR, AGENT_HOST, binary)
    }

    /// [`Cluster::install_agent_with_auth`] with the agent's pod run on
    /// every node, in node order.
    pub fn install_agents_with_auth(
        &self,
        lab: &Lab,
        binary: &Path,
        extra_args: &[String],
    ) -> Result<Vec<AgentPod>> {
        self.helm_install(extra_args, &["auth.mode=kubernetes"])?;
        self.run_agent_pods(lab, binary)
    }

    /// Lets service account `namespace/name` find the agents as Prometheus's
    /// Kubernetes discovery does: a Role in the agent's namespace to get,
    /// list and watch its pods, endpoints and services, bound to the account
    /// (what a Prometheus's RBAC grants it, and nothing beyond that namespace).
    pub fn grant_agent_discovery(&self, namespace: &str, name: &str) -> Result<()> {
        let role = format!("{name}-discovers-meshdrift");
        self.kubectl.with_document(
            &["apply"],
            &json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "Role",
                        "metadata": {"name": role, "namespace": AGENT_NAMESPACE},
                        "rules": [{
                            "apiGroups": [""],
                            "resources": ["pods", "endpoints", "services"],
                            "verbs": ["get", "list", "watch"],
                        }],
                    },
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": {"name": role, "namespace": AGENT_NAMESPACE},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Role",
                            "name": role,
                        },
                        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                    },
                ],
            }),
            &[],
        )?;
        Ok(())
    }

    /// A Prometheus in `dir` that finds every node's agent through the API
    /// server, as a cluster's does: service account `monitoring/prometheus`
    /// may list and watch the agent's pods; `scrape_token` is its token file
    /// when the agents require one for `/metrics` (else a token of its own
    /// is written to `dir`), and `rules` are evaluated.
    pub fn discovering_prometheus(
        &self,
        dir: &Path,
        scrape_token: Option<&Path>,
        rules: &[PathBuf],
    ) -> Result<Prometheus> {
        let token_file = match scrape_token {
            Some(file) => file.to_path_buf(),
            None => {
                let token = self.service_account_token("monitoring", "prometheus", &[])?;
                std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
                let file = dir.join("discovery.token");
                std::fs::write(&file, token).map_err(|e| LabError::io("writing", &file, e))?;
                file
            }
        };
        self.grant_agent_discovery("monitoring", "prometheus")?;
        Prometheus::start_discovering(
            dir,
            &KubernetesDiscovery {
                prometheus: self.upstream.prometheus(),
                api_server: self.server.clone(),
                ca_file: self.pki.ca.cert.clone(),
                token_file,
                namespace: AGENT_NAMESPACE.to_owned(),
                selector: AGENT_SELECTOR.to_owned(),
                scrape_with_token: scrape_token.is_some(),
            },
            rules,
        )
    }

    /// A service account `namespace/name` (the namespace created if
    /// missing) and a one-hour token for it; with `paths`, a ClusterRole
    /// `<name>-reads-meshdrift` granting `get` on them as non-resource URLs,
    /// bound to it.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        paths: &[&str],
    ) -> Result<String> {
        let kubectl = &self.kubectl;
        kubectl.with_document(
            &["apply"],
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            &[],
        )?;
        kubectl.with_document(
            &["apply"],
            &json!({
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }),
            &[],
        )?;
        if !paths.is_empty() {
            let role = format!("{name}-reads-meshdrift");
            kubectl.with_document(
                &["apply"],
                &json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": role},
                    "rules": [{"nonResourceURLs": paths, "verbs": ["get"]}],
                }),
                &[],
            )?;
            kubectl.with_document(
                &["apply"],
                &json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": role},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": role,
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
                }),
                &[],
            )?;
        }
        let token = kubectl.run(&["create", "token", name, "-n", namespace, "--duration=1h"])?;
        Ok(token.trim().to_owned())
    }
}
