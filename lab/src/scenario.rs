//! The frontend example (`deploy/examples/frontend`) as a running world: a
//! `client` pod whose HAProxy plays the Istio sidecar, `frontend-v1` and
//! `frontend-v2` nginx servers that demand client certificates (8443) and also
//! speak plaintext (8080), a `legacy` pod with no sidecar, and `meshdrift run`
//! judging it all. The demo and the end-to-end drift tests share it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    AgentOutput, AgentProcess, Curl, Haproxy, Lab, Nginx, Pod, ProxyMode, SlowResponses, Upstream,
    UpstreamTls,
    error::{LabError, Result},
    prometheus::{free_loopback_port, get_json},
};

pub const HOST: &str = "frontend.default.svc.cluster.local";
pub const SERVICE_PORT: u16 = 80;
pub const PLAIN_PORT: u16 = 8080;
pub const MTLS_PORT: u16 = 8443;
pub const PROXY_PORT: u16 = 15001;
/// The example's manifests place the pods in this /24; the lab moves them into its own.
const EXAMPLE_PREFIX: &str = "10.213.0.";
/// The example's Service target port, as its manifest writes it.
const EXAMPLE_TARGET_PORT: &str = "targetPort: 8080";
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
    /// Whether the `legacy` pod sends plaintext straight to v2 with each batch.
    pub legacy_plaintext: bool,
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
    /// The target port the Service declares. The example's is the plaintext
    /// port, which the `legacy` pod dials; the proxy's flows name theirs in
    /// the SNI. Flows whose SNI was not seen (opened before the agent
    /// started) are attributed by endpoint, so tests of those declare the
    /// port the proxy dials.
    pub service_target_port: u16,
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
            agent_args: Vec::new(),
            agent_at_start: true,
            protocol: Protocol::Http1,
            slow_v2: None,
            service_target_port: PLAIN_PORT,
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
    /// HTTP/2 in plaintext with prior knowledge (h2c), to port 8080.
    H2c,
}

pub struct Frontend {
    pub lab: Lab,
    pub client: Pod,
    pub v1: Pod,
    pub v2: Pod,
    pub legacy: Pod,
    pub manifests: PathBuf,
    /// `http://127.0.0.1:PORT` of the agent.
    pub agent_url: String,
    pub agent_listen: SocketAddr,
    config: FrontendConfig,
    proxy: Option<Haproxy>,
    agent: Option<AgentProcess>,
    servers: Vec<Nginx>,
}

impl Frontend {
    pub fn start(config: FrontendConfig) -> Result<Self> {
        let lab = Lab::new("frontend")?;
        let client = lab.add_pod_at("client", 10)?;
        let v1 = lab.add_pod_at("frontend-v1", 11)?;
        let v2 = lab.add_pod_at("frontend-v2", 12)?;
        let legacy = lab.add_pod_at("legacy", 13)?;
        let servers = [("v1", &v1), ("v2", &v2)]
            .into_iter()
            .map(|(name, pod)| {
                let mut nginx = Nginx::builder(name)
                    .http(PLAIN_PORT)
                    .tls(MTLS_PORT)
                    .verify_client(true)
                    .dns_name(HOST)
                    .access_log(true)
                    .http2(config.protocol != Protocol::Http1);
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
        let manifests = lab.dir().join("manifests");
        write_manifests(
            &config.example,
            &manifests,
            lab.id(),
            config.service_target_port,
        )?;
        if let Some((w1, w2)) = config.declared_weights {
            write_virtual_service(&manifests, w1, w2)?;
        }
        let agent_listen = free_loopback_port()?;
        let mut frontend = Self {
            lab,
            client,
            v1,
            v2,
            legacy,
            agent_url: format!("http://{agent_listen}"),
            agent_listen,
            manifests,
            config,
            proxy: None,
            agent: None,
            servers,
        };
        if frontend.config.agent_at_start {
            frontend.start_agent()?;
        }
        let weights = frontend.config.proxy_weights;
        frontend.restart_proxy(weights)?;
        Ok(frontend)
    }

    /// Starts `meshdrift run` on the scenario's manifests (stopping the one
    /// running, if any).
    pub fn start_agent(&mut self) -> Result<()> {
        self.stop_agent()?;
        let manifests = self.manifests.display().to_string();
        let listen = self.agent_listen.to_string();
        let mut args: Vec<&str> = vec![
            "run",
            "--manifests",
            &manifests,
            "--listen",
            &listen,
            "--update-interval",
            "1s",
            "--reload-interval",
            "1s",
        ];
        args.extend(self.config.agent_args.iter().map(String::as_str));
        self.agent = Some(AgentProcess::start(
            &self.config.meshdrift,
            &args,
            "agent running",
            Duration::from_secs(60),
        )?);
        Ok(())
    }

    /// (Re)starts the client's proxy with these v1/v2 weights, as a sidecar does
    /// when it receives new configuration. Its pooled connections close.
    pub fn restart_proxy(&mut self, (w1, w2): (u32, u32)) -> Result<()> {
        self.proxy = None;
        let protocol = self.config.protocol;
        let upstream = |subset: &str, pod: &Pod, weight: u32| match protocol {
            Protocol::Http1 => Upstream::new(
                subset,
                SocketAddr::new(pod.ipv4().into(), MTLS_PORT),
                weight,
            )
            .tls(UpstreamTls::istio_http(
                SERVICE_PORT,
                subset,
                HOST,
                "client",
            )),
            Protocol::Http2 => Upstream::new(
                subset,
                SocketAddr::new(pod.ipv4().into(), MTLS_PORT),
                weight,
            )
            .tls(UpstreamTls::istio_h2(SERVICE_PORT, subset, HOST, "client")),
            Protocol::H2c => Upstream::new(
                subset,
                SocketAddr::new(pod.ipv4().into(), PLAIN_PORT),
                weight,
            )
            .h2c(true),
        };
        self.proxy = Some(
            Haproxy::builder(PROXY_PORT, ProxyMode::Http)
                .server(upstream("v1", &self.v1, w1))
                .server(upstream("v2", &self.v2, w2))
                .start(&self.client)?,
        );
        Ok(())
    }

    /// Declares new v1/v2 weights in the manifests the agent watches.
    pub fn declare_weights(&self, w1: u32, w2: u32) -> Result<()> {
        write_virtual_service(&self.manifests, w1, w2)
    }

    pub fn proxy(&self) -> Option<&Haproxy> {
        self.proxy.as_ref()
    }

    /// The v1 and v2 servers (their access logs are the requests they served).
    pub fn servers(&self) -> &[Nginx] {
        &self.servers
    }

    /// Sends `requests` through the client's proxy in batches (and, when
    /// configured, plaintext from the legacy pod to v2 with each batch), calling
    /// `progress(sent, total)` after each batch.
    pub fn send(&self, requests: usize, mut progress: impl FnMut(usize, usize)) -> Result<()> {
        let proxy = self
            .proxy
            .as_ref()
            .ok_or_else(|| LabError::invalid("scenario", "the client's proxy is not running"))?;
        let mut sent = 0;
        while sent < requests {
            let batch = BATCH.min(requests - sent);
            let report = Curl::new(&proxy.url(false))
                .count(batch)
                .run(&self.client)?;
            if report.count_status(200) != batch {
                return Err(LabError::invalid(
                    "traffic",
                    format!(
                        "requests through the proxy failed: {:?}",
                        report.status_counts()
                    ),
                ));
            }
            if self.config.legacy_plaintext {
                let direct = Curl::new(&self.v2.url("http", false, PLAIN_PORT))
                    .count(batch / 5)
                    .run(&self.legacy)?;
                if direct.count_status(200) != batch / 5 {
                    return Err(LabError::invalid(
                        "traffic",
                        format!(
                            "plaintext requests from legacy failed: {:?}",
                            direct.status_counts()
                        ),
                    ));
                }
            }
            sent += batch;
            progress(sent, requests);
        }
        Ok(())
    }

    /// The agent's `GET /report`.
    pub fn report(&self) -> Result<Value> {
        get_json(&format!("{}/report", self.agent_url), "the agent's report")
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

    /// Stops the agent (SIGINT) and returns what it printed.
    pub fn stop_agent(&mut self) -> Result<Option<AgentOutput>> {
        self.agent
            .take()
            .map(|agent| agent.stop(Duration::from_secs(30)))
            .transpose()
    }
}

/// The example's manifests with its pod IPs moved into lab `id`'s subnet, the
/// Service's target port where the proxy really connects, plus the `legacy`
/// pod (no sidecar).
fn write_manifests(example: &Path, dir: &Path, id: u8, target_port: u16) -> Result<()> {
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
        let text = text
            .replace(EXAMPLE_PREFIX, &prefix)
            .replace(EXAMPLE_TARGET_PORT, &format!("targetPort: {target_port}"));
        std::fs::write(&target, text).map_err(|e| LabError::io("writing", &target, e))?;
    }
    let legacy = format!(
        "# A pod without an Istio sidecar: no security.istio.io/tlsMode label.\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: legacy\n  namespace: default\n  labels:\n    app: legacy\n\
         spec:\n  containers:\n    - name: legacy\n      image: curlimages/curl:8.5.0\n\
         status:\n  phase: Running\n  podIP: {prefix}13\n"
    );
    let target = dir.join("legacy.yaml");
    std::fs::write(&target, legacy).map_err(|e| LabError::io("writing", &target, e))
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
