//! HAProxy as the client-side proxy of a pod, standing in for an Envoy
//! sidecar: weighted upstreams, per-request (HTTP) or per-connection (TCP)
//! balancing, and TLS origination with an Istio-style SNI, ALPN and client
//! certificate. Its per-server counters from the stats socket are the ground
//! truth the agent's observations are compared with.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::pod::Pod;
use crate::process::Process;
use crate::ready;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How HAProxy balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Each request picks a server; server connections are pooled and reused.
    Http,
    /// Each client connection picks a server and is relayed as bytes.
    Tcp,
}

/// TLS origination towards one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// SNI to send (e.g. `outbound_.80_.v1_.frontend.default.svc.cluster.local`).
    pub sni: Option<String>,
    /// ALPN protocols to offer, in order.
    pub alpn: Vec<String>,
    /// Present the lab client identity of this name (mTLS); `None` for plain TLS.
    pub client_identity: Option<String>,
    /// Refuse anything older than TLS 1.3.
    pub tls13_only: bool,
}

impl UpstreamTls {
    /// Plain TLS origination, as a DestinationRule's `tls: {mode: SIMPLE,
    /// sni: …}` asks of a sidecar: this SNI, no client certificate, no ALPN
    /// (HTTP/1.1 inside). The server's certificate is not verified.
    pub fn simple(sni: &str) -> Self {
        UpstreamTls {
            sni: Some(sni.to_owned()),
            alpn: Vec::new(),
            client_identity: None,
            tls13_only: false,
        }
    }

    /// What an Istio sidecar sends for an HTTP/1.1 service: SNI
    /// `outbound_.<port>_.<subset>_.<host>`, ALPN `istio-http/1.1, istio,
    /// http/1.1`, and the `client_identity` certificate.
    pub fn istio_http(port: u16, subset: &str, host: &str, client_identity: &str) -> Self {
        UpstreamTls {
            sni: Some(format!("outbound_.{port}_.{subset}_.{host}")),
            alpn: ["istio-http/1.1", "istio", "http/1.1"]
                .map(String::from)
                .to_vec(),
            client_identity: Some(client_identity.to_owned()),
            tls13_only: false,
        }
    }

    /// What an Istio sidecar sends for a TCP service: ALPN `istio-peer-exchange, istio`.
    pub fn istio_tcp(port: u16, subset: &str, host: &str, client_identity: &str) -> Self {
        UpstreamTls {
            sni: Some(format!("outbound_.{port}_.{subset}_.{host}")),
            alpn: ["istio-peer-exchange", "istio"].map(String::from).to_vec(),
            client_identity: Some(client_identity.to_owned()),
            tls13_only: false,
        }
    }

    /// What an Istio sidecar sends for an HTTP/2 (or gRPC) service: ALPN
    /// `istio-h2, istio, h2`.
    pub fn istio_h2(port: u16, subset: &str, host: &str, client_identity: &str) -> Self {
        UpstreamTls {
            alpn: ["istio-h2", "istio", "h2"].map(String::from).to_vec(),
            ..Self::istio_http(port, subset, host, client_identity)
        }
    }

    pub fn tls13_only(mut self, on: bool) -> Self {
        self.tls13_only = on;
        self
    }

    /// Whether the offered ALPN lets the server choose HTTP/2.
    fn offers_h2(&self) -> bool {
        self.alpn.iter().any(|p| p == "h2" || p == "istio-h2")
    }
}

/// One weighted server of the backend.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: Option<UpstreamTls>,
    /// Speak h2c (HTTP/2 with prior knowledge) to a plaintext upstream.
    /// Over TLS the protocol follows the ALPN the server picks.
    pub h2c: bool,
    /// At most this many requests in flight on the server at once (HAProxy
    /// queues the rest); with pooled connections, also at most this many
    /// connections in use to it.
    pub maxconn: Option<u32>,
    /// Send at most this many requests over an already-used connection
    /// (`max-reuse`), so each connection carries at most N + 1 requests.
    /// HAProxy 2.6 enforces it on HTTP/2 server connections only; for
    /// HTTP/1.1 see [`HaproxyBuilder::requests_per_connection`].
    pub max_reuse: Option<u32>,
    /// Take the server out of the balance after consecutive connection
    /// errors ([`Observe`]).
    pub observe: Option<Observe>,
}

/// Passive outlier detection on one server: after `error_limit` consecutive
/// layer-4 errors (a refused or failed connection) HAProxy marks the server
/// down and stops dialing it for `ejection`.
///
/// HAProxy only acts on what it observes when health checks are on, and a
/// health check is a connection of its own: this one dials a listener of the
/// proxy itself on loopback (never the server), succeeds at once, and then
/// only every `ejection` once the server is down (`fastinter`, `downinter`;
/// `inter` is an hour), so the server comes back after `ejection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observe {
    pub error_limit: u32,
    pub ejection: Duration,
}

/// How the backend picks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// In turn, by weight (`balance roundrobin`).
    #[default]
    RoundRobin,
    /// By a hash of the client's source address (`balance source`): one
    /// client always reaches the same server.
    Source,
    /// The server with the fewest requests in flight (`balance leastconn`).
    LeastConn,
}

impl Balance {
    fn keyword(self) -> &'static str {
        match self {
            Balance::RoundRobin => "roundrobin",
            Balance::Source => "source",
            Balance::LeastConn => "leastconn",
        }
    }
}

/// The loopback port the proxy's own health listener takes when a server
/// has [`Observe`]: Istio's sidecar health port, which its interception
/// rules leave alone.
pub const HEALTH_PORT: u16 = 15021;

impl Upstream {
    pub fn new(name: &str, addr: SocketAddr, weight: u32) -> Self {
        Upstream {
            name: name.to_owned(),
            addr,
            weight,
            tls: None,
            h2c: false,
            maxconn: None,
            max_reuse: None,
            observe: None,
        }
    }

    /// See [`Upstream::maxconn`](Upstream#structfield.maxconn).
    pub fn maxconn(mut self, n: u32) -> Self {
        self.maxconn = Some(n.max(1));
        self
    }

    /// See [`Upstream::max_reuse`](Upstream#structfield.max_reuse).
    pub fn max_reuse(mut self, n: u32) -> Self {
        self.max_reuse = Some(n);
        self
    }

    /// Mark the server down after `error_limit` consecutive connection
    /// errors, for `ejection` (see [`Observe`]).
    pub fn observe(mut self, error_limit: u32, ejection: Duration) -> Self {
        self.observe = Some(Observe {
            error_limit: error_limit.max(1),
            ejection: ejection.max(Duration::from_millis(1)),
        });
        self
    }

    pub fn h2c(mut self, on: bool) -> Self {
        self.h2c = on;
        self
    }

    pub fn tls(mut self, tls: UpstreamTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// How to configure HAProxy; see [`Haproxy::builder`].
#[derive(Debug, Clone)]
pub struct HaproxyBuilder {
    port: u16,
    mode: ProxyMode,
    servers: Vec<Upstream>,
    threads: u32,
    maxconn: u32,
    reuse: bool,
    uid: Option<u32>,
    balance: Balance,
    retries: Option<u32>,
    pool_purge_delay: Option<Duration>,
    timeout_server: Duration,
    requests_per_connection: Option<u32>,
    cpu: Option<usize>,
}

/// A running HAProxy in a pod; stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    process: Process,
    pod: Pod,
    port: u16,
    mode: ProxyMode,
    dir: PathBuf,
    socket: PathBuf,
    servers: Vec<Upstream>,
}

/// How long a server may stay silent, by default; also how long an idle
/// pooled connection may stay open.
const DEFAULT_TIMEOUT_SERVER: Duration = Duration::from_secs(120);

/// The stats socket path must fit in sockaddr_un (108 bytes).
const SUN_PATH_MAX: usize = 107;

impl Haproxy {
    /// A proxy listening on `port` (IPv4 and IPv6) in `mode`.
    pub fn builder(port: u16, mode: ProxyMode) -> HaproxyBuilder {
        HaproxyBuilder {
            port,
            mode,
            servers: Vec::new(),
            threads: 1,
            maxconn: 10_000,
            reuse: true,
            uid: None,
            balance: Balance::default(),
            retries: None,
            pool_purge_delay: None,
            timeout_server: DEFAULT_TIMEOUT_SERVER,
            requests_per_connection: None,
            cpu: None,
        }
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> ProxyMode {
        self.mode
    }

    pub fn servers(&self) -> &[Upstream] {
        &self.servers
    }

    /// `http://<pod ip>:<port>/` — what a client in another pod (or this
    /// one) sends requests to.
    pub fn url(&self, v6: bool) -> String {
        self.pod.url("http", v6, self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Sends one command to the admin socket and returns the answer.
    pub fn admin(&self, command: &str) -> Result<String> {
        let io = |e| LabError::io("talking to HAProxy stats socket", &self.socket, e);
        let mut stream = UnixStream::connect(&self.socket).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(io)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(io)?;
        Ok(answer)
    }

    /// `show stat`, parsed.
    pub fn stats(&self) -> Result<HaproxyStats> {
        HaproxyStats::parse(&self.admin("show stat")?)
    }

    /// `show servers conn be`, parsed: each server's pooled connections.
    pub fn connections(&self) -> Result<Vec<ServerConnections>> {
        ServerConnections::parse(&self.admin("show servers conn be")?)
    }
}

/// One server's row of `show servers conn`: connections in use and idle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConnections {
    /// The server's name.
    pub name: String,
    /// Connections carrying a request now (`used_cur`).
    pub used_cur: u64,
    /// The most connections in use at once so far (`used_max`).
    pub used_max: u64,
    /// Open connections waiting in the pool for the next request (`idle_cur`).
    pub idle_cur: u64,
}

impl ServerConnections {
    /// Parses `show servers conn`; columns are found by header name.
    pub fn parse(text: &str) -> Result<Vec<ServerConnections>> {
        let mut lines = text.lines();
        let header = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .ok_or_else(|| {
                LabError::parse(
                    "HAProxy show servers conn",
                    format!("no `# bkname/svname …` header in {text:?}"),
                )
            })?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        let index = |name: &'static str| {
            columns.iter().position(|c| *c == name).ok_or_else(|| {
                LabError::parse("HAProxy show servers conn", format!("no column {name}"))
            })
        };
        let (name, used_cur, used_max, idle_cur) = (
            index("bkname/svname")?,
            index("used_cur")?,
            index("used_max")?,
            index("idle_cur")?,
        );
        let mut rows = Vec::new();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| fields.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            let server = fields.get(name).copied().unwrap_or_default();
            rows.push(ServerConnections {
                name: server
                    .split_once('/')
                    .map_or(server, |(_, sv)| sv)
                    .to_owned(),
                used_cur: num(used_cur),
                used_max: num(used_max),
                idle_cur: num(idle_cur),
            });
        }
        Ok(rows)
    }
}

impl HaproxyBuilder {
    pub fn server(mut self, upstream: Upstream) -> Self {
        self.servers.push(upstream);
        self
    }

    /// HAProxy threads (default 1; idle server connections are per thread, so
    /// more threads means more upstream connections).
    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Run every thread on CPU `cpu` (`cpu-map`).
    pub fn cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// In HTTP mode, pool server connections (the default, like Envoy) or
    /// open a new one for every request (`reuse(false)`), so each request
    /// pays a new upstream handshake.
    pub fn reuse(mut self, on: bool) -> Self {
        self.reuse = on;
        self
    }

    pub fn maxconn(mut self, n: u32) -> Self {
        self.maxconn = n.max(1);
        self
    }

    /// How the backend picks a server (default round robin).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Retry a failed connection up to `n` times, each retry on another
    /// server (`retries n` + `option redispatch 1`), as Istio's default
    /// retry policy does on connect failures: the client sees no error.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }

    /// Keep idle pooled server connections this long before HAProxy starts
    /// closing them (`pool-purge-delay`, 5 s by default in HAProxy).
    pub fn pool_purge_delay(mut self, delay: Duration) -> Self {
        self.pool_purge_delay = Some(delay);
        self
    }

    /// No server connection carries more than `n` requests. HAProxy 2.6
    /// leaves [`Upstream::max_reuse`](Upstream#structfield.max_reuse) to the
    /// lower layers and only its HTTP/2 connections respect it (HTTP/1.1
    /// ones carry on regardless), so instead each server connection belongs
    /// to one client connection (`http-reuse never`, which overrides
    /// [`HaproxyBuilder::reuse`]) and the proxy closes the client connection
    /// (`Connection: close`) with its `n`th response: the server
    /// connections close with it.
    pub fn requests_per_connection(mut self, n: u32) -> Self {
        self.requests_per_connection = Some(n.max(1));
        self
    }

    /// `timeout server` (default 120 s): also the longest an idle pooled
    /// connection stays open.
    pub fn timeout_server(mut self, timeout: Duration) -> Self {
        self.timeout_server = timeout.max(Duration::from_millis(1));
        self
    }

    /// Writes the configuration, validates it with `haproxy -c`, starts
    /// HAProxy in the foreground inside `pod`, waits until it listens.
    /// Run as this user (and group) once listening, as an Istio sidecar runs
    /// as 1337: the connections it opens belong to that user, which the
    /// pod's interception rules let through.
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    pub fn start(self, pod: &Pod) -> Result<Haproxy> {
        if self.servers.is_empty() {
            return Err(LabError::invalid("haproxy", "no servers"));
        }
        for s in &self.servers {
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(LabError::invalid(
                    "haproxy server name",
                    format!("{:?}", s.name),
                ));
            }
        }
        let lab = pod.lab()?;
        let dir = lab.instance_dir("haproxy", pod.name())?;
        let socket = dir.join("haproxy.sock");
        if socket.as_os_str().len() > SUN_PATH_MAX {
            return Err(LabError::invalid(
                "stats socket path",
                format!("{} is too long", socket.display()),
            ));
        }
        let mut certs = Vec::new();
        for s in &self.servers {
            let bundle = match s.tls.as_ref().and_then(|t| t.client_identity.as_deref()) {
                Some(name) => Some(lab.client_identity(name)?.bundle),
                None => None,
            };
            certs.push(bundle);
        }
        let conf = self.render(&socket, &certs, effective_maxconn(self.maxconn));
        let conf_path = dir.join("haproxy.cfg");
        std::fs::write(&conf_path, conf).map_err(|e| LabError::io("writing", &conf_path, e))?;
        cmd::run(
            Command::new("haproxy")
                .arg("-c")
                .arg("-q")
                .arg("-f")
                .arg(&conf_path),
        )
        .map_err(|e| match e {
            LabError::Command { stderr, .. } => LabError::Config {
                program: "haproxy",
                path: conf_path.clone(),
                stderr,
            },
            other => other,
        })?;
        let mut run = Command::new("haproxy");
        // -db: stay in the foreground, so the lab owns the process.
        run.arg("-db").arg("-f").arg(&conf_path);
        let mut process = pod.spawn(run)?;
        ready::wait_listening("haproxy", &mut process, &[self.port], READY_TIMEOUT, None)?;
        wait_for_socket(&socket, &mut process)?;
        tracing::info!(pod = pod.name(), port = self.port, mode = ?self.mode, "haproxy ready");
        Ok(Haproxy {
            process,
            pod: pod.clone(),
            port: self.port,
            mode: self.mode,
            dir,
            socket,
            servers: self.servers,
        })
    }

    fn render(&self, socket: &Path, certs: &[Option<PathBuf>], maxconn: u32) -> String {
        let mut c = String::new();
        let _ = write!(
            c,
            "global\n    stats socket {} level admin\n    nbthread {}\n    maxconn {}\n",
            socket.display(),
            self.threads,
            maxconn
        );
        if let Some(uid) = self.uid {
            let _ = writeln!(c, "    uid {uid}\n    gid {uid}");
        }
        if let Some(cpu) = self.cpu {
            let _ = writeln!(c, "    cpu-map 1/all {cpu}");
        }
        let _ = writeln!(c);
        let mode = match self.mode {
            ProxyMode::Http => "http",
            ProxyMode::Tcp => "tcp",
        };
        let _ = writeln!(
            c,
            "defaults\n    mode {mode}\n    timeout connect 5s\n    timeout client 120s\n    timeout server {}ms\n    timeout http-keep-alive 120s\n",
            self.timeout_server.as_millis()
        );
        let _ = writeln!(
            c,
            "frontend fe\n    bind :{port}\n    bind :::{port} v6only\n    default_backend be\n",
            port = self.port
        );
        if self.servers.iter().any(|s| s.observe.is_some()) {
            // The target of the health checks `observe` needs: answered by
            // the proxy itself, so no check ever dials a server.
            let _ = writeln!(
                c,
                "frontend health\n    mode http\n    bind 127.0.0.1:{HEALTH_PORT}\n    http-request return status 200\n"
            );
        }
        let _ = writeln!(c, "backend be\n    balance {}", self.balance.keyword());
        if let Some(n) = self.retries {
            let _ = writeln!(c, "    retries {n}\n    option redispatch 1");
        }
        if let (ProxyMode::Http, Some(n)) = (self.mode, self.requests_per_connection) {
            let _ = writeln!(
                c,
                "    http-reuse never\n    http-request set-var(sess.requests) var(sess.requests,0),add(1)\n    http-after-response set-header Connection close if {{ var(sess.requests) -m int ge {n} }}"
            );
        } else if self.mode == ProxyMode::Http && self.reuse {
            // Like Envoy: any idle pooled connection to the chosen server may
            // carry the next request, whichever client sent it.
            let _ = writeln!(c, "    http-reuse always");
        } else if self.mode == ProxyMode::Http {
            let _ = writeln!(c, "    http-reuse never\n    option http-server-close");
        }
        // No `check` unless a server observes errors, and then against the
        // proxy's own health listener: probes of servers would be
        // connections the agent counts.
        for (s, cert) in self.servers.iter().zip(certs) {
            let addr = match s.addr {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            };
            let _ = write!(c, "    server {} {} weight {}", s.name, addr, s.weight);
            if let Some(tls) = &s.tls {
                let _ = write!(c, " ssl verify none");
                if let Some(cert) = cert {
                    let _ = write!(c, " crt {}", cert.display());
                }
                if let Some(sni) = &tls.sni {
                    let _ = write!(c, " sni str({sni})");
                }
                if !tls.alpn.is_empty() {
                    let _ = write!(c, " alpn {}", tls.alpn.join(","));
                    if self.mode == ProxyMode::Http && !tls.offers_h2() {
                        // HTTP/1 whatever the server picks: said up front,
                        // HAProxy installs its HTTP/1 layer before the
                        // connect instead of after the handshake. Without
                        // one, HAProxy 2.6 before 2.6.17 misses a refused
                        // connect whose RST comes in after the first
                        // handshake attempt, and the request waits out
                        // `timeout connect` (5 s) instead of going to
                        // another server at once (fixed upstream by
                        // "BUG/MEDIUM: connection: report connection errors
                        // even when no mux is installed").
                        let _ = write!(c, " proto h1");
                    }
                }
                if tls.tls13_only {
                    let _ = write!(c, " ssl-min-ver TLSv1.3");
                }
            } else if s.h2c {
                let _ = write!(c, " proto h2");
            }
            if let Some(n) = s.maxconn {
                let _ = write!(c, " maxconn {n}");
            }
            if let Some(n) = s.max_reuse {
                let _ = write!(c, " max-reuse {n}");
            }
            if let Some(delay) = self.pool_purge_delay {
                let _ = write!(c, " pool-purge-delay {}ms", delay.as_millis());
            }
            if let Some(observe) = &s.observe {
                let ejection = observe.ejection.as_millis();
                let _ = write!(
                    c,
                    " check addr 127.0.0.1 port {HEALTH_PORT} inter 1h fastinter {ejection}ms downinter {ejection}ms rise 1 fall 1 observe layer4 error-limit {} on-error mark-down",
                    observe.error_limit
                );
            }
            let _ = writeln!(c);
        }
        c
    }
}

/// HAProxy needs about two descriptors per connection and refuses to start
/// when it cannot raise its limit that far, so stay under the hard limit.
fn effective_maxconn(wanted: u32) -> u32 {
    let hard = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if hard != RLIM_INFINITY => hard,
        _ => return wanted,
    };
    let fit = u32::try_from(hard.saturating_sub(100) / 2).unwrap_or(u32::MAX);
    wanted.min(fit.max(1))
}

fn wait_for_socket(socket: &Path, process: &mut Process) -> Result<()> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    loop {
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline || process.try_status().is_some() {
            return Err(LabError::NotReady {
                what: format!("haproxy stats socket {}", socket.display()),
                pod: process.pod().to_owned(),
                timeout: READY_TIMEOUT,
                detail: process.stderr(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(3));
    }
}

/// Counters of one `show stat` row (a server, or a backend/frontend total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// `pxname`: the proxy (backend or frontend) name.
    pub proxy: String,
    /// `svname`: server name, or `BACKEND` / `FRONTEND`.
    pub name: String,
    pub status: String,
    pub weight: u64,
    /// Requests (HTTP mode) or connections (TCP mode) in flight now.
    pub scur: u64,
    /// The most in flight at once so far.
    pub smax: u64,
    /// Requests (HTTP mode) or connections (TCP mode) handled, in total.
    pub stot: u64,
    /// Upstream connections HAProxy opened.
    pub connect: u64,
    /// Requests sent over an already-open upstream connection.
    pub reuse: u64,
    pub bin: u64,
    pub bout: u64,
    pub hrsp_1xx: u64,
    pub hrsp_2xx: u64,
    pub hrsp_3xx: u64,
    pub hrsp_4xx: u64,
    pub hrsp_5xx: u64,
    pub hrsp_other: u64,
    /// Connection errors (`econ`) and response errors (`eresp`).
    pub econ: u64,
    pub eresp: u64,
    /// Connection attempts retried on the same server (`wretr`) and on
    /// another one (`wredis`).
    pub wretr: u64,
    pub wredis: u64,
    /// The last health check's result (`check_status`, e.g. `L4OK`, or
    /// `HANA` when observed errors marked the server down).
    pub check_status: String,
}

impl ServerStats {
    fn add(&mut self, o: &ServerStats) {
        self.scur += o.scur;
        self.stot += o.stot;
        self.connect += o.connect;
        self.reuse += o.reuse;
        self.bin += o.bin;
        self.bout += o.bout;
        self.hrsp_1xx += o.hrsp_1xx;
        self.hrsp_2xx += o.hrsp_2xx;
        self.hrsp_3xx += o.hrsp_3xx;
        self.hrsp_4xx += o.hrsp_4xx;
        self.hrsp_5xx += o.hrsp_5xx;
        self.hrsp_other += o.hrsp_other;
        self.econ += o.econ;
        self.eresp += o.eresp;
        self.wretr += o.wretr;
        self.wredis += o.wredis;
        self.smax += o.smax;
    }
}

/// `show stat` of the proxy: the servers of backend `be` and the totals.
#[derive(Debug, Clone, Default)]
pub struct HaproxyStats {
    /// Rows of real servers, in configuration order.
    pub servers: Vec<ServerStats>,
    /// The `BACKEND` row of the backend.
    pub backend: Option<ServerStats>,
    /// The `FRONTEND` row.
    pub frontend: Option<ServerStats>,
}

impl HaproxyStats {
    /// Parses `show stat` CSV. Columns are found by header name: their
    /// positions differ between HAProxy versions.
    pub fn parse(csv: &str) -> Result<HaproxyStats> {
        let mut lines = csv.lines();
        let header = lines
            .next()
            .and_then(|l| l.strip_prefix("# "))
            .ok_or_else(|| {
                LabError::parse(
                    "HAProxy show stat",
                    format!("no `# pxname,…` header in {csv:?}"),
                )
            })?;
        let columns: Vec<&str> = header.split(',').collect();
        let index = |name: &str| columns.iter().position(|c| *c == name);
        let required = |name: &'static str| {
            index(name)
                .ok_or_else(|| LabError::parse("HAProxy show stat", format!("no column {name}")))
        };
        let (px, sv) = (required("pxname")?, required("svname")?);
        let mut stats = HaproxyStats::default();
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            let text = |i: Option<usize>| {
                i.and_then(|i| fields.get(i))
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            };
            // Empty cells mean "not applicable": count them as zero.
            let num = |name: &str| {
                index(name)
                    .and_then(|i| fields.get(i))
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let row = ServerStats {
                proxy: text(Some(px)),
                name: text(Some(sv)),
                status: text(index("status")),
                weight: num("weight"),
                scur: num("scur"),
                smax: num("smax"),
                stot: num("stot"),
                connect: num("connect"),
                reuse: num("reuse"),
                bin: num("bin"),
                bout: num("bout"),
                hrsp_1xx: num("hrsp_1xx"),
                hrsp_2xx: num("hrsp_2xx"),
                hrsp_3xx: num("hrsp_3xx"),
                hrsp_4xx: num("hrsp_4xx"),
                hrsp_5xx: num("hrsp_5xx"),
                hrsp_other: num("hrsp_other"),
                econ: num("econ"),
                eresp: num("eresp"),
                wretr: num("wretr"),
                wredis: num("wredis"),
                check_status: text(index("check_status")),
            };
            match (row.proxy.as_str(), row.name.as_str()) {
                ("fe", "FRONTEND") => stats.frontend = Some(row),
                ("be", "BACKEND") => stats.backend = Some(row),
                ("be", _) => stats.servers.push(row),
                _ => {}
            }
        }
        Ok(stats)
    }

    /// The row of server `name`.
    pub fn server(&self, name: &str) -> Option<&ServerStats> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// The servers' counters summed (name `TOTAL`).
    pub fn total(&self) -> ServerStats {
        let mut total = ServerStats {
            proxy: "be".into(),
            name: "TOTAL".into(),
            ..ServerStats::default()
        };
        for s in &self.servers {
            total.add(s);
            total.weight += s.weight;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_by_header_name() {
        let csv = "# pxname,svname,qcur,scur,stot,bin,bout,status,weight,connect,reuse,hrsp_2xx,hrsp_5xx,\n\
fe,FRONTEND,,1,200,100,200,OPEN,,,,200,0,\n\
be,v1,0,0,160,1,2,UP,80,1,159,160,0,\n\
be,v2,0,0,40,1,2,UP,20,1,39,40,,\n\
be,BACKEND,0,0,200,1,2,UP,100,2,198,200,0,\n";
        let stats = HaproxyStats::parse(csv).expect("parses");
        let v1 = stats.server("v1").expect("v1");
        assert_eq!(
            (v1.stot, v1.connect, v1.reuse, v1.weight, v1.hrsp_2xx),
            (160, 1, 159, 80, 160)
        );
        assert_eq!(stats.server("v2").map(|s| s.hrsp_5xx), Some(0));
        assert_eq!(stats.total().stot, 200);
        assert_eq!(stats.backend.as_ref().map(|b| b.connect), Some(2));
        assert_eq!(stats.frontend.as_ref().map(|f| f.stot), Some(200));
    }

    fn server_lines(builder: &HaproxyBuilder) -> Vec<String> {
        let certs = vec![None; builder.servers.len()];
        builder
            .render(Path::new("/run/haproxy.sock"), &certs, 100)
            .lines()
            .filter(|line| line.trim_start().starts_with("server "))
            .map(str::to_owned)
            .collect()
    }

    /// The outlier check's refused dials: a server the client proxy may
    /// only speak HTTP/1 to has its HTTP/1 layer from the connect on, so a
    /// refused connect is noticed however late its RST arrives.
    #[test]
    fn http1_tls_servers_pin_the_protocol_before_the_handshake() {
        let addr: SocketAddr = "10.213.1.23:8080".parse().unwrap();
        let host = "backend.default.svc.cluster.local";
        let builder = Haproxy::builder(15001, ProxyMode::Http)
            .server(
                Upstream::new("http1", addr, 50)
                    .tls(UpstreamTls::istio_http(80, "v1", host, "client")),
            )
            .server(
                Upstream::new("h2", addr, 50).tls(UpstreamTls::istio_h2(80, "v1", host, "client")),
            )
            .server(Upstream::new("no-alpn", addr, 50).tls(UpstreamTls::simple(host)));
        let lines = server_lines(&builder);
        assert!(
            lines[0].contains(" alpn istio-http/1.1,istio,http/1.1 proto h1"),
            "{lines:#?}"
        );
        // The server's ALPN choice decides these: nothing is pinned.
        assert!(!lines[1].contains(" proto "), "{lines:#?}");
        assert!(!lines[2].contains(" proto "), "{lines:#?}");
        let tcp = Haproxy::builder(15001, ProxyMode::Tcp).server(
            Upstream::new("tcp", addr, 50).tls(UpstreamTls::istio_tcp(80, "v1", host, "client")),
        );
        assert!(!server_lines(&tcp)[0].contains(" proto "));
    }

    #[test]
    fn rejects_headerless_output() {
        assert!(HaproxyStats::parse("Unknown command\n").is_err());
    }
}
