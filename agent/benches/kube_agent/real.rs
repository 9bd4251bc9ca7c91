//! The synthetic mesh loaded into a real control plane (`cargo xtask
//! cluster up`: etcd and kube-apiserver built from their modules), through
//! the API as a cluster's own clients would write it: Namespaces first, the
//! Services and Istio objects, then every Pod bound to the cluster's node
//! and its status (podIP, phase, Ready) reported as a kubelet does.
//!
//! Services are headless (`clusterIP: None`): the lab's Service range is a
//! /26, and 20 000 cluster IPs would not fit in it. Writes that already
//! exist are taken as done, so a loaded cluster is reused.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use meshdrift_testkit::SyntheticMesh;
use serde_json::{Value, json};

/// Requests in flight at once: well under kube-apiserver's default
/// `--max-requests-inflight` (400) on a two-core machine.
const IN_FLIGHT: usize = 48;
/// How long the ServiceAccount controller gets to make every namespace's
/// `default` account (the API server admits no pod before it exists).
const ACCOUNTS_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Cluster {
    client: kube::Client,
    pub node: String,
}

impl Cluster {
    pub async fn connect(kubeconfig: &Path) -> anyhow::Result<Cluster> {
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let nodes = Api::<DynamicObject>::all_with(client.clone(), &resource("v1", "Node"))
            .list(&ListParams::default())
            .await?;
        let node = nodes
            .items
            .first()
            .and_then(|node| node.metadata.name.clone())
            .ok_or_else(|| anyhow::anyhow!("the cluster has no Node"))?;
        Ok(Cluster { client, node })
    }

    /// Writes the whole mesh, unless the cluster holds its pods already;
    /// prints progress to stderr. Returns how long the writing took (`None`:
    /// nothing was written).
    pub async fn load(&self, mesh: &SyntheticMesh) -> anyhow::Result<Option<Duration>> {
        let pods = Api::<DynamicObject>::all_with(self.client.clone(), &resource("v1", "Pod"))
            .list_metadata(&ListParams::default().limit(1))
            .await?;
        let held = pods.items.len() as i64 + pods.metadata.remaining_item_count.unwrap_or(0);
        if held == mesh.pods as i64 {
            eprintln!("kube_agent: the cluster holds the mesh's {held} pods already");
            return Ok(None);
        }
        let started = Instant::now();
        let mut objects: Vec<Value> = (0..mesh.namespaces)
            .flat_map(|n| mesh.namespace_json(n))
            .collect();
        let (namespaces, rest): (Vec<Value>, Vec<Value>) = objects
            .drain(..)
            .partition(|object| object["kind"] == "Namespace");
        let (pods, mut others): (Vec<Value>, Vec<Value>) =
            rest.into_iter().partition(|object| object["kind"] == "Pod");
        for service in others
            .iter_mut()
            .filter(|object| object["kind"] == "Service")
        {
            service["spec"]["clusterIP"] = json!("None");
        }
        self.create_all("namespaces", namespaces).await?;
        self.wait_for_accounts(mesh.namespaces).await?;
        self.create_all("Services and Istio objects", others)
            .await?;
        let total = pods.len();
        let done = std::sync::atomic::AtomicUsize::new(0);
        futures::stream::iter(pods)
            .map(|pod| {
                let done = &done;
                async move {
                    self.run_pod(pod).await?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(10_000) || n == total {
                        eprintln!(
                            "kube_agent: {n} of {total} pods created and running ({:.0?})",
                            started.elapsed()
                        );
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        Ok(Some(started.elapsed()))
    }

    async fn create_all(&self, what: &str, objects: Vec<Value>) -> anyhow::Result<()> {
        let count = objects.len();
        futures::stream::iter(objects)
            .map(|object| self.create(object))
            .buffer_unordered(IN_FLIGHT)
            .try_collect::<()>()
            .await?;
        eprintln!("kube_agent: {count} {what} created");
        Ok(())
    }

    async fn wait_for_accounts(&self, namespaces: usize) -> anyhow::Result<()> {
        let accounts =
            Api::<DynamicObject>::all_with(self.client.clone(), &resource("v1", "ServiceAccount"));
        let deadline = Instant::now() + ACCOUNTS_TIMEOUT;
        loop {
            let list = accounts
                .list(&ListParams::default().fields("metadata.name=default"))
                .await?;
            let ready = list
                .items
                .iter()
                .filter(|account| {
                    account
                        .metadata
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| ns.starts_with("ns-"))
                })
                .count();
            if ready >= namespaces {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "only {ready} of {namespaces} namespaces have their default ServiceAccount after {ACCOUNTS_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn api(&self, object: &Value) -> anyhow::Result<(Api<DynamicObject>, String)> {
        let (api_version, kind) = (
            object["apiVersion"].as_str().unwrap_or_default(),
            object["kind"].as_str().unwrap_or_default(),
        );
        let resource = resource(api_version, kind);
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("a {kind} without a name"))?
            .to_owned();
        let api = match object["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        Ok((api, name))
    }

    async fn create(&self, object: Value) -> anyhow::Result<()> {
        let (api, _) = self.api(&object)?;
        let object: DynamicObject = serde_json::from_value(object)?;
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates the pod on the node and reports it running at the address
    /// the synthetic mesh gave it.
    pub async fn run_pod(&self, mut pod: Value) -> anyhow::Result<()> {
        let status = pod["status"].take();
        if let Some(object) = pod.as_object_mut() {
            object.remove("status");
        }
        pod["spec"]["nodeName"] = json!(self.node);
        if let Some(containers) = pod["spec"]["containers"].as_array_mut() {
            for container in containers {
                container["image"] = json!("registry.invalid/bench:1");
            }
        }
        let ip = status["podIP"].clone();
        let (api, name) = self.api(&pod)?;
        self.create(pod).await?;
        let patch = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Deletes a pod at once: no kubelet confirms a graceful deletion here.
    pub async fn delete_pod(&self, namespace: &str, name: &str) -> anyhow::Result<()> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource("v1", "Pod"));
        api.delete(name, &DeleteParams::default().grace_period(0))
            .await?;
        Ok(())
    }
}

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The id of the first process named `name`.
pub fn process_id(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| entry.file_name().to_str()?.parse().ok())?
        })
}
