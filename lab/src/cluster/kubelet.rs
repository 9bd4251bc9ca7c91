//! The lab in a kubelet's place, and only there: it registers the node and
//! renews its lease, creates the Pod objects of the pods it runs (bound to
//! the node) and reports their status as a kubelet would — IPs, phase
//! Running, the Ready condition — and, as the container runtime, runs the
//! pod a DaemonSet puts on the node: its container's args and environment,
//! the service account's token from the TokenRequest API in the usual files,
//! and its hostPath volumes, in a mount namespace of its own.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Cluster, ClusterNode, Kubectl, Manifests};
use crate::agent::AgentOutput;
use crate::error::{LabError, Result};
use crate::process::Process;
use crate::{Lab, Pod};

/// How often the node's lease is renewed (the kubelet's default).
const LEASE_RENEWAL: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: u64 = 40;
/// How long a pod may take to be scheduled and become ready.
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// Where a pod finds its service account's credentials.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `2026-12-07T16:40:00Z`
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// `2026-12-07T16:40:00.123456Z`: a MicroTime, as leases carry.
fn now_micro() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

/// Registers the node (`Ready`, its address, room for pods) and its lease.
pub(crate) fn register_node(cluster: &Cluster, registered: &ClusterNode) -> Result<()> {
    let node = &registered.name;
    let address = registered.processes.ipv4().to_string();
    let kubectl = &cluster.kubectl;
    kubectl.with_document(
        &["create"],
        &json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            }},
        }),
        &[],
    )?;
    let now = now_rfc3339();
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    kubectl.patch_status(
        "node",
        "",
        node,
        &json!({"status": {
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": node},
            ],
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "nodeInfo": {
                "kubeletVersion": cluster.kubernetes_version(),
                "kubeProxyVersion": cluster.kubernetes_version(),
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "meshdrift-lab://0",
                "kernelVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
        }}),
    )?;
    cluster.wait_for_namespace("kube-node-lease")?;
    kubectl.with_document(
        &["create"],
        &json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                     "renewTime": now_micro()},
        }),
        &[],
    )?;
    Ok(())
}

/// Renews every node's lease every 10 s until told to stop, so the node
/// lifecycle controller keeps the nodes Ready.
pub(crate) fn renew_leases(cluster: &Cluster) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let kubectl: Kubectl = cluster.kubectl.clone();
    let nodes: Vec<String> = cluster.nodes.iter().map(|node| node.name.clone()).collect();
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let mut next = Instant::now() + LEASE_RENEWAL;
        while !flag.load(Ordering::Relaxed) {
            if Instant::now() >= next {
                let patch = json!({"spec": {"renewTime": now_micro()}}).to_string();
                let mut args = vec!["patch", "lease"];
                args.extend(nodes.iter().map(String::as_str));
                args.extend(["-n", "kube-node-lease", "--type=merge", "-p", &patch]);
                if let Err(e) = kubectl.run(&args) {
                    tracing::debug!(error = %e, "renewing the nodes' leases failed; retrying");
                }
                next = Instant::now() + LEASE_RENEWAL;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (stop, handle)
}

impl Cluster {
    /// The release the programs were built from (`kubectl version`).
    pub fn kubernetes_version(&self) -> String {
        self.kubectl
            .json(&["version", "--client"])
            .ok()
            .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Waits until namespace `name` exists (the API server makes its own).
    pub fn wait_for_namespace(&self, name: &str) -> Result<()> {
        self.wait_for(&format!("namespace {name}"), POD_TIMEOUT, || {
            let found = self.kubectl.run(&[
                "get",
                "namespace",
                name,
                "--ignore-not-found",
                "-o",
                "name",
            ])?;
            Ok(!found.trim().is_empty())
        })
    }

    /// Applies a scenario's manifests: Namespaces, then the other objects
    /// with kubectl, then each Pod as this node's kubelet would run it — its
    /// object created through the API (bound to the node), its status
    /// reported from the lab pod of the same name.
    pub fn apply(&self, lab: &Lab, manifests: &Manifests) -> Result<()> {
        self.apply_objects(&manifests.namespaces)?;
        self.apply_objects(&manifests.objects)?;
        // A hostNetwork DaemonSet's pod runs on the node's own network: the
        // node's address is its address, nothing more to set up.
        for daemonset in manifests.objects.iter().filter(|o| {
            o["kind"] == "DaemonSet" && o["spec"]["template"]["spec"]["hostNetwork"] == true
        }) {
            self.report_host_network_daemon_pod(daemonset)?;
        }
        for document in &manifests.pods {
            // What a controller owns is its to make (the DaemonSet's pod above).
            let controlled = document["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|owner| owner["controller"] == true);
            if controlled {
                continue;
            }
            let name = document["metadata"]["name"].as_str().unwrap_or_default();
            let pod = if document["spec"]["hostNetwork"] == true {
                None
            } else {
                Some(lab.pod(name).ok_or_else(|| {
                    LabError::invalid(
                        "manifests",
                        format!("Pod {name} has no lab pod of that name to run it"),
                    )
                })?)
            };
            self.run_pod(document, pod.as_ref())?;
        }
        Ok(())
    }

    /// Waits for the pod the DaemonSet controller and the scheduler put on
    /// this node and reports it running on the node's address.
    fn report_host_network_daemon_pod(&self, daemonset: &Value) -> Result<()> {
        let namespace = daemonset["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let selector = daemonset["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let object = self.wait_for_scheduled_pod(namespace, &selector, &self.node_name)?;
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        self.report_pod_status(namespace, name, &[self.node.ipv4().into()], &object, true)
    }

    /// `kubectl apply` of these objects; Istio's written at `v1` go at the
    /// version the cluster serves (`v1beta1` without `v1`, as a user of an
    /// older Istio writes them).
    pub fn apply_objects(&self, objects: &[Value]) -> Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let items: Vec<Value> = objects
            .iter()
            .map(|object| self.istio_crds.written_for(object.clone()))
            .collect();
        self.kubectl
            .with_document(
                &["apply"],
                &json!({"apiVersion": "v1", "kind": "List", "items": items}),
                &[],
            )
            .map(drop)
    }

    /// Creates the Pod object of `document` on this node and reports it
    /// running, ready, with the lab pod's addresses (`None`: a hostNetwork
    /// pod, with the node's).
    pub fn run_pod(&self, document: &Value, pod: Option<&Pod>) -> Result<()> {
        let mut object = document.clone();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
        object["spec"]["nodeName"] = json!(pod.map_or_else(
            || self.node_name.clone(),
            |pod| super::node_name(pod.node())
        ));
        let account = object["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        self.wait_for_service_account(&namespace, &account)?;
        self.kubectl.with_document(&["create"], &object, &[])?;
        let ips: Vec<IpAddr> = match pod {
            Some(pod) => vec![pod.ipv4().into(), pod.ipv6().into()],
            None => vec![self.node.ipv4().into()],
        };
        self.report_pod_status(&namespace, &name, &ips, &object, true)
    }

    /// What the kubelet writes of a running pod: phase, IPs, conditions and
    /// each container's state.
    pub fn report_pod_status(
        &self,
        namespace: &str,
        name: &str,
        ips: &[IpAddr],
        object: &Value,
        ready: bool,
    ) -> Result<()> {
        let now = now_rfc3339();
        let ready_word = if ready { "True" } else { "False" };
        let condition = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastTransitionTime": now});
        let containers: Vec<Value> = object["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|container| {
                json!({
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": ready,
                    "started": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let pod_ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
        let node = self
            .nodes
            .iter()
            .find(|node| object["spec"]["nodeName"] == node.name.as_str())
            .map_or_else(|| self.node.clone(), |node| node.processes.clone());
        let node_ip = node.ipv4().to_string();
        self.kubectl.patch_status(
            "pod",
            namespace,
            name,
            &json!({"status": {
                "phase": "Running",
                "podIP": ips.first().map(ToString::to_string),
                "podIPs": pod_ips,
                "hostIP": node_ip,
                "hostIPs": [{"ip": node_ip}],
                "startTime": now,
                "conditions": [
                    condition("PodScheduled", "True"),
                    condition("Initialized", "True"),
                    condition("ContainersReady", ready_word),
                    condition("Ready", ready_word),
                ],
                "containerStatuses": containers,
            }}),
        )
    }

    /// Removes lab pod `name` and deletes its object, as a kubelet confirms
    /// a deletion once the pod's containers and network are gone: its
    /// address is free for the next pod at once.
    pub fn remove_pod(&self, lab: &Lab, namespace: &str, name: &str) -> Result<()> {
        lab.remove_pod(name)?;
        self.delete_pod(namespace, name)
    }

    /// Deletes a pod's object at once, as its kubelet confirms a deletion
    /// once the containers are gone.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        self.kubectl
            .run(&[
                "delete",
                "pod",
                name,
                "-n",
                namespace,
                "--grace-period=0",
                "--force",
                "--ignore-not-found",
            ])
            .map(drop)
    }

    /// Waits for the pod the scheduler puts on node-1 for the workload
    /// selected by `selector` in `namespace` (a DaemonSet's), runs it as a
    /// lab pod at `host` with `binary` for its image, and waits until its
    /// readiness probe passes. The pod reaches the API server as pods do:
    /// the `kubernetes` Service's cluster IP, its token and the cluster CA
    /// in the service-account directory.
    pub fn run_scheduled_pod(
        &self,
        lab: &Lab,
        namespace: &str,
        selector: &str,
        host: u8,
        binary: &Path,
    ) -> Result<AgentPod> {
        self.run_scheduled_pod_on(lab, namespace, selector, 1, host, binary)
    }

    /// [`Cluster::run_scheduled_pod`] as the kubelet of lab node `node`:
    /// the pod the scheduler bound to that node, run as a lab pod on it,
    /// its `spec.nodeName` and `status.hostIP` fieldRefs that node's, and a
    /// hostPath `/sys/fs/cgroup` that node's cgroup hierarchy
    /// ([`Lab::node_cgroup_path`] once the lab has more than one node).
    pub fn run_scheduled_pod_on(
        &self,
        lab: &Lab,
        namespace: &str,
        selector: &str,
        node: u8,
        host: u8,
        binary: &Path,
    ) -> Result<AgentPod> {
        let node_name = super::node_name(node);
        let object = self.wait_for_scheduled_pod(namespace, selector, &node_name)?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let pod = lab.add_pod_on(&name, host, node)?;
        let ips: Vec<IpAddr> = vec![pod.ipv4().into(), pod.ipv6().into()];
        self.report_pod_status(namespace, &name, &ips, &object, false)?;
        let container = object["spec"]["containers"]
            .get(0)
            .cloned()
            .ok_or_else(|| {
                LabError::invalid("scheduled pod", format!("{name} has no container"))
            })?;
        let secrets = self.service_account_files(lab, namespace, &name, &uid, &object)?;
        // The node's own hierarchy: in a lab of several nodes, its subtree,
        // so the node's agent sees that node's sockets and no other's.
        let cgroup_root = if lab.has_per_node_cgroups() {
            lab.node_cgroup_path(node)
        } else {
            meshdrift_host::cgroup2_root()?
        };
        let script = self.container_script(&object, &container, &secrets, binary, &cgroup_root)?;
        let env = self.container_env(&object, &container, &pod, lab.nth_node_ip(node));
        let port = probe_port(&container).unwrap_or(9477);
        let url = format!("http://{}:{port}", pod.ipv4());
        let mut agent = AgentPod {
            namespace: namespace.to_owned(),
            name,
            node_name,
            pod,
            process: None,
            url,
            script,
            env,
        };
        agent.start_container()?;
        agent.wait_ready(POD_TIMEOUT)?;
        self.report_pod_status(namespace, &agent.name, &ips, &object, true)?;
        Ok(agent)
    }

    /// The pod of the workload `selector` selects in `namespace` once the
    /// scheduler bound it to node `node_name`.
    fn wait_for_scheduled_pod(
        &self,
        namespace: &str,
        selector: &str,
        node_name: &str,
    ) -> Result<Value> {
        let mut found = None;
        self.wait_for(
            &format!("a pod of {selector} in {namespace} scheduled to {node_name}"),
            POD_TIMEOUT,
            || {
                let pods = self
                    .kubectl
                    .json(&["get", "pods", "-n", namespace, "-l", selector])?;
                found = pods["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|pod| {
                        pod["spec"]["nodeName"] == node_name
                            && pod["metadata"]["deletionTimestamp"].is_null()
                    })
                    .cloned();
                Ok(found.is_some())
            },
        )?;
        found.ok_or_else(|| LabError::invalid("scheduled pod", "vanished"))
    }

    /// The token (TokenRequest, bound to the pod), the cluster's CA and the
    /// namespace, in a directory of the lab, as the projected volume has them.
    fn service_account_files(
        &self,
        lab: &Lab,
        namespace: &str,
        pod: &str,
        uid: &str,
        object: &Value,
    ) -> Result<PathBuf> {
        let account = object["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let token = self.kubectl.run(&[
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--bound-object-kind=Pod",
            &format!("--bound-object-name={pod}"),
            &format!("--bound-object-uid={uid}"),
            "--duration=24h",
        ])?;
        let dir = lab.dir().join("secrets").join(pod);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("creating", &dir, e))?;
        let write = |file: &str, contents: &[u8]| {
            let path = dir.join(file);
            std::fs::write(&path, contents).map_err(|e| LabError::io("writing", &path, e))
        };
        write("token", token.trim().as_bytes())?;
        let ca = std::fs::read(&self.pki.ca.cert)
            .map_err(|e| LabError::io("reading", &self.pki.ca.cert, e))?;
        write("ca.crt", &ca)?;
        write("namespace", namespace.as_bytes())?;
        Ok(dir)
    }

    /// The container's environment: its own variables (fieldRefs resolved as
    /// the kubelet does) and the `kubernetes` Service's address.
    fn container_env(
        &self,
        object: &Value,
        container: &Value,
        pod: &Pod,
        host_ip: std::net::Ipv4Addr,
    ) -> Vec<(String, String)> {
        let ip = self.kubernetes_service_ip.to_string();
        let mut env = vec![
            ("KUBERNETES_SERVICE_HOST".to_owned(), ip.clone()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), "443".to_owned()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{ip}:443")),
        ];
        for variable in container["env"].as_array().into_iter().flatten() {
            let Some(name) = variable["name"].as_str() else {
                continue;
            };
            let value = if let Some(value) = variable["value"].as_str() {
                Some(value.to_owned())
            } else {
                match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("spec.nodeName") => object["spec"]["nodeName"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| Some(self.node_name.clone())),
                    Some("metadata.name") => object["metadata"]["name"].as_str().map(str::to_owned),
                    Some("metadata.namespace") => {
                        object["metadata"]["namespace"].as_str().map(str::to_owned)
                    }
                    Some("status.podIP") => Some(pod.ipv4().to_string()),
                    Some("status.hostIP") => Some(host_ip.to_string()),
                    Some("spec.serviceAccountName") => object["spec"]["serviceAccountName"]
                        .as_str()
                        .map(str::to_owned),
                    _ => None,
                }
            };
            if let Some(value) = value {
                env.push((name.to_owned(), value));
            }
        }
        env
    }

    /// The container's start, for `sh` in a mount namespace of its own: the
    /// service-account files where pods find them, each hostPath volume at
    /// its mount path, then the image's entrypoint (`binary`) with the
    /// container's args.
    fn container_script(
        &self,
        object: &Value,
        container: &Value,
        secrets: &Path,
        binary: &Path,
        cgroup_root: &Path,
    ) -> Result<String> {
        let mut script = String::from("set -e\n");
        // /var/run is /run: a tmpfs there holds the credentials without
        // touching this machine's /run.
        let _ = writeln!(
            script,
            "mount -t tmpfs -o mode=0755,size=4m meshdrift-lab /run"
        );
        let _ = writeln!(script, "mkdir -p {}", quote(SERVICE_ACCOUNT_DIR));
        for file in ["token", "ca.crt", "namespace"] {
            let _ = writeln!(
                script,
                "cp {} {}/",
                quote(&secrets.join(file).display().to_string()),
                quote(SERVICE_ACCOUNT_DIR)
            );
        }
        let volumes = object["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let (Some(name), Some(path)) = (mount["name"].as_str(), mount["mountPath"].as_str())
            else {
                continue;
            };
            let Some(host_path) = volumes
                .iter()
                .find(|v| v["name"] == name)
                .and_then(|v| v["hostPath"]["path"].as_str())
            else {
                continue;
            };
            let source = host_source(host_path, cgroup_root);
            // A container's root has its mount points; this machine's root
            // gets the (empty) directory once.
            std::fs::create_dir_all(path)
                .map_err(|e| LabError::io("creating mount point", path, e))?;
            let _ = writeln!(
                script,
                "mount --bind {} {}",
                quote(&source.display().to_string()),
                quote(path)
            );
            if mount["readOnly"] == true {
                let _ = writeln!(script, "mount -o remount,bind,ro {}", quote(path));
            }
        }
        // As the container runtime does: the container's capabilities and
        // no_new_privs apply to its process only, after the mounts above.
        let mut exec = format!(
            "exec {} {}",
            container_privileges(container).join(" "),
            quote(&binary.display().to_string())
        );
        for arg in container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(1)
            .chain(container["args"].as_array().into_iter().flatten())
        {
            exec.push(' ');
            exec.push_str(&quote(arg.as_str().unwrap_or_default()));
        }
        let _ = writeln!(script, "{exec}");
        Ok(script)
    }
}

/// The capabilities a container runtime (containerd, CRI-O) grants when a
/// container's securityContext says nothing: its default set.
const RUNTIME_DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The capability set of a container process from its securityContext:
/// every capability when privileged, else the runtime's default set minus
/// `drop` (`ALL` drops every one) plus `add`.
pub fn container_capabilities(container: &Value) -> Option<Vec<String>> {
    let context = &container["securityContext"];
    if context["privileged"] == true {
        return None;
    }
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|name| name.trim_start_matches("CAP_").to_ascii_uppercase())
            .collect()
    };
    let drop = names(&context["capabilities"]["drop"]);
    let mut set: Vec<String> = if drop.iter().any(|name| name == "ALL") {
        Vec::new()
    } else {
        RUNTIME_DEFAULT_CAPABILITIES
            .iter()
            .map(|name| (*name).to_owned())
            .filter(|name| !drop.contains(name))
            .collect()
    };
    for name in names(&context["capabilities"]["add"]) {
        if !set.contains(&name) {
            set.push(name);
        }
    }
    Some(set)
}

/// `setpriv` and its flags, run as the container's entry: the bounding,
/// inheritable and ambient sets limited to the container's capabilities, so
/// the root process execs with exactly those effective; `--no-new-privs`
/// when privilege escalation is not allowed. Nothing for a privileged one.
fn container_privileges(container: &Value) -> Vec<String> {
    let Some(capabilities) = container_capabilities(container) else {
        return Vec::new();
    };
    let no_new_privs = container["securityContext"]["allowPrivilegeEscalation"] == false;
    bounded_to(&capabilities, no_new_privs)
}

/// `setpriv` and its flags, to put before a command: run as root, it execs
/// the command with exactly `capabilities` (names as in a securityContext,
/// `BPF`, `NET_ADMIN`) effective, and with `no_new_privs` when asked.
pub fn bounded_to(capabilities: &[String], no_new_privs: bool) -> Vec<String> {
    let mut list = String::from("-all");
    for name in capabilities {
        list.push_str(",+");
        list.push_str(&name.to_ascii_lowercase());
    }
    let mut words = vec![
        "setpriv".to_owned(),
        format!("--bounding-set={list}"),
        "--inh-caps=-all".to_owned(),
        "--ambient-caps=-all".to_owned(),
    ];
    if no_new_privs {
        words.push("--no-new-privs".to_owned());
    }
    words.push("--".to_owned());
    words
}

/// Where a hostPath volume's path is on this machine: `/sys/fs/cgroup` is
/// the node's cgroup v2 hierarchy, `cgroup_root` (this machine's root, found
/// from the mount table as a hybrid layout mounts it elsewhere, or the
/// node's subtree in a lab of several nodes).
fn host_source(host_path: &str, cgroup_root: &Path) -> PathBuf {
    if host_path.trim_end_matches('/') == "/sys/fs/cgroup" {
        return cgroup_root.to_path_buf();
    }
    PathBuf::from(host_path)
}

/// Single-quoted for `sh`.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The port of the container's readiness probe (by number or by name).
fn probe_port(container: &Value) -> Option<u16> {
    let port = &container["readinessProbe"]["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

/// A scheduled pod the lab runs (the agent's, from its DaemonSet).
pub struct AgentPod {
    pub namespace: String,
    pub name: String,
    /// The Node it was scheduled to (`node-<k>`).
    pub node_name: String,
    pub pod: Pod,
    process: Option<Process>,
    /// `http://<pod IP>:<port>`: its HTTP server, reached over the uplink.
    pub url: String,
    /// How its container starts (see `Cluster::container_script`), and its
    /// environment.
    script: String,
    env: Vec<(String, String)>,
}

impl AgentPod {
    /// Starts the container (again, as the kubelet restarts one), in a mount
    /// namespace of its own; returns without waiting for readiness.
    pub fn start_container(&mut self) -> Result<()> {
        self.stop_container();
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(&self.script);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        self.process = Some(self.pod.spawn(command)?);
        Ok(())
    }

    /// Stops the container (SIGTERM, then SIGKILL after 10 s); the pod stays.
    pub fn stop_container(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10));
        }
    }

    /// Whether the container's process still runs.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// `GET /readyz`: its status and body.
    pub fn readyz(&self) -> Result<(u16, String)> {
        let url = format!("{}/readyz", self.url);
        let mut response = ureq::get(&url)
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| LabError::Parse {
                what: "the agent's /readyz",
                detail: format!("{url}: {e}"),
            })?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Ok((status, body))
    }

    /// `GET /metrics` (the Prometheus text exposition), with `token` as a
    /// bearer token when the agent checks one.
    pub fn metrics(&self, token: Option<&str>) -> Result<String> {
        let url = format!("{}/metrics", self.url);
        let mut request = ureq::get(&url)
            .config()
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .map_err(|e| LabError::Parse {
                what: "the agent's /metrics",
                detail: format!("{url}: {e}"),
            })
    }

    /// `GET /report`, with `token` as a bearer token when the agent checks one.
    pub fn report(&self, token: Option<&str>) -> Result<Value> {
        crate::prometheus::get_json_with_token(
            &format!("{}/report", self.url),
            "the agent's report",
            token,
        )
    }

    /// Polls `/readyz` as the kubelet's readiness probe does, until it
    /// answers 200; fails at once if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = format!("{}/readyz", self.url);
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.try_status()
            {
                return Err(LabError::NotReady {
                    what: format!("pod {}/{}", self.namespace, self.name),
                    pod: self.name.clone(),
                    timeout,
                    detail: format!("it exited ({status}): {}", process.stderr().trim()),
                });
            }
            let answer = ureq::get(&url)
                .config()
                .timeout_global(Some(Duration::from_secs(2)))
                .http_status_as_error(false)
                .build()
                .call();
            if let Ok(response) = answer
                && response.status() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    what: format!("pod {}/{}", self.namespace, self.name),
                    pod: self.name.clone(),
                    timeout,
                    detail: format!(
                        "{url} never answered 200; its output: {}",
                        self.process
                            .as_ref()
                            .map(|p| p.stderr())
                            .unwrap_or_default()
                            .trim()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Everything the container printed on standard error so far.
    pub fn stderr(&self) -> String {
        self.process
            .as_ref()
            .map(Process::stderr)
            .unwrap_or_default()
    }

    /// Stops the container (SIGTERM, SIGKILL after `timeout`) and returns
    /// what it printed.
    pub fn stop(mut self, timeout: Duration) -> Result<AgentOutput> {
        let mut process = self
            .process
            .take()
            .ok_or_else(|| LabError::invalid("agent pod", "already stopped"))?;
        process.terminate(timeout);
        let status = process
            .try_status()
            .ok_or_else(|| LabError::invalid("agent pod", "did not stop"))?;
        Ok(AgentOutput {
            status,
            stdout: process.stdout().lines().map(str::to_owned).collect(),
            stderr: process.stderr().lines().map(str::to_owned).collect(),
        })
    }
}

impl Drop for AgentPod {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10));
        }
    }
}
