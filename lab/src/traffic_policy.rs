//! One lab per DestinationRule traffic-policy check: two client workloads,
//! `client-obey` and `client-break`, each with a sidecar (Istio's
//! interception rules, HAProxy as uid 1337 on 15001, wired as in
//! [`crate::scenario::Frontend`]) whose HAProxy obeys, or breaks, the one
//! `trafficPolicy` field the manifests declare for Service `backend`'s subset
//! `v1` (or, for TLS origination, for the ServiceEntry `api.external.test`).
//! `meshdrift run` judges them from the manifests; HAProxy's counters and the
//! servers' logs say what really happened.
//!
//! The world: Service `backend` (namespace `default`, port 80 → 8080) whose
//! subset `v1` is `backend-v1-a` and `backend-v1-b` (sidecars: interception
//! and an mTLS [`InboundProxy`] on 15006 in front of nginx on 8080), plus,
//! for outlier detection, `backend-v1-c`, an endpoint whose sidecar
//! redirects inbound connections to a port nothing listens on, so every
//! connection to it is refused. For TLS origination, `external` is a TLS
//! server outside the mesh (in no manifest), known to the mesh only as the
//! ServiceEntry's endpoint.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    AgentOutput, AgentProcess, ClusterService, Curl, CurlReport, Haproxy, HaproxyBuilder,
    InboundProxy, Interception, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls, Wrk,
    cluster::{AgentPod, Cluster, ClusterConfig, Manifests, lab_agent_args},
    error::{LabError, Result},
    haproxy::Balance,
    prometheus::{free_loopback_port, get_json},
    scenario::Inventory,
    sidecar::{OUTBOUND_PORT, PROXY_UID},
};

/// Time between two requests of the outlier-detection load.
const OUTLIER_PACE: Duration = Duration::from_millis(100);

/// The Service whose subset the policies are declared for.
pub const HOST: &str = "backend.default.svc.cluster.local";
pub const SERVICE_PORT: u16 = 80;
/// The endpoints' port (the Service's `targetPort`), where sidecars dial.
pub const TARGET_PORT: u16 = 8080;
pub const SUBSET: &str = "v1";
/// The ServiceEntry host of the TLS-origination check.
pub const EXTERNAL_HOST: &str = "api.external.test";
/// The SNI `client-break` originates TLS with.
pub const WRONG_SNI: &str = "wrong.external.test";
/// The ServiceEntry's port, where the external server listens for TLS and
/// where applications send their plaintext for the sidecar to encrypt.
pub const EXTERNAL_PORT: u16 = 443;
/// The pods of subset v1; `backend-v1-c` only in the outlier check.
pub const BACKEND_PODS: [&str; 3] = ["backend-v1-a", "backend-v1-b", "backend-v1-c"];
/// The refusing endpoint of the outlier check.
pub const REFUSING_POD: &str = "backend-v1-c";
pub const EXTERNAL_POD: &str = "external";
const PROXY_PORT: u16 = OUTBOUND_PORT;

/// The checks, each one field of a DestinationRule's `trafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyCheck {
    LoadBalancer,
    ConsistentHash,
    MaxConnections,
    MaxRequestsPerConnection,
    IdleTimeout,
    OutlierDetection,
    TlsOrigination,
}

impl PolicyCheck {
    pub const ALL: [PolicyCheck; 7] = [
        PolicyCheck::LoadBalancer,
        PolicyCheck::ConsistentHash,
        PolicyCheck::MaxConnections,
        PolicyCheck::MaxRequestsPerConnection,
        PolicyCheck::IdleTimeout,
        PolicyCheck::OutlierDetection,
        PolicyCheck::TlsOrigination,
    ];

    /// The report's name of the check (`policies[].check`).
    pub fn name(self) -> &'static str {
        match self {
            PolicyCheck::LoadBalancer => "load_balancer",
            PolicyCheck::ConsistentHash => "consistent_hash",
            PolicyCheck::MaxConnections => "max_connections",
            PolicyCheck::MaxRequestsPerConnection => "max_requests_per_connection",
            PolicyCheck::IdleTimeout => "idle_timeout",
            PolicyCheck::OutlierDetection => "outlier_detection",
            PolicyCheck::TlsOrigination => "tls_origination",
        }
    }

    /// The host whose DestinationRule declares the field (`policies[].host`).
    pub fn host(self) -> &'static str {
        match self {
            PolicyCheck::TlsOrigination => EXTERNAL_HOST,
            _ => HOST,
        }
    }

    /// The Service (or ServiceEntry) port (`policies[].port`).
    pub fn port(self) -> u16 {
        match self {
            PolicyCheck::TlsOrigination => EXTERNAL_PORT,
            _ => SERVICE_PORT,
        }
    }

    /// The subset the row is for (`policies[].subset`); the ServiceEntry
    /// has none.
    pub fn subset(self) -> Option<&'static str> {
        match self {
            PolicyCheck::TlsOrigination => None,
            _ => Some(SUBSET),
        }
    }

    /// The backend's endpoint pods in this check's lab.
    fn backend_pods(self) -> &'static [&'static str] {
        match self {
            PolicyCheck::OutlierDetection => &BACKEND_PODS,
            _ => &BACKEND_PODS[..2],
        }
    }

    /// The field, as YAML lines under `trafficPolicy:` (indented 4), beside
    /// `tls: {mode: ISTIO_MUTUAL}`.
    fn backend_policy(self) -> &'static str {
        match self {
            PolicyCheck::LoadBalancer => "    loadBalancer:\n      simple: ROUND_ROBIN\n",
            PolicyCheck::ConsistentHash => {
                "    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n"
            }
            PolicyCheck::MaxConnections => {
                "    connectionPool:\n      tcp:\n        maxConnections: 2\n"
            }
            PolicyCheck::MaxRequestsPerConnection => {
                "    connectionPool:\n      http:\n        maxRequestsPerConnection: 10\n"
            }
            PolicyCheck::IdleTimeout => {
                "    connectionPool:\n      http:\n        idleTimeout: 2s\n"
            }
            PolicyCheck::OutlierDetection => {
                "    outlierDetection:\n      consecutive5xxErrors: 3\n      baseEjectionTime: 60s\n"
            }
            PolicyCheck::TlsOrigination => "",
        }
    }
}

/// Which of the two client workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `client-obey`: its proxy does what the DestinationRule declares.
    Obey,
    /// `client-break`: its proxy does not.
    Break,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Obey, Side::Break];

    /// The pod's name, its `app` label and its service account.
    pub fn pod_name(self) -> &'static str {
        match self {
            Side::Obey => "client-obey",
            Side::Break => "client-break",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrafficPolicyConfig {
    pub check: PolicyCheck,
    /// The `meshdrift` binary.
    pub meshdrift: PathBuf,
    /// Start `meshdrift run` with the lab (else [`TrafficPolicyLab::start_agent`] does).
    pub agent_at_start: bool,
    /// More arguments for `meshdrift run`.
    pub agent_args: Vec<String>,
    /// Where the agent learns who is who and what is declared.
    pub inventory: Inventory,
}

impl TrafficPolicyConfig {
    pub fn new(check: PolicyCheck, meshdrift: PathBuf) -> Self {
        Self {
            check,
            meshdrift,
            agent_at_start: true,
            agent_args: Vec::new(),
            inventory: Inventory::default(),
        }
    }
}

/// A client workload: its pod and its sidecar's HAProxy.
pub struct Client {
    pub pod: Pod,
    pub proxy: Haproxy,
}

/// The lab of one check; torn down on drop.
pub struct TrafficPolicyLab {
    /// The real control plane, with [`Inventory::Kubernetes`].
    pub cluster: Option<Cluster>,
    pub check: PolicyCheck,
    pub obeying: Client,
    pub breaking: Client,
    /// Subset v1's endpoint pods, in [`BACKEND_PODS`] order.
    pub backends: Vec<Pod>,
    /// The TLS server outside the mesh (TLS origination only).
    pub external: Option<Pod>,
    /// The backend Service's cluster IP.
    pub cluster_ip: Ipv4Addr,
    pub manifests: PathBuf,
    /// `http://127.0.0.1:PORT` of the agent.
    pub agent_url: String,
    pub agent_listen: SocketAddr,
    config: TrafficPolicyConfig,
    agent: Option<AgentProcess>,
    agent_pod: Option<AgentPod>,
    /// The backends' applications, then the external server.
    servers: Vec<Nginx>,
    /// The inbound proxies of the serving backends, by pod.
    inbound: Vec<(String, InboundProxy)>,
    // Last: the lab goes after every process in it.
    pub lab: Lab,
}

impl TrafficPolicyLab {
    pub fn start(config: TrafficPolicyConfig) -> Result<Self> {
        let check = config.check;
        let lab = Lab::new(check.name())?;
        let obey = lab.add_pod_at(Side::Obey.pod_name(), 10)?;
        let breaking = lab.add_pod_at(Side::Break.pod_name(), 11)?;
        let backends = check
            .backend_pods()
            .iter()
            .zip(21..)
            .map(|(name, host)| lab.add_pod_at(name, host))
            .collect::<Result<Vec<_>>>()?;
        let external = if check == PolicyCheck::TlsOrigination {
            Some(lab.add_pod_at(EXTERNAL_POD, 30)?)
        } else {
            None
        };
        // Every pod of the mesh has a sidecar's rules; the refusing
        // endpoint's still redirect to a 15006 nothing listens on.
        for pod in [&obey, &breaking].into_iter().chain(&backends) {
            Interception::default().install(pod)?;
        }
        // The refusing endpoint answers on another CPU than the client
        // proxies run on: its RST then comes after the proxy's connect()
        // has returned, as from an endpoint on another machine, and never
        // in the same instant (which would hide a proxy that misses it).
        if let (Some((_, refusing_cpu)), Some(refusing)) = (
            outlier_cpus().filter(|_| check == PolicyCheck::OutlierDetection),
            backends.iter().find(|pod| pod.name() == REFUSING_POD),
        ) {
            refusing.steer_receive_to_cpu(refusing_cpu)?;
        }
        let mut servers = Vec::new();
        let mut inbound = Vec::new();
        for pod in backends.iter().filter(|pod| pod.name() != REFUSING_POD) {
            servers.push(
                Nginx::builder(pod.name())
                    .http(TARGET_PORT)
                    .access_log(true)
                    .start(pod)?,
            );
            inbound.push((
                pod.name().to_owned(),
                InboundProxy::start_with_access_log(pod, TARGET_PORT, false, &[HOST])?,
            ));
        }
        if let Some(pod) = &external {
            servers.push(
                Nginx::builder(EXTERNAL_POD)
                    .tls(EXTERNAL_PORT)
                    .dns_name(EXTERNAL_HOST)
                    .access_log(true)
                    .start(pod)?,
            );
        }
        let cluster_ip = lab.service_ip(0)?;
        if config.inventory == Inventory::Manifests {
            lab.sync_services(&[ClusterService {
                name: format!("default/backend:{SERVICE_PORT}"),
                cluster_ip,
                port: SERVICE_PORT,
                endpoints: backends
                    .iter()
                    .map(|pod| SocketAddrV4::new(pod.ipv4(), TARGET_PORT))
                    .collect(),
            }])?;
        }
        let manifests = lab.dir().join("manifests");
        write_manifests(
            &manifests,
            check,
            cluster_ip,
            &[&obey, &breaking],
            &backends,
            external.as_ref(),
        )?;
        let cluster = match config.inventory {
            Inventory::Manifests => None,
            Inventory::Kubernetes(istio_crds) => {
                let cluster = Cluster::start(
                    &lab,
                    ClusterConfig {
                        istio_crds,
                        ..ClusterConfig::new(crate::cluster::Upstream::locate()?)
                    },
                )?;
                cluster.apply(&lab, &Manifests::read(&manifests)?)?;
                cluster.wait_for_service_rules(cluster_ip, SERVICE_PORT, backends.len())?;
                Some(cluster)
            }
        };
        let obeying_proxy = proxy(check, Side::Obey, &backends, external.as_ref())?.start(&obey)?;
        let breaking_proxy =
            proxy(check, Side::Break, &backends, external.as_ref())?.start(&breaking)?;
        let agent_listen = free_loopback_port()?;
        let mut lab = Self {
            cluster,
            check,
            obeying: Client {
                pod: obey,
                proxy: obeying_proxy,
            },
            breaking: Client {
                pod: breaking,
                proxy: breaking_proxy,
            },
            backends,
            external,
            cluster_ip,
            manifests,
            agent_url: format!("http://{agent_listen}"),
            agent_listen,
            config,
            agent: None,
            agent_pod: None,
            servers,
            inbound,
            lab,
        };
        if lab.config.agent_at_start {
            lab.start_agent()?;
        }
        Ok(lab)
    }

    pub fn client(&self, side: Side) -> &Client {
        match side {
            Side::Obey => &self.obeying,
            Side::Break => &self.breaking,
        }
    }

    /// The client's sidecar HAProxy.
    pub fn proxy(&self, side: Side) -> &Haproxy {
        &self.client(side).proxy
    }

    /// What the clients' applications dial: the backend's cluster IP, or
    /// for TLS origination the external server's IP in plaintext (the
    /// sidecar encrypts).
    pub fn target_url(&self) -> String {
        match &self.external {
            Some(pod) => pod.url("http", false, EXTERNAL_PORT),
            None => format!("http://{}:{SERVICE_PORT}/", self.cluster_ip),
        }
    }

    /// The application nginx of backend pod `name`, or the external server.
    pub fn server(&self, name: &str) -> Option<&Nginx> {
        self.servers.iter().find(|nginx| nginx.name() == name)
    }

    /// The inbound proxy (mTLS terminator) of backend pod `name`; its access
    /// log has the client proxies' connections.
    pub fn inbound(&self, name: &str) -> Option<&InboundProxy> {
        self.inbound
            .iter()
            .find(|(pod, _)| pod == name)
            .map(|(_, proxy)| proxy)
    }

    /// The check's load from both clients at once, each as its
    /// applications would send it; fails unless every request succeeded.
    /// - load balancer: 400 requests over one kept-alive connection;
    /// - consistent hash: 100;
    /// - max connections: wrk, 16 connections for 5 s, the proxies' pools
    ///   left open;
    /// - max requests per connection: 300 over one kept-alive connection;
    /// - idle timeout: 20 requests, then 8 s of silence;
    /// - outlier detection: 60 requests one after the other;
    /// - TLS origination: 20.
    pub fn send_load(&self) -> Result<()> {
        let url = self.target_url();
        let requests = match self.check {
            PolicyCheck::LoadBalancer => 400,
            PolicyCheck::ConsistentHash => 100,
            PolicyCheck::MaxRequestsPerConnection => 300,
            PolicyCheck::IdleTimeout | PolicyCheck::TlsOrigination => 20,
            PolicyCheck::OutlierDetection => 60,
            PolicyCheck::MaxConnections => {
                let wrk = Wrk::new(&url)
                    .threads(2)
                    .connections(16)
                    .duration(Duration::from_secs(5));
                let runs = Side::BOTH
                    .iter()
                    .map(|side| wrk.spawn(&self.client(*side).pod))
                    .collect::<Result<Vec<_>>>()?;
                for (run, side) in runs.into_iter().zip(Side::BOTH) {
                    let report = run.wait()?;
                    if report.requests == 0 || report.non_2xx_3xx > 0 || report.socket_errors > 0 {
                        return Err(LabError::invalid(
                            "traffic",
                            format!("wrk from {} failed: {report:?}", side.pod_name()),
                        ));
                    }
                }
                return Ok(());
            }
        };
        let mut curl = Curl::new(&url).count(requests);
        if self.check == PolicyCheck::OutlierDetection {
            // Paced, as a client's requests arrive: attempts then fall well
            // after the ejection began, not in the instant an ejection takes
            // to reach a proxy's workers (which is not judged).
            curl = curl.interval(OUTLIER_PACE);
        }
        let runs = Side::BOTH
            .iter()
            .map(|side| curl.spawn(&self.client(*side).pod))
            .collect::<Result<Vec<_>>>()?;
        for (run, side) in runs.into_iter().zip(Side::BOTH) {
            expect_ok(side.pod_name(), requests, &run.wait()?)?;
        }
        if self.check == PolicyCheck::IdleTimeout {
            // Four times the declared idle timeout: a pooled connection
            // still open now has outlived it.
            std::thread::sleep(IDLE);
        }
        Ok(())
    }

    /// Starts `meshdrift run` on the lab's manifests (stopping the one
    /// running, if any).
    /// With [`Inventory::Kubernetes`], installs it from `deploy/kubernetes`
    /// and runs its pod instead.
    pub fn start_agent(&mut self) -> Result<()> {
        self.stop_agent()?;
        if let Some(cluster) = &self.cluster {
            let args = lab_agent_args(&self.config.agent_args);
            let pod = cluster.install_agent(&self.lab, &self.config.meshdrift, &args)?;
            self.agent_url = pod.url.clone();
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

    /// Stops the agent (SIGINT) and returns what it printed.
    pub fn stop_agent(&mut self) -> Result<Option<AgentOutput>> {
        if let Some(pod) = self.agent_pod.take() {
            return pod.stop(Duration::from_secs(30)).map(Some);
        }
        self.agent
            .take()
            .map(|agent| agent.stop(Duration::from_secs(30)))
            .transpose()
    }

    /// The agent's `GET /report`.
    /// The agent's `/metrics` exposition, as text.
    pub fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.agent_url);
        ureq::get(&url)
            .call()
            .and_then(|mut response| response.body_mut().read_to_string())
            .map_err(|e| LabError::Parse {
                what: "the agent's metrics",
                detail: format!("{url}: {e}"),
            })
    }

    pub fn report(&self) -> Result<Value> {
        get_json(&format!("{}/report", self.agent_url), "the agent's report")
    }

    /// Polls the report until `done` says so or `timeout` passes; returns
    /// the last report either way.
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

    /// The report's `policies` row of this lab's check for `side`'s
    /// workload, host, port and subset, if there is one.
    pub fn policy_row<'a>(&self, report: &'a Value, side: Side) -> Option<&'a Value> {
        let check = self.check;
        report["policies"].as_array()?.iter().find(|row| {
            row["source"]["namespace"] == "default"
                && row["source"]["name"] == side.pod_name()
                && row["check"] == check.name()
                && row["host"] == check.host()
                && row["port"] == check.port()
                && match check.subset() {
                    Some(subset) => row["subset"] == subset,
                    None => row["subset"].is_null() || row["subset"] == "",
                }
        })
    }
}

/// The CPUs of the outlier check: the client proxies' and the refusing
/// endpoint's, the first two this process may run on; `None` with one.
fn outlier_cpus() -> Option<(usize, usize)> {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    let mut cpus =
        (0..nix::sched::CpuSet::count()).filter(|&cpu| allowed.is_set(cpu).unwrap_or(false));
    Some((cpus.next()?, cpus.next()?))
}

/// How long the idle-timeout load stays silent after its burst.
pub const IDLE: Duration = Duration::from_secs(8);

/// `side`'s sidecar for `check`: HAProxy as uid 1337 on 15001, speaking
/// Istio mTLS to each endpoint (its pod IP and target port), configured to
/// obey or break the check's field.
fn proxy(
    check: PolicyCheck,
    side: Side,
    backends: &[Pod],
    external: Option<&Pod>,
) -> Result<HaproxyBuilder> {
    let obey = side == Side::Obey;
    let mut builder = Haproxy::builder(PROXY_PORT, ProxyMode::Http).uid(PROXY_UID);
    if check == PolicyCheck::TlsOrigination {
        let pod = external
            .ok_or_else(|| LabError::invalid("traffic policy lab", "no external server"))?;
        let sni = if obey { EXTERNAL_HOST } else { WRONG_SNI };
        return Ok(builder.server(
            Upstream::new(
                EXTERNAL_POD,
                SocketAddr::new(pod.ipv4().into(), EXTERNAL_PORT),
                1,
            )
            .tls(UpstreamTls::simple(sni)),
        ));
    }
    match (check, obey) {
        (PolicyCheck::ConsistentHash, true) => builder = builder.balance(Balance::Source),
        // Idle server connections closed as soon as each response is in.
        (PolicyCheck::IdleTimeout, true) => builder = builder.reuse(false),
        // Ten requests per client connection, and its server connections
        // close with it.
        (PolicyCheck::MaxRequestsPerConnection, true) => {
            builder = builder.requests_per_connection(10)
        }
        // Pooled and left open far longer than the declared 2 s; for
        // maxConnections both pools stay open through the report, as pooled
        // upstream connections in a mesh do.
        (PolicyCheck::IdleTimeout, false) | (PolicyCheck::MaxConnections, _) => {
            builder = builder
                .pool_purge_delay(Duration::from_secs(120))
                .timeout_server(Duration::from_secs(120))
        }
        // Both retry a refused connection elsewhere, as Istio's default
        // retry policy does, so the clients see no error either way. On
        // the CPU the refusing endpoint does not answer on (see
        // `TrafficPolicyLab::start`).
        (PolicyCheck::OutlierDetection, _) => {
            builder = builder.retries(3);
            if let Some((proxies, _)) = outlier_cpus() {
                builder = builder.cpu(proxies);
            }
        }
        _ => {}
    }
    for (i, pod) in backends.iter().enumerate() {
        let weight = match (check, obey, i) {
            (PolicyCheck::LoadBalancer, false, 0) => 90,
            (PolicyCheck::LoadBalancer, false, _) => 10,
            _ => 50,
        };
        let mut upstream = Upstream::new(
            pod.name(),
            SocketAddr::new(pod.ipv4().into(), TARGET_PORT),
            weight,
        )
        .tls(UpstreamTls::istio_http(
            SERVICE_PORT,
            SUBSET,
            HOST,
            side.pod_name(),
        ));
        upstream = match (check, obey) {
            // One connection (and request) at a time per endpoint: two in all.
            (PolicyCheck::MaxConnections, true) => upstream.maxconn(1),
            (PolicyCheck::MaxConnections, false) => upstream.maxconn(100),
            (PolicyCheck::OutlierDetection, true) => upstream.observe(3, Duration::from_secs(60)),
            _ => upstream,
        };
        builder = builder.server(upstream);
    }
    Ok(builder)
}

fn expect_ok(what: &str, count: usize, report: &CurlReport) -> Result<()> {
    if report.count_status(200) == count {
        Ok(())
    } else {
        Err(LabError::invalid(
            "traffic",
            format!(
                "requests from {what} failed: {:?} ({})",
                report.status_counts(),
                report.stderr.trim()
            ),
        ))
    }
}

/// A pod of the mesh, as the manifests describe it: labels, the injected
/// sidecar's status annotation and container, and its IP; and its service
/// account (the API server admits no pod whose account does not exist).
fn mesh_pod(pod: &Pod, labels: &[(&str, &str)], image: &str) -> String {
    let labels: String = labels
        .iter()
        .map(|(key, value)| format!("    {key}: {value}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n{labels}    security.istio.io/tlsMode: istio\n\
         \x20 annotations:\n    sidecar.istio.io/status: '{{\"containers\":[\"istio-proxy\"]}}'\n\
         spec:\n  serviceAccountName: {name}\n  containers:\n    - name: app\n      image: {image}\n    - name: istio-proxy\n      image: istio/proxyv2:1.31.0\n\
         status:\n  phase: Running\n  podIP: {ip}\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: default\n",
        name = pod.name(),
        ip = pod.ipv4(),
    )
}

fn write_manifests(
    dir: &Path,
    check: PolicyCheck,
    cluster_ip: Ipv4Addr,
    clients: &[&Pod],
    backends: &[Pod],
    external: Option<&Pod>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
    let mut workloads = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: default\n  labels:\n    istio-injection: enabled\n",
    );
    for pod in clients {
        workloads.push_str("---\n");
        workloads.push_str(&mesh_pod(
            pod,
            &[("app", pod.name())],
            "curlimages/curl:8.5.0",
        ));
    }
    for pod in backends {
        workloads.push_str("---\n");
        workloads.push_str(&mesh_pod(
            pod,
            &[("app", "backend"), ("version", SUBSET)],
            "nginx:1.25",
        ));
    }
    workloads.push_str(&format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: default\n\
         spec:\n  clusterIP: {cluster_ip}\n  selector:\n    app: backend\n  ports:\n    - name: http\n      port: {SERVICE_PORT}\n      targetPort: {TARGET_PORT}\n"
    ));
    let policy = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: backend\n  namespace: default\n\
         spec:\n  hosts:\n    - backend\n  http:\n    - route:\n        - destination:\n            host: backend\n            subset: {SUBSET}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: backend\n  namespace: default\n\
         spec:\n  host: backend\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n{field}  subsets:\n    - name: {SUBSET}\n      labels:\n        version: {SUBSET}\n\
         ---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\n\
         spec:\n  mtls:\n    mode: STRICT\n",
        field = check.backend_policy(),
    );
    let mut files = vec![("workloads.yaml", workloads), ("policy.yaml", policy)];
    if let Some(pod) = external {
        files.push((
            "external.yaml",
            format!(
                "# A TLS server outside the mesh, known by this entry only.\n\
                 apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api-external\n  namespace: default\n\
                 spec:\n  hosts:\n    - {EXTERNAL_HOST}\n  location: MESH_EXTERNAL\n  resolution: STATIC\n\
                 \x20 ports:\n    - number: {EXTERNAL_PORT}\n      name: https\n      protocol: HTTPS\n\
                 \x20 endpoints:\n    - address: {ip}\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api-external\n  namespace: default\n\
                 spec:\n  host: {EXTERNAL_HOST}\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      sni: {EXTERNAL_HOST}\n",
                ip = pod.ipv4(),
            ),
        ));
    }
    for (name, text) in files {
        let target = dir.join(name);
        std::fs::write(&target, text).map_err(|e| LabError::io("writing", &target, e))?;
    }
    Ok(())
}
