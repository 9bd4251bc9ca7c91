//! The agent behind the cluster's authentication (`--auth kubernetes`), as
//! users install it: the chart with `auth.mode=kubernetes`, and a service
//! account granted `get` on the agent's paths (as a Prometheus's would be),
//! with a token for it.

use std::path::Path;

use serde_json::json;

use super::install::{AGENT_HOST, AGENT_NAMESPACE, AGENT_SELECTOR};
use super::{AgentPod, Cluster};
use crate::Lab;
use crate::error::Result;

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
