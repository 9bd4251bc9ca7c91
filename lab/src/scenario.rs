//! The frontend example (`deploy/examples/frontend`) as a running world, wired
//! the way a mesh is: `client`, `frontend-v1` and `frontend-v2` have Istio
//! sidecars (the interception rules of `istio-iptables`, HAProxy as the
//! outbound proxy on 15001, nginx as the inbound proxy on 15006 terminating
//! mTLS in front of the application's nginx on 8080); applications dial the
//! Service's cluster IP, which kube-proxy's rules in the node's namespace
//! DNAT to a pod. A `legacy` pod has no sidecar; an optional `batch` pod has
//! one whose annotations leave port 8080 out of it; an optional `reporter`
//! pod has none either but is enrolled in Istio's ambient mode by its
//! namespace's label (the lab runs no ztunnel: its plaintext goes to the
//! cluster IP like legacy's). `meshdrift run` judges it all. The demo and the end-to-end tests share it.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    AgentOutput, AgentProcess, ClusterService, Curl, Haproxy, InboundProxy, Interception, Lab,
    Nginx, Pod, ProxyMode, SlowResponses, Upstream, UpstreamTls,
    cluster::{
        AGENT_PATHS, AgentPod, Cluster, ClusterConfig, IstioCrdVersions, Manifests, lab_agent_args,
    },
    error::{LabError, Result},
    prometheus::{Prometheus, free_loopback_port, get_json_with_token},
    sidecar::{OUTBOUND_PORT, PROXY_UID},
};

pub const HOST: &str = "frontend.default.svc.cluster.local";
pub const SERVICE_PORT: u16 = 80;
/// The application's port: the Service's `targetPort`, where sidecars dial
/// (and the server's rules redirect to its inbound proxy).
pub const PLAIN_PORT: u16 = 8080;
pub const PROXY_PORT: u16 = OUTBOUND_PORT;
/// The example's manifests place the pods in this /24; the lab moves them into its own.
const EXAMPLE_PREFIX: &str = "10.213.0.";
/// Requests per curl run: small batches keep the progress moving.
const BATCH: usize = 50;

#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// The example's manifests directory.
    pub example: PathBuf,
    /// The `meshdrift` binary.
    pub meshdrift: PathBuf,
    /// What the client's proxy really does: v1 and v2 weights.
    pub proxy_weights: (u32, u32),
    /// Declared v1/v2 weights to write over the example's VirtualService, if any.
    pub declared_weights: Option<(u32, u32)>,
    /// Whether the `legacy` pod (no sidecar) sends plaintext to the
    /// Service's cluster IP with each batch, one connection per request.
    pub legacy_plaintext: bool,
    /// Whether a `batch` pod runs, with a sidecar whose annotations exclude
    /// port 8080, sending plaintext straight to frontend-v1 with each batch.
    pub bypass: bool,
    /// Whether the `reporter` pod runs in namespace `analytics`, which its
    /// label enrolls in ambient mode; [`Frontend::send_from_ambient`] sends
    /// from it.
    pub ambient_client: bool,
    /// Whether a hostNetwork pod (`node-agent`, the node's own address) runs;
    /// [`Frontend::send_from_host_network`] sends from it.
    pub host_network_client: bool,
    /// More arguments for `meshdrift run`.
    pub agent_args: Vec<String>,
    /// Start `meshdrift run` with the scenario (else [`Frontend::start_agent`] does).
    pub agent_at_start: bool,
    /// How the client's proxy speaks to v1 and v2.
    pub protocol: Protocol,
    /// Padded responses from both frontends, v2's paced: v2 answers slowly,
    /// so a multiplexing proxy keeps more requests in flight on its
    /// connections to v2.
    pub slow_v2: Option<SlowResponses>,
    /// `connectionPool.http.maxRequestsPerConnection` to declare in the
    /// example's DestinationRule, if any.
    pub declared_max_requests_per_connection: Option<u32>,
    /// Whether the client's proxy closes each upstream connection after that
    /// many requests; else it reuses them without limit.
    pub proxy_requests_per_connection: Option<u32>,
    /// Where the agent learns who is who and what is declared.
    pub inventory: Inventory,
    /// With [`Inventory::Kubernetes`]: the agent installed from the Helm
    /// chart with `auth.mode=kubernetes`, and a service account
    /// `monitoring/prometheus` granted its paths, whose token the scenario
    /// (and a Prometheus, [`Frontend::agent_token_file`]) sends.
    pub auth: bool,
    /// The lab node `frontend-v1` and `frontend-v2` run on; the other pods
    /// run on node 1. Above 1 (with [`Inventory::Kubernetes`] only), the
    /// cluster has that many nodes, each node's pods in a cgroup subtree of
    /// their own, and the agent's pod runs on every node.
    pub server_node: u8,
}

/// The agent's inventory source in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inventory {
    /// `meshdrift run --manifests DIR` on the scenario's manifests, with the
    /// lab's own kube-proxy rules.
    #[default]
    Manifests,
    /// A real control plane ([`Cluster`]): the manifests applied with
    /// kubectl, the pods created through the API, EndpointSlices from the
    /// controller, the real kube-proxy, and the agent installed from
    /// `deploy/kubernetes` reading the API server with its service account.
    Kubernetes(IstioCrdVersions),
}

impl Inventory {
    /// The real control plane, with Istio's current CRDs.
    pub const KUBERNETES: Inventory = Inventory::Kubernetes(IstioCrdVersions::Current);
}

impl FrontendConfig {
    /// The proxy at `proxy_weights`, the example's declared weights, no
    /// legacy traffic, HTTP/1.1 over mTLS, the agent started at once.
    pub fn new(example: PathBuf, meshdrift: PathBuf, proxy_weights: (u32, u32)) -> Self {
        Self {
            example,
            meshdrift,
            proxy_weights,
            declared_weights: None,
            legacy_plaintext: false,
            bypass: false,
            ambient_client: false,
            host_network_client: false,
            agent_args: Vec::new(),
            agent_at_start: true,
            protocol: Protocol::Http1,
            slow_v2: None,
            declared_max_requests_per_connection: None,
            proxy_requests_per_connection: None,
            inventory: Inventory::default(),
            auth: false,
            server_node: 1,
        }
    }
}

/// The protocol between the client's proxy and the frontends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 over Istio-style mTLS (ALPN `istio-http/1.1`): one request
    /// at a time per connection.
    Http1,
    /// HTTP/2 over Istio-style mTLS (ALPN `istio-h2`): requests multiplexed.
    Http2,
    /// HTTP/2 in plaintext with prior knowledge (h2c), passed through the
    /// inbound proxy to the application.
    H2c,
}

pub struct Frontend {
    /// The real control plane, with [`Inventory::Kubernetes`].
    pub cluster: Option<Cluster>,
    pub lab: Lab,
    pub client: Pod,
    pub v1: Pod,
    pub v2: Pod,
    pub legacy: Pod,
    /// The `batch` pod, whose sidecar leaves port 8080 out ([`FrontendConfig::bypass`]).
    pub bypass: Option<Pod>,
    /// The hostNetwork pod ([`FrontendConfig::host_network_client`]).
    pub host_network: Option<Pod>,
    /// The ambient-mode pod ([`FrontendConfig::ambient_client`]).
    pub ambient: Option<Pod>,
    /// The frontend Service's cluster IP.
    pub cluster_ip: Ipv4Addr,
    pub manifests: PathBuf,
    /// `http://127.0.0.1:PORT` of the agent.
    pub agent_url: String,
    pub agent_listen: SocketAddr,
    config: FrontendConfig,
    proxy: Option<Haproxy>,
    agent: Option<AgentProcess>,
    /// The agent's pod, with [`Inventory::Kubernetes`] (node-1's).
    agent_pod: Option<AgentPod>,
    /// The agent's pods on the other nodes, in node order.
    other_agent_pods: Vec<AgentPod>,
    /// With [`FrontendConfig::auth`]: the token that reads the agent, and
    /// the file holding it.
    agent_token: Option<String>,
    pub agent_token_file: Option<PathBuf>,
    servers: Vec<Nginx>,
    _inbound: Vec<InboundProxy>,
}

/// The ambient-mode pod and its namespace.
pub const AMBIENT_POD: &str = "reporter";
pub const AMBIENT_NAMESPACE: &str = "analytics";

/// The port the `batch` pod's sidecar leaves out.
const BYPASSED_PORT: u16 = PLAIN_PORT;

impl Frontend {
    pub fn start(config: FrontendConfig) -> Result<Self> {
        let lab = Lab::new("frontend")?;
        let server_node = config.server_node;
        if server_node > 1 && config.inventory == Inventory::Manifests {
            return Err(LabError::invalid(
                "scenario",
                "frontends on another node need a cluster (Inventory::Kubernetes)",
            ));
        }
        // Nodes before pods: each node's pods then get a cgroup subtree.
        for node in 2..=server_node {
            lab.add_node(node)?;
        }
        let client = lab.add_pod_at("client", 10)?;
        let v1 = lab.add_pod_on("frontend-v1", 11, server_node)?;
        let v2 = lab.add_pod_on("frontend-v2", 12, server_node)?;
        let legacy = lab.add_pod_at("legacy", 13)?;
        let bypass = if config.bypass {
            Some(lab.add_pod_at("batch", 14)?)
        } else {
            None
        };
        let ambient = if config.ambient_client {
            Some(lab.add_pod_at(AMBIENT_POD, 15)?)
        } else {
            None
        };
        let host_network = if config.host_network_client {
            Some(lab.add_host_network_pod("node-agent")?)
        } else {
            None
        };
        for pod in [&client, &v1, &v2] {
            Interception::default().install(pod)?;
        }
        if let Some(pod) = &bypass {
            bypass_interception().install(pod)?;
        }
        let servers = [("v1", &v1), ("v2", &v2)]
            .into_iter()
            .map(|(name, pod)| {
                let mut nginx = Nginx::builder(name)
                    .http(PLAIN_PORT)
                    .access_log(true)
                    .http2(config.protocol == Protocol::H2c);
                if let Some(slow) = config.slow_v2 {
                    nginx = nginx.slow(if name == "v2" {
                        slow
                    } else {
                        SlowResponses {
                            bytes_per_sec: None,
                            ..slow
                        }
                    });
                }
                nginx.start(pod)
            })
            .collect::<Result<Vec<_>>>()?;
        let inbound = [&v1, &v2]
            .into_iter()
            .map(|pod| {
                InboundProxy::start(pod, PLAIN_PORT, config.protocol == Protocol::Http2, &[HOST])
            })
            .collect::<Result<Vec<_>>>()?;
        let cluster_ip = lab.service_ip(0)?;
        if config.inventory == Inventory::Manifests {
            lab.sync_services(&[ClusterService {
                name: format!("default/frontend:{SERVICE_PORT}"),
                cluster_ip,
                port: SERVICE_PORT,
                endpoints: vec![
                    SocketAddrV4::new(v1.ipv4(), PLAIN_PORT),
                    SocketAddrV4::new(v2.ipv4(), PLAIN_PORT),
                ],
            }])?;
        }
        let manifests = lab.dir().join("manifests");
        write_manifests(
            &config.example,
            &manifests,
            lab.id(),
            bypass.is_some(),
            host_network.is_some(),
            ambient.is_some(),
        )?;
        if let Some((w1, w2)) = config.declared_weights {
            write_virtual_service(&manifests, w1, w2)?;
        }
        if let Some(limit) = config.declared_max_requests_per_connection {
            declare_max_requests_per_connection(&manifests, limit)?;
        }
        let cluster = match config.inventory {
            Inventory::Manifests => None,
            Inventory::Kubernetes(istio_crds) => {
                let cluster = Cluster::start(
                    &lab,
                    ClusterConfig {
                        istio_crds,
                        ..ClusterConfig::new(crate::cluster::Upstream::locate()?).nodes(server_node)
                    },
                )?;
                cluster.apply(&lab, &Manifests::read(&manifests)?)?;
                // kube-proxy's rules from the Service and the EndpointSlice
                // the controller made of the two ready pods.
                cluster.wait_for_service_rules(cluster_ip, SERVICE_PORT, 2)?;
                Some(cluster)
            }
        };
        let agent_listen = free_loopback_port()?;
        let mut frontend = Self {
            cluster,
            lab,
            client,
            v1,
            v2,
            legacy,
            bypass,
            host_network,
            ambient,
            cluster_ip,
            agent_url: format!("http://{agent_listen}"),
            agent_listen,
            manifests,
            config,
            proxy: None,
            agent: None,
            agent_pod: None,
            other_agent_pods: Vec::new(),
            agent_token: None,
            agent_token_file: None,
            servers,
            _inbound: inbound,
        };
        if frontend.config.agent_at_start {
            frontend.start_agent()?;
        }
        let weights = frontend.config.proxy_weights;
        frontend.restart_proxy(weights)?;
        Ok(frontend)
    }

    /// `http://<cluster IP>/`: what applications dial.
    pub fn service_url(&self) -> String {
        format!("http://{}:{SERVICE_PORT}/", self.cluster_ip)
    }

    /// Starts `meshdrift run` on the scenario's manifests (stopping the one
    /// running, if any).
    /// With [`Inventory::Kubernetes`], installs it from `deploy/kubernetes`
    /// instead and runs its pod (once: the DaemonSet keeps it).
    pub fn start_agent(&mut self) -> Result<()> {
        self.stop_agent()?;
        if let Some(cluster) = &self.cluster {
            let args = lab_agent_args(&self.config.agent_args);
            let mut pods = if self.config.auth {
                let pods =
                    cluster.install_agents_with_auth(&self.lab, &self.config.meshdrift, &args)?;
                let token =
                    cluster.service_account_token("monitoring", "prometheus", &AGENT_PATHS)?;
                let file = self.lab.dir().join("prometheus.token");
                std::fs::write(&file, &token).map_err(|e| LabError::io("writing", &file, e))?;
                self.agent_token = Some(token);
                self.agent_token_file = Some(file);
                pods
            } else {
                cluster.install_agents(&self.lab, &self.config.meshdrift, &args)?
            };
            if pods.is_empty() {
                return Err(LabError::invalid("scenario", "the cluster has no node"));
            }
            self.other_agent_pods = pods.split_off(1);
            let pod = pods.remove(0);
            self.agent_url = pod.url.clone();
            self.agent_listen = SocketAddr::new(pod.pod.ipv4().into(), pod_port(&pod.url));
            self.agent_pod = Some(pod);
            return Ok(());
        }
        self.agent = Some(AgentProcess::run_on_manifests(
            &self.config.meshdrift,
            &self.manifests,
            self.agent_listen,
            &self.config.agent_args,
        )?);
        Ok(())
    }

    /// (Re)starts the client's proxy with these v1/v2 weights, as a sidecar does
    /// when it receives new configuration. Its pooled connections close.
    pub fn restart_proxy(&mut self, (w1, w2): (u32, u32)) -> Result<()> {
        self.proxy = None;
        let protocol = self.config.protocol;
        // A sidecar dials the endpoint's pod IP and target port.
        let upstream = |subset: &str, pod: &Pod, weight: u32| {
            let endpoint = Upstream::new(
                subset,
                SocketAddr::new(pod.ipv4().into(), PLAIN_PORT),
                weight,
            );
            match protocol {
                Protocol::Http1 => endpoint.tls(UpstreamTls::istio_http(
                    SERVICE_PORT,
                    subset,
                    HOST,
                    "client",
                )),
                Protocol::Http2 => {
                    endpoint.tls(UpstreamTls::istio_h2(SERVICE_PORT, subset, HOST, "client"))
                }
                Protocol::H2c => endpoint.h2c(true),
            }
        };
        let mut proxy = Haproxy::builder(PROXY_PORT, ProxyMode::Http)
            .uid(PROXY_UID)
            .server(upstream("v1", &self.v1, w1))
            .server(upstream("v2", &self.v2, w2));
        if let Some(limit) = self.config.proxy_requests_per_connection {
            proxy = proxy.requests_per_connection(limit);
        }
        self.proxy = Some(proxy.start(&self.client)?);
        Ok(())
    }

    /// Declares new v1/v2 weights in the manifests the agent watches (or,
    /// with a cluster, applies them to it).
    pub fn declare_weights(&self, w1: u32, w2: u32) -> Result<()> {
        write_virtual_service(&self.manifests, w1, w2)?;
        if let Some(cluster) = &self.cluster {
            let path = self.manifests.join("virtualservice.yaml");
            let text =
                std::fs::read_to_string(&path).map_err(|e| LabError::io("reading", &path, e))?;
            cluster.apply_objects(&crate::cluster::documents(&text, &path)?)?;
        }
        Ok(())
    }

    pub fn proxy(&self) -> Option<&Haproxy> {
        self.proxy.as_ref()
    }

    /// How many requests the client's sidecar sends on one connection before
    /// it closes it, if it is told ([`FrontendConfig::proxy_requests_per_connection`]).
    pub fn proxy_requests_per_connection(&self) -> Option<u32> {
        self.config.proxy_requests_per_connection
    }

    /// The v1 and v2 servers (their access logs are the requests they served).
    pub fn servers(&self) -> &[Nginx] {
        &self.servers
    }

    /// Sends `requests` from the client's application to the Service's
    /// cluster IP (its sidecar takes them) in batches, and with each batch,
    /// when configured, plaintext from `legacy` to the cluster IP and from
    /// `batch` straight to frontend-v1; calls `progress(sent, total)` after
    /// each batch.
    pub fn send(&self, requests: usize, mut progress: impl FnMut(usize, usize)) -> Result<()> {
        if self.proxy.is_none() {
            return Err(LabError::invalid(
                "scenario",
                "the client's proxy is not running",
            ));
        }
        let mut sent = 0;
        while sent < requests {
            let batch = BATCH.min(requests - sent);
            expect_ok(
                "requests through the client's sidecar",
                batch,
                &Curl::new(&self.service_url())
                    .count(batch)
                    .run(&self.client)?,
            )?;
            if self.config.legacy_plaintext {
                self.send_from_legacy(batch / 5)?;
            }
            if self.bypass.is_some() {
                self.send_around_sidecar(batch / 10)?;
            }
            sent += batch;
            progress(sent, requests);
        }
        Ok(())
    }

    /// `count` plaintext requests from `legacy` (no sidecar) to the cluster
    /// IP, one connection each, so kube-proxy picks an endpoint for each.
    pub fn send_from_legacy(&self, count: usize) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let report = Curl::new(&self.service_url())
            .count(count)
            .new_connection_per_request(true)
            .run(&self.legacy)?;
        expect_ok("plaintext requests from legacy", count, &report)
    }

    /// `count` plaintext requests from the ambient-mode `reporter` pod to the
    /// cluster IP, one connection each.
    pub fn send_from_ambient(&self, count: usize) -> Result<()> {
        let pod = self.ambient.as_ref().ok_or_else(|| {
            LabError::invalid(
                "scenario",
                "no ambient pod (FrontendConfig::ambient_client)",
            )
        })?;
        let report = Curl::new(&self.service_url())
            .count(count)
            .new_connection_per_request(true)
            .run(pod)?;
        expect_ok("requests from the ambient pod", count, &report)
    }

    /// `count` plaintext requests from the hostNetwork pod to the cluster
    /// IP, one connection each (kube-proxy's rules in the node's own
    /// namespace pick the endpoint).
    pub fn send_from_host_network(&self, count: usize) -> Result<()> {
        let pod = self.host_network.as_ref().ok_or_else(|| {
            LabError::invalid(
                "scenario",
                "no hostNetwork pod (FrontendConfig::host_network_client)",
            )
        })?;
        let report = Curl::new(&self.service_url())
            .count(count)
            .new_connection_per_request(true)
            .run(pod)?;
        expect_ok("requests from the hostNetwork pod", count, &report)
    }

    /// `count` plaintext requests from the `batch` pod straight to
    /// frontend-v1's pod IP on the port its sidecar leaves out.
    pub fn send_around_sidecar(&self, count: usize) -> Result<()> {
        let pod = self.bypass.as_ref().ok_or_else(|| {
            LabError::invalid("scenario", "no batch pod (FrontendConfig::bypass)")
        })?;
        if count == 0 {
            return Ok(());
        }
        let report = Curl::new(&self.v1.url("http", false, BYPASSED_PORT))
            .count(count)
            .run(pod)?;
        expect_ok("requests around the batch pod's sidecar", count, &report)
    }

    /// The agent's `GET /report`.
    pub fn report(&self) -> Result<Value> {
        get_json_with_token(
            &format!("{}/report", self.agent_url),
            "the agent's report",
            self.agent_token.as_deref(),
        )
    }

    /// Polls the report until `done` says so; returns the last report either way.
    pub fn wait_report(
        &self,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Value, bool)> {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.report()?;
            if done(&report) {
                return Ok((report, true));
            }
            if Instant::now() >= deadline {
                return Ok((report, false));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// What the agent's pod printed on standard error so far (empty for an
    /// agent run on the manifests).
    pub fn agent_stderr(&self) -> String {
        self.agent_pod
            .as_ref()
            .map(AgentPod::stderr)
            .unwrap_or_default()
    }

    /// A Prometheus that finds every node's agent through the API server (its
    /// service account `monitoring/prometheus` may list and watch the agent's
    /// pods), as a cluster's does, scraping with that account's token when
    /// the agents require one, and evaluating `rules`.
    pub fn discovering_prometheus(&self, rules: &[PathBuf]) -> Result<Prometheus> {
        let cluster = self.cluster.as_ref().ok_or_else(|| {
            LabError::invalid(
                "Prometheus with Kubernetes discovery",
                "the scenario runs no cluster to discover the agents in",
            )
        })?;
        cluster.discovering_prometheus(
            &self.lab.dir().join("prometheus"),
            self.agent_token_file.as_deref(),
            rules,
        )
    }

    /// The agent's pods, node-1's first, with [`Inventory::Kubernetes`].
    pub fn agent_pods(&self) -> Vec<&AgentPod> {
        self.agent_pod
            .iter()
            .chain(self.other_agent_pods.iter())
            .collect()
    }

    /// The token that reads the agents, with [`FrontendConfig::auth`].
    pub fn agent_token(&self) -> Option<&str> {
        self.agent_token.as_deref()
    }

    /// Stops the agent (SIGINT; SIGTERM for its pod) and returns what it
    /// printed (node-1's; the other nodes' agents stop too).
    pub fn stop_agent(&mut self) -> Result<Option<AgentOutput>> {
        for pod in std::mem::take(&mut self.other_agent_pods) {
            pod.stop(Duration::from_secs(30))?;
        }
        if let Some(pod) = self.agent_pod.take() {
            return pod.stop(Duration::from_secs(30)).map(Some);
        }
        self.agent
            .take()
            .map(|agent| agent.stop(Duration::from_secs(30)))
            .transpose()
    }
}

/// The port of an `http://IP:PORT` URL.
fn pod_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(9477)
}

fn expect_ok(what: &str, count: usize, report: &crate::CurlReport) -> Result<()> {
    if report.count_status(200) == count {
        Ok(())
    } else {
        Err(LabError::invalid(
            "traffic",
            format!("{what} failed: {:?}", report.status_counts()),
        ))
    }
}

/// The `batch` pod's sidecar: port 8080 left out.
fn bypass_interception() -> Interception {
    Interception {
        exclude_outbound_ports: vec![BYPASSED_PORT],
        ..Interception::default()
    }
}

/// The example's manifests with its pod and cluster IPs moved into lab
/// `id`'s subnet, plus the `legacy` pod (no sidecar) and, when running, the
/// `batch` pod with its sidecar's annotations.
fn write_manifests(
    example: &Path,
    dir: &Path,
    id: u8,
    bypass: bool,
    host_network: bool,
    ambient: bool,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
    let prefix = format!("10.213.{id}.");
    let entries = std::fs::read_dir(example).map_err(|e| LabError::io("reading", example, e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| LabError::io("reading", example, e))?
            .path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        let Some(name) = path.file_name().filter(|_| is_yaml) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| LabError::io("reading", &path, e))?;
        let target = dir.join(name);
        std::fs::write(&target, text.replace(EXAMPLE_PREFIX, &prefix))
            .map_err(|e| LabError::io("writing", &target, e))?;
    }
    let legacy = format!(
        "# A pod without an Istio sidecar: no istio-proxy container, no injection marks.\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: legacy\n  namespace: default\n  labels:\n    app: legacy\n\
         spec:\n  containers:\n    - name: legacy\n      image: curlimages/curl:8.5.0\n\
         status:\n  phase: Running\n  podIP: {prefix}13\n"
    );
    let target = dir.join("legacy.yaml");
    std::fs::write(&target, legacy).map_err(|e| LabError::io("writing", &target, e))?;
    if bypass {
        let annotations: String = bypass_interception()
            .annotations()
            .iter()
            .map(|(key, value)| format!("    {key}: {value:?}\n"))
            .collect();
        let batch = format!(
            "# A pod with a sidecar whose annotations leave port {BYPASSED_PORT} out of it.\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: batch\n  namespace: default\n  labels:\n    app: batch\n    security.istio.io/tlsMode: istio\n\
             \x20 annotations:\n{annotations}\
             spec:\n  containers:\n    - name: batch\n      image: curlimages/curl:8.5.0\n    - name: istio-proxy\n      image: istio/proxyv2:1.31.0\n\
             status:\n  phase: Running\n  podIP: {prefix}14\n"
        );
        let target = dir.join("batch.yaml");
        std::fs::write(&target, batch).map_err(|e| LabError::io("writing", &target, e))?;
    }
    if ambient {
        let reporter = format!(
            "# A namespace enrolled in Istio's ambient mode, and a pod of it: no\n\
             # sidecar, ztunnel carries its traffic.\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {AMBIENT_NAMESPACE}\n  labels:\n    istio.io/dataplane-mode: ambient\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {AMBIENT_POD}\n  namespace: {AMBIENT_NAMESPACE}\n  labels:\n    app: {AMBIENT_POD}\n\
             spec:\n  containers:\n    - name: {AMBIENT_POD}\n      image: curlimages/curl:8.5.0\n\
             status:\n  phase: Running\n  podIP: {prefix}15\n"
        );
        let target = dir.join("reporter.yaml");
        std::fs::write(&target, reporter).map_err(|e| LabError::io("writing", &target, e))?;
    }
    if host_network {
        let node_agent = format!(
            "# A hostNetwork DaemonSet and its pod on the node: the node's own\n\
             # network namespace and address. (A cluster's DaemonSet controller\n\
             # makes the pod; the manifests source reads it from here.)\n\
             apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: node-agent\n  namespace: kube-system\n\
             spec:\n  selector:\n    matchLabels: {{app: node-agent}}\n  template:\n    metadata:\n      labels: {{app: node-agent}}\n\
             \x20   spec:\n      hostNetwork: true\n      containers:\n        - name: node-agent\n          image: curlimages/curl:8.5.0\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: node-agent-x7k2p\n  namespace: kube-system\n  labels:\n    app: node-agent\n\
             \x20 ownerReferences:\n    - {{apiVersion: apps/v1, kind: DaemonSet, name: node-agent, controller: true, uid: 0d5e}}\n\
             spec:\n  hostNetwork: true\n  nodeName: lab-node\n  containers:\n    - name: node-agent\n      image: curlimages/curl:8.5.0\n\
             status:\n  phase: Running\n  podIP: {prefix}1\n"
        );
        let target = dir.join("node-agent.yaml");
        std::fs::write(&target, node_agent).map_err(|e| LabError::io("writing", &target, e))?;
    }
    Ok(())
}

/// Adds `connectionPool.http.maxRequestsPerConnection` to the example's
/// DestinationRule (its `trafficPolicy` holds only `tls`).
fn declare_max_requests_per_connection(dir: &Path, limit: u32) -> Result<()> {
    let path = dir.join("destinationrule.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| LabError::io("reading", &path, e))?;
    let anchor = "  trafficPolicy:\n";
    if !text.contains(anchor) {
        return Err(LabError::invalid(
            "the example's DestinationRule",
            format!(
                "{} has no top-level trafficPolicy to extend",
                path.display()
            ),
        ));
    }
    let text = text.replacen(
        anchor,
        &format!(
            "{anchor}    connectionPool:\n      http:\n        maxRequestsPerConnection: {limit}\n"
        ),
        1,
    );
    std::fs::write(&path, text).map_err(|e| LabError::io("writing", &path, e))
}

fn write_virtual_service(dir: &Path, w1: u32, w2: u32) -> Result<()> {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: frontend\n  namespace: default\n\
         spec:\n  hosts:\n    - frontend\n  http:\n    - name: split\n      route:\n\
         \x20       - destination:\n            host: frontend\n            subset: v1\n          weight: {w1}\n\
         \x20       - destination:\n            host: frontend\n            subset: v2\n          weight: {w2}\n"
    );
    // Written aside and renamed, so the agent never reads half a file.
    let staging = dir.join(".virtualservice.yaml.tmp");
    let target = dir.join("virtualservice.yaml");
    std::fs::write(&staging, yaml).map_err(|e| LabError::io("writing", &staging, e))?;
    std::fs::rename(&staging, &target).map_err(|e| LabError::io("renaming", &target, e))
}
