//! A stale sidecar on another node: a second pod of the frontend scenario's
//! `client` workload, on its own node, whose HAProxy still routes by weights
//! the mesh no longer declares (a proxy that missed a configuration push),
//! while the first pod's sidecar follows the declared split. Both pods are
//! one workload as a Deployment's are: a ReplicaSet (`client-<hash>`)
//! adopts them, so the agent names both `client` and tells them apart only
//! by pod.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use crate::error::{LabError, Result};
use crate::scenario::{Frontend, HOST, PLAIN_PORT, PROXY_PORT, SERVICE_PORT};
use crate::sidecar::PROXY_UID;
use crate::{Curl, Haproxy, Interception, Pod, ProxyMode, Upstream, UpstreamTls};

/// The ReplicaSet that adopts both client pods; its Deployment is `client`.
pub const CLIENT_REPLICA_SET: &str = "client-7c5d9f";
/// The template hash label a Deployment's ReplicaSet selects its pods by.
const TEMPLATE_HASH: &str = "7c5d9f";
/// How long the ReplicaSet controller may take to adopt both pods.
const ADOPTION_TIMEOUT: Duration = Duration::from_secs(60);

/// The second, stale, pod of the `client` workload.
pub struct StaleClient {
    pub pod: Pod,
    proxy: Haproxy,
}

impl StaleClient {
    /// Runs pod `name` at `host` on lab node `node` with a sidecar whose
    /// HAProxy sends `weights` (v1, v2) to the frontend pods, creates its
    /// object through the API, and has a ReplicaSet adopt it together with
    /// the scenario's `client` pod. Needs the scenario's cluster.
    pub fn start(
        frontend: &Frontend,
        name: &str,
        host: u8,
        node: u8,
        weights: (u32, u32),
    ) -> Result<StaleClient> {
        let cluster = frontend.cluster.as_ref().ok_or_else(|| {
            LabError::invalid("stale client", "the scenario has no cluster to run it in")
        })?;
        let pod = frontend.lab.add_pod_on(name, host, node)?;
        Interception::default().install(&pod)?;
        let upstream = |subset: &str, server: &Pod, weight: u32| {
            Upstream::new(
                subset,
                SocketAddr::new(server.ipv4().into(), PLAIN_PORT),
                weight,
            )
            .tls(UpstreamTls::istio_http(
                SERVICE_PORT,
                subset,
                HOST,
                "client",
            ))
        };
        let mut proxy = Haproxy::builder(PROXY_PORT, ProxyMode::Http)
            .uid(PROXY_UID)
            .server(upstream("v1", &frontend.v1, weights.0))
            .server(upstream("v2", &frontend.v2, weights.1));
        // Its connection reuse is the workload's: stale are only its weights.
        if let Some(limit) = frontend.proxy_requests_per_connection() {
            proxy = proxy.requests_per_connection(limit);
        }
        let proxy = proxy.start(&pod)?;
        cluster.run_pod(&client_pod(name), Some(&pod))?;
        adopt_clients(cluster, &["client", name])?;
        Ok(StaleClient { pod, proxy })
    }

    /// Its sidecar: its stats are what it really sent each subset.
    pub fn proxy(&self) -> &Haproxy {
        &self.proxy
    }

    /// `count` requests from its application to the Service's cluster IP;
    /// its sidecar takes them.
    pub fn send(&self, frontend: &Frontend, count: usize) -> Result<()> {
        let report = Curl::new(&frontend.service_url())
            .count(count)
            .run(&self.pod)?;
        let ok = report.count_status(200);
        if ok == count {
            Ok(())
        } else {
            Err(LabError::invalid(
                "traffic",
                format!(
                    "{ok} of {count} requests through {}'s sidecar succeeded: {:?}",
                    self.pod.name(),
                    report.status_counts()
                ),
            ))
        }
    }
}

/// A `client` pod as the example writes it: the application and its
/// injected sidecar, with the template hash its ReplicaSet selects.
fn client_pod(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {
                "app": "client",
                "version": "v1",
                "security.istio.io/tlsMode": "istio",
                "pod-template-hash": TEMPLATE_HASH,
            },
            "annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"},
        },
        "spec": {"containers": [
            {"name": "client", "image": "curlimages/curl:8.5.0"},
            {"name": "istio-proxy", "image": "istio/proxyv2:1.31.0"},
        ]},
    })
}

/// Labels `pods` with the template hash, then creates a ReplicaSet of that
/// many replicas selecting them: its controller adopts the running pods
/// (their owner becomes it, as a Deployment's pods' is) instead of making
/// new ones. Waits until every pod names it as its controller.
fn adopt_clients(cluster: &crate::cluster::Cluster, pods: &[&str]) -> Result<()> {
    let hash = format!("pod-template-hash={TEMPLATE_HASH}");
    for pod in pods {
        cluster
            .kubectl
            .run(&["label", "pod", pod, "-n", "default", "--overwrite", &hash])?;
    }
    let labels = json!({"app": "client", "pod-template-hash": TEMPLATE_HASH});
    cluster.apply_objects(&[json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": CLIENT_REPLICA_SET, "namespace": "default", "labels": labels},
        "spec": {
            "replicas": pods.len(),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {
                    "app": "client", "version": "v1",
                    "security.istio.io/tlsMode": "istio",
                    "pod-template-hash": TEMPLATE_HASH,
                }},
                "spec": {"containers": [
                    {"name": "client", "image": "curlimages/curl:8.5.0"},
                    {"name": "istio-proxy", "image": "istio/proxyv2:1.31.0"},
                ]},
            },
        },
    })])?;
    cluster.wait_for(
        &format!("ReplicaSet {CLIENT_REPLICA_SET} adopting {pods:?}"),
        ADOPTION_TIMEOUT,
        || {
            let listed = cluster
                .kubectl
                .json(&["get", "pods", "-n", "default", "-l", &hash])?;
            let adopted = listed["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|pod| {
                    pod["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|owner| {
                            owner["controller"] == true && owner["name"] == CLIENT_REPLICA_SET
                        })
                })
                .count();
            Ok(adopted == pods.len())
        },
    )
}
