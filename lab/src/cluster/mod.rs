//! A real Kubernetes control plane for a lab: etcd, kube-apiserver (TLS,
//! `Node,RBAC` authorisation, service-account token signing, the default
//! admission plugins), kube-controller-manager (every default controller:
//! EndpointSlice, DaemonSet, namespace, service account, …) and
//! kube-scheduler, built from their upstream modules (`tools/`, `cargo xtask
//! setup`), with Istio's CRDs installed and the real kube-proxy (iptables
//! mode) programming the node's namespace from Services and EndpointSlices.
//!
//! The control plane runs in a lab pod of its own, `control-plane`
//! (`10.213.<id>.2`, like a control-plane node's address); this machine
//! reaches it, and the pods, through the lab's uplink. The lab stands in
//! for the kubelet and the container runtime only ([`kubelet`]): it
//! registers the node and renews its lease, turns Pod objects into lab pods
//! (and lab pods into Pod objects) and reports their status as a kubelet
//! would. Everything runs in the lab's cgroup, so the lab's teardown stops it.

mod access;
mod crds;
mod install;
mod kubectl;
pub mod kubelet;
mod manifests;
mod pki;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use access::AGENT_PATHS;
pub use crds::IstioCrdVersions;
pub use install::{
    AGENT_HOST, AGENT_NAMESPACE, AGENT_SELECTOR, HELM_RELEASE, Installer, agent_host, chart_dir,
    lab_agent_args, manifests_dir,
};
pub use kubectl::Kubectl;
pub use kubelet::AgentPod;
pub use manifests::{Manifests, documents};
pub use pki::Pki;

use crate::error::{LabError, Result};
use crate::process::Process;
use crate::{Lab, Pod};

/// Host number of the control plane's pod (`10.213.<id>.2`).
pub const CONTROL_PLANE_HOST: u8 = 2;
pub const APISERVER_PORT: u16 = 6443;
const ETCD_CLIENT_PORT: u16 = 2379;
/// The name the lab's node registers as; node k of a lab with more is `node-<k>`.
pub const NODE_NAME: &str = "node-1";

/// The Node name of lab node `node`.
pub fn node_name(node: u8) -> String {
    format!("node-{node}")
}
/// How long a component may take to start on a busy two-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The upstream programs a cluster runs (and the admin's kubectl and Helm),
/// as `cargo xtask setup` builds them into `bin/`.
pub const PROGRAMS: [&str; 7] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
    "helm",
];

/// Where the upstream programs are: `bin/` and `istio-crds.yaml`.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub dir: PathBuf,
}

impl Upstream {
    /// `$MESHDRIFT_UPSTREAM`, else `target/upstream` in the workspace (what
    /// `cargo xtask setup` builds).
    pub fn locate() -> Result<Upstream> {
        let dir = std::env::var_os("MESHDRIFT_UPSTREAM").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/upstream"),
            PathBuf::from,
        );
        let dir = dir.canonicalize().unwrap_or(dir);
        let upstream = Upstream { dir };
        for program in PROGRAMS {
            let path = upstream.bin(program);
            if !path.is_file() {
                return Err(LabError::invalid(
                    "upstream Kubernetes programs",
                    format!(
                        "{} is missing: `cargo xtask setup` builds them from tools/ (or set MESHDRIFT_UPSTREAM)",
                        path.display()
                    ),
                ));
            }
        }
        Ok(upstream)
    }

    pub fn bin(&self, program: &str) -> PathBuf {
        self.dir.join("bin").join(program)
    }

    /// Prometheus built with Kubernetes service discovery (Debian's
    /// package leaves it out); only tests that discover agents through the
    /// API server need it, so [`Upstream::locate`] does not require it.
    pub fn prometheus(&self) -> PathBuf {
        self.bin("prometheus")
    }

    pub fn istio_crds(&self) -> PathBuf {
        self.dir.join("istio-crds.yaml")
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub upstream: Upstream,
    /// Which API versions Istio's CRDs serve.
    pub istio_crds: IstioCrdVersions,
    /// Nodes registered, each with its own namespace and kube-proxy
    /// (1 to [`crate::netns::MAX_NODES`]); nodes after the first are added
    /// to the lab ([`Lab::add_node`]) before anything else, so each node's
    /// pods and processes get a cgroup subtree of their own (an agent per
    /// node sees only its node's sockets). With more than one, the lab must
    /// have no pod yet, or have added those nodes itself before its pods.
    pub nodes: u8,
}

impl ClusterConfig {
    pub fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            istio_crds: IstioCrdVersions::Current,
            nodes: 1,
        }
    }

    pub fn nodes(mut self, nodes: u8) -> Self {
        self.nodes = nodes;
        self
    }
}

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub number: u8,
    pub name: String,
    /// Processes on the node's network, outside any pod.
    pub processes: Pod,
}

/// A running cluster; dropping it stops its processes (the lab's teardown
/// would too).
pub struct Cluster {
    pub dir: PathBuf,
    pub kubectl: Kubectl,
    pub pki: Pki,
    /// `https://10.213.<id>.2:6443`
    pub server: String,
    pub apiserver: SocketAddrV4,
    /// The `kubernetes` Service's cluster IP, where pods reach the API.
    pub kubernetes_service_ip: Ipv4Addr,
    pub node_name: String,
    /// Every node: its number in the lab, its Node name and its process
    /// group (a kubelet's place); the first is [`Cluster::node`].
    pub nodes: Vec<ClusterNode>,
    pub upstream: Upstream,
    /// The API versions Istio's kinds are served at.
    pub istio_crds: IstioCrdVersions,
    control_plane: Pod,
    node: Pod,
    etcd: Option<Process>,
    /// Behind a lock: tests restart it while traffic flows through the lab.
    apiserver_process: Mutex<Option<Process>>,
    controllers: Vec<(&'static str, Process)>,
    heartbeat: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    lab_id: u8,
}

impl Cluster {
    /// Starts the control plane for `lab`, installs Istio's CRDs, registers
    /// the lab's node and runs kube-proxy on it. Prints nothing; logs go to
    /// the lab's log directory.
    pub fn start(lab: &Lab, config: ClusterConfig) -> Result<Cluster> {
        let started = Instant::now();
        let id = lab.id();
        if !(1..=crate::netns::MAX_NODES).contains(&config.nodes) {
            return Err(LabError::invalid(
                "nodes",
                format!(
                    "{} (a lab cluster has 1 to {})",
                    config.nodes,
                    crate::netns::MAX_NODES
                ),
            ));
        }
        // Nodes first: a lab with more than one gives each node a cgroup
        // subtree, which it can only do before its first pod (the control
        // plane's). Nodes the caller added already are kept.
        for number in 2..=config.nodes {
            if !lab.has_node(number)? {
                lab.add_node(number)?;
            }
        }
        lab.connect_uplink()?;
        let dir = lab.dir().join("cluster");
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("creating", &dir, e))?;
        let control_plane = lab.add_pod_at("control-plane", CONTROL_PLANE_HOST)?;
        let address = control_plane.ipv4();
        let apiserver = SocketAddrV4::new(address, APISERVER_PORT);
        let kubernetes_service_ip = Ipv4Addr::new(10, 213, id, 193);
        let pki = Pki::create(
            &dir.join("pki"),
            &[IpAddr::V4(address), IpAddr::V4(kubernetes_service_ip)],
        )?;
        let server = format!("https://{apiserver}");
        let admin = pki.kubeconfig("admin", &server, &pki.admin)?;
        let kubectl = Kubectl::new(&config.upstream.bin("kubectl"), &admin, &dir);
        let node = lab.node_processes("kubelet")?;
        let mut nodes = vec![ClusterNode {
            number: 1,
            name: node_name(1),
            processes: node.clone(),
        }];
        for number in 2..=config.nodes {
            nodes.push(ClusterNode {
                number,
                name: node_name(number),
                processes: lab.nth_node_processes(number, "kubelet")?,
            });
        }
        let mut cluster = Cluster {
            dir,
            kubectl,
            pki,
            server,
            apiserver,
            kubernetes_service_ip,
            node_name: NODE_NAME.to_owned(),
            nodes,
            upstream: config.upstream.clone(),
            istio_crds: config.istio_crds,
            control_plane,
            node,
            etcd: None,
            apiserver_process: Mutex::new(None),
            controllers: Vec::new(),
            heartbeat: None,
            lab_id: id,
        };
        cluster.start_etcd()?;
        cluster.start_apiserver()?;
        cluster.start_controllers()?;
        crds::install(&cluster.kubectl, &cluster.upstream, config.istio_crds)?;
        for node in &cluster.nodes {
            kubelet::register_node(&cluster, node)?;
        }
        cluster.heartbeat = Some(kubelet::renew_leases(&cluster));
        for number in 1..=config.nodes {
            cluster.start_kube_proxy(lab, number)?;
        }
        cluster.wait_for_service_account("default", "default")?;
        tracing::info!(
            lab = id,
            server = %cluster.server,
            seconds = started.elapsed().as_secs_f64(),
            "cluster up"
        );
        Ok(cluster)
    }

    /// The control plane's pod (etcd and the control-plane programs run in it).
    pub fn control_plane(&self) -> &Pod {
        &self.control_plane
    }

    /// Where the kubeconfigs, certificates and documents are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn start_etcd(&mut self) -> Result<()> {
        let data = self.dir.join("etcd");
        let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
        let peer = "http://127.0.0.1:2380";
        let mut command = Command::new(self.upstream.bin("etcd"));
        command
            .arg("--name=control-plane")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=control-plane={peer}"))
            .arg("--log-level=warn")
            // A lab's cluster lives minutes; its disk need not survive a
            // power cut, and fsync on a shared CI disk costs seconds.
            .arg("--unsafe-no-fsync=true");
        let mut process = self.control_plane.spawn(command)?;
        crate::ready::wait_listening(
            "etcd",
            &mut process,
            &[ETCD_CLIENT_PORT],
            START_TIMEOUT,
            None,
        )?;
        self.etcd = Some(process);
        Ok(())
    }

    fn apiserver_command(&self) -> Command {
        let pki = &self.pki;
        let mut command = Command::new(self.upstream.bin("kube-apiserver"));
        command
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"
            ))
            .arg(format!("--bind-address={}", self.apiserver.ip()))
            .arg(format!("--advertise-address={}", self.apiserver.ip()))
            .arg(format!("--secure-port={APISERVER_PORT}"))
            .arg(format!("--tls-cert-file={}", pki.apiserver.cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.apiserver.key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca.cert.display()))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                pki.service_account_public.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.service_account_key.display()
            ))
            .arg("--authorization-mode=Node,RBAC")
            .arg(format!(
                "--service-cluster-ip-range=10.213.{}.192/26",
                self.lab_id
            ))
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        command
    }

    fn start_apiserver(&self) -> Result<()> {
        let mut process = self.control_plane.spawn(self.apiserver_command())?;
        crate::ready::wait_listening(
            "kube-apiserver",
            &mut process,
            &[APISERVER_PORT],
            START_TIMEOUT,
            None,
        )?;
        *self.apiserver() = Some(process);
        self.wait_ready("/readyz")
    }

    fn apiserver(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        self.apiserver_process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the API server answers `path` with `ok`.
    fn wait_ready(&self, path: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.kubectl.run(&["get", "--raw", path]) {
                Ok(answer) if answer.trim() == "ok" => return Ok(()),
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    if let Some(process) = self.apiserver().as_mut()
                        && let Some(status) = process.try_status()
                    {
                        return Err(LabError::NotReady {
                            what: "kube-apiserver".to_owned(),
                            pod: "control-plane".to_owned(),
                            timeout: START_TIMEOUT,
                            detail: format!("it exited ({status}): {}", tail(&process.stderr())),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                answer => {
                    return Err(LabError::NotReady {
                        what: "kube-apiserver".to_owned(),
                        pod: "control-plane".to_owned(),
                        timeout: START_TIMEOUT,
                        detail: format!("{path} answered {answer:?}"),
                    });
                }
            }
        }
    }

    fn start_controllers(&mut self) -> Result<()> {
        let pki = &self.pki;
        let kcm = pki.kubeconfig(
            "kube-controller-manager",
            &self.server,
            &pki.controller_manager,
        )?;
        let scheduler = pki.kubeconfig("kube-scheduler", &self.server, &pki.scheduler)?;
        let mut command = Command::new(self.upstream.bin("kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={}", kcm.display()))
            .arg(format!("--authentication-kubeconfig={}", kcm.display()))
            .arg(format!("--authorization-kubeconfig={}", kcm.display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca.cert.display()))
            .arg("--use-service-account-credentials=true")
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--profiling=false");
        let process = self.control_plane.spawn(command)?;
        self.controllers.push(("kube-controller-manager", process));
        let mut command = Command::new(self.upstream.bin("kube-scheduler"));
        command
            .arg(format!("--kubeconfig={}", scheduler.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                scheduler.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                scheduler.display()
            ))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--profiling=false");
        let process = self.control_plane.spawn(command)?;
        self.controllers.push(("kube-scheduler", process));
        Ok(())
    }

    /// kube-proxy in iptables mode in the node's namespace, with its own
    /// kubeconfig (user `system:kube-proxy`, bound to `system:node-proxier`
    /// by the default RBAC).
    /// kube-proxy in iptables mode on node `number`, with its own
    /// kubeconfig; its health and metrics ports are on that node's loopback.
    fn start_kube_proxy(&mut self, lab: &Lab, number: u8) -> Result<()> {
        let kubeconfig = self
            .pki
            .kubeconfig("kube-proxy", &self.server, &self.pki.kube_proxy)?;
        let group = lab.nth_node_processes(number, "kube-proxy")?;
        let mut command = Command::new(self.upstream.bin("kube-proxy"));
        command
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--hostname-override={}", node_name(number)))
            .arg("--proxy-mode=iptables")
            .arg(format!("--cluster-cidr={}", lab.ipv4_subnet()))
            // The node's conntrack table is this machine's: leave its size
            // and timeouts alone.
            .arg("--conntrack-max-per-core=0")
            .arg("--conntrack-min=0")
            .arg("--conntrack-tcp-timeout-established=0")
            .arg("--conntrack-tcp-timeout-close-wait=0")
            .arg("--healthz-bind-address=127.0.0.1:10256")
            .arg("--metrics-bind-address=127.0.0.1:10249")
            .arg("--iptables-sync-period=1s")
            .arg("--iptables-min-sync-period=0s");
        let mut process = group.spawn(command)?;
        crate::ready::wait_listening("kube-proxy", &mut process, &[10256], START_TIMEOUT, None)?;
        self.controllers.push(("kube-proxy", process));
        Ok(())
    }

    /// Waits until the service-account controller made `namespace/name`
    /// (pods are refused before).
    pub fn wait_for_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        self.wait_for(
            &format!("service account {namespace}/{name}"),
            START_TIMEOUT,
            || {
                let found = self.kubectl.run(&[
                    "get",
                    "serviceaccount",
                    name,
                    "-n",
                    namespace,
                    "--ignore-not-found",
                    "-o",
                    "name",
                ])?;
                Ok(!found.trim().is_empty())
            },
        )
    }

    /// Polls `done` every 250 ms until it says true or `timeout` passes.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match done() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e.to_string()),
            }
            if Instant::now() >= deadline {
                return Err(LabError::NotReady {
                    what: what.to_owned(),
                    pod: "control-plane".to_owned(),
                    timeout,
                    detail: last_error.unwrap_or_else(|| "not there yet".to_owned()),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn wait_for_service_rules(
        &self,
        cluster_ip: Ipv4Addr,
        port: u16,
        endpoints: usize,
    ) -> Result<()> {
        self.wait_for(
            &format!(
                "kube-proxy's rules for {cluster_ip}:{port} with {endpoints} endpoints on every node"
            ),
            START_TIMEOUT,
            || {
                for node in &self.nodes {
                    let rules = self.nth_node_iptables(node.number)?;
                    if service_endpoint_rules(&rules, cluster_ip, port) != Some(endpoints) {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
    }

    /// `iptables-save -t nat` of the node's namespace.
    pub fn node_iptables(&self) -> Result<String> {
        self.nth_node_iptables(1)
    }

    /// `iptables-save -t nat` of node `number`'s namespace.
    pub fn nth_node_iptables(&self, number: u8) -> Result<String> {
        let node = self
            .nodes
            .iter()
            .find(|node| node.number == number)
            .ok_or_else(|| {
                LabError::invalid("node number", format!("{number}: not in the cluster"))
            })?;
        let out = node.processes.run(
            {
                let mut command = Command::new("iptables-save");
                command.args(["-t", "nat"]);
                command
            },
            Duration::from_secs(30),
        )?;
        Ok(out.ok()?.stdout)
    }

    /// The node's process group (a kubelet's place): commands run there are
    /// on the node's network.
    pub fn node(&self) -> &Pod {
        &self.node
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL).
    pub fn stop_apiserver(&self) {
        let process = self.apiserver().take();
        if let Some(mut process) = process {
            process.terminate(Duration::from_secs(10));
        }
    }

    /// Starts kube-apiserver again with the same flags and waits until it
    /// is ready.
    pub fn restart_apiserver(&self) -> Result<()> {
        self.stop_apiserver();
        self.start_apiserver()
    }

    /// Compacts etcd's history up to its current revision, so a watch
    /// resuming from an older resource version gets 410 Gone.
    pub fn compact_etcd(&self) -> Result<u64> {
        // etcd's v3 HTTP gateway: read the revision, then compact to it.
        let status = self.etcd_gateway("/v3/kv/range", &json!({"key": "AA==", "limit": 1}))?;
        let revision: u64 = status["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| LabError::parse("etcd's range answer", status.to_string()))?;
        self.etcd_gateway(
            "/v3/kv/compaction",
            &json!({"revision": revision.to_string(), "physical": true}),
        )?;
        Ok(revision)
    }

    /// POSTs `body` to etcd's gateway from inside the control plane's pod.
    fn etcd_gateway(&self, path: &str, body: &Value) -> Result<Value> {
        let mut command = Command::new("curl");
        command
            .args([
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "10",
                "-X",
                "POST",
            ])
            .arg(format!("http://127.0.0.1:{ETCD_CLIENT_PORT}{path}"))
            .arg("--data")
            .arg(body.to_string());
        let out = self
            .control_plane
            .run(command, Duration::from_secs(20))?
            .ok()?;
        serde_json::from_str(&out.stdout)
            .map_err(|e| LabError::parse("etcd's answer", e.to_string()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((stop, handle)) = self.heartbeat.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        for (_, process) in self.controllers.iter_mut().rev() {
            process.terminate(Duration::from_secs(5));
        }
        self.stop_apiserver();
        if let Some(mut process) = self.etcd.take() {
            process.terminate(Duration::from_secs(10));
        }
    }
}

/// How many endpoints kube-proxy's nat rules (`iptables-save -t nat`) send
/// `cluster_ip:port` to; `None` before it has a rule for the Service.
fn service_endpoint_rules(rules: &str, cluster_ip: Ipv4Addr, port: u16) -> Option<usize> {
    let chain = rules.lines().find_map(|line| {
        (line.contains(&format!("-d {cluster_ip}/32"))
            && line.contains(&format!("--dport {port}"))
            && line.contains("-j KUBE-SVC-"))
        .then(|| line.rsplit(' ').next().map(str::to_owned))
        .flatten()
    })?;
    Some(
        rules
            .lines()
            .filter(|line| {
                line.starts_with(&format!("-A {chain} ")) && line.contains("-j KUBE-SEP-")
            })
            .count(),
    )
}

/// The last lines of a log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
