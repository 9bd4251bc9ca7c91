//! nginx as a backend "pod": plaintext HTTP and/or TLS, optionally checking
//! client certificates (what an Istio sidecar in STRICT mode would demand).
//! Every response is the server's name, so a client can tell who served it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::cmd;
use crate::error::{LabError, Result};
use crate::pod::Pod;
use crate::process::Process;
use crate::ready;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How to configure an nginx server; see [`Nginx::builder`].
#[derive(Debug, Clone)]
pub struct NginxBuilder {
    name: String,
    http_ports: Vec<u16>,
    tls_ports: Vec<u16>,
    verify_client: bool,
    workers: u32,
    dns_names: Vec<String>,
    access_log: bool,
    bulk_bytes: Option<u64>,
    http2: bool,
    slow: Option<SlowResponses>,
}

/// Responses padded to `bytes`, sent at `bytes_per_sec` when set: a backend
/// that takes longer to answer, so a multiplexing client keeps more requests
/// in flight on its connections to it. The same padding without a rate is
/// its fast twin, so the two differ in latency only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowResponses {
    pub bytes: u64,
    pub bytes_per_sec: Option<u64>,
}

/// A running nginx in a pod; stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    process: Process,
    pod: Pod,
    name: String,
    dir: PathBuf,
    http_ports: Vec<u16>,
    tls_ports: Vec<u16>,
}

impl Nginx {
    /// `name` is what every response says (`<name>\n`), e.g. `"v1"`.
    pub fn builder(name: &str) -> NginxBuilder {
        NginxBuilder {
            name: name.to_owned(),
            http_ports: Vec::new(),
            tls_ports: Vec::new(),
            verify_client: false,
            workers: 1,
            dns_names: Vec::new(),
            access_log: false,
            bulk_bytes: None,
            http2: false,
            slow: None,
        }
    }

    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The body every request gets.
    pub fn body(&self) -> String {
        format!("{}\n", self.name)
    }

    pub fn http_ports(&self) -> &[u16] {
        &self.http_ports
    }

    pub fn tls_ports(&self) -> &[u16] {
        &self.tls_ports
    }

    /// Configuration, logs and pid file live here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Access log lines (with [`NginxBuilder::access_log`]): `client-ip
    /// client-port server-port tls-version sni=… alpn=… client="subject DN"
    /// connection-serial request-number-on-connection "request" status
    /// log-time request-time` (times in seconds, millisecond resolution).
    pub fn access_log(&self) -> Vec<String> {
        crate::process::read_lossy(&self.dir.join("access.log"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Requests per client connection (client address and port), from the
    /// access log: the server's own view of which connections carried how
    /// many requests. Needs [`NginxBuilder::access_log`].
    pub fn requests_by_connection(&self) -> Result<BTreeMap<SocketAddr, u64>> {
        let mut by_connection = BTreeMap::new();
        for line in self.access_log() {
            let mut fields = line.split_whitespace();
            let addr = fields
                .next()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .zip(fields.next().and_then(|port| port.parse::<u16>().ok()))
                .map(|(ip, port)| SocketAddr::new(ip, port))
                .ok_or_else(|| LabError::parse("nginx access log line", line.clone()))?;
            *by_connection.entry(addr).or_default() += 1;
        }
        Ok(by_connection)
    }

    /// When each logged request began, in Unix milliseconds: the log time
    /// less the request time (nginx counts it from the request's first byte).
    /// Needs [`NginxBuilder::access_log`].
    pub fn request_starts_ms(&self) -> Result<Vec<u64>> {
        self.access_log()
            .iter()
            .map(|line| {
                let mut fields = line.rsplit(' ');
                let request_time = fields.next().and_then(|t| t.parse::<f64>().ok());
                let logged = fields.next().and_then(|t| t.parse::<f64>().ok());
                match (logged, request_time) {
                    (Some(logged), Some(took)) => Ok(((logged - took) * 1000.0).round() as u64),
                    _ => Err(LabError::parse("nginx access log line", line.clone())),
                }
            })
            .collect()
    }

    pub fn error_log(&self) -> String {
        crate::process::read_lossy(&self.dir.join("error.log"))
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Graceful stop (SIGQUIT lets workers finish open requests).
    pub fn stop(mut self) {
        self.process.signal(Signal::SIGQUIT);
        let _ = self.process.wait_timeout(Duration::from_secs(5));
    }
}

impl NginxBuilder {
    /// Listen for plaintext HTTP on `port` (IPv4 and IPv6).
    pub fn http(mut self, port: u16) -> Self {
        self.http_ports.push(port);
        self
    }

    /// Listen for TLS on `port` (IPv4 and IPv6), with the pod's server
    /// identity from the lab CA.
    pub fn tls(mut self, port: u16) -> Self {
        self.tls_ports.push(port);
        self
    }

    /// Require a client certificate signed by the lab CA on TLS ports (mTLS).
    pub fn verify_client(mut self, on: bool) -> Self {
        self.verify_client = on;
        self
    }

    /// Worker processes (default 1).
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Extra DNS names for the server certificate (besides the pod name).
    pub fn dns_name(mut self, name: &str) -> Self {
        self.dns_names.push(name.to_owned());
        self
    }

    /// Write an access log to the instance directory (off by default: it
    /// costs throughput in benchmarks).
    /// Also serve `/bulk`: a file of `bytes` zero bytes, for throughput runs.
    pub fn bulk(mut self, bytes: u64) -> Self {
        self.bulk_bytes = Some(bytes);
        self
    }

    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// Speak HTTP/2 on every port: h2 over TLS (ALPN), h2c with prior
    /// knowledge on plaintext ports.
    pub fn http2(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Answer slowly (see [`SlowResponses`]).
    pub fn slow(mut self, slow: SlowResponses) -> Self {
        self.slow = Some(slow);
        self
    }

    /// Writes the configuration, checks it with `nginx -t`, starts nginx in
    /// the foreground inside `pod` and waits until every port listens.
    pub fn start(self, pod: &Pod) -> Result<Nginx> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(LabError::invalid(
                "nginx name",
                format!("{:?} (use a-z, 0-9, '-', '_', '.')", self.name),
            ));
        }
        if self.http_ports.is_empty() && self.tls_ports.is_empty() {
            return Err(LabError::invalid(
                "nginx",
                "no port to listen on (call .http() or .tls())",
            ));
        }
        let lab = pod.lab()?;
        let dir = lab.instance_dir("nginx", pod.name())?;
        let tls = if self.tls_ports.is_empty() {
            None
        } else {
            let dns: Vec<&str> = self.dns_names.iter().map(String::as_str).collect();
            let identity = pod.server_identity(&dns)?;
            Some((identity, lab.ca()?.cert))
        };
        if let Some(slow) = self.slow {
            let www = dir.join("www");
            std::fs::create_dir_all(&www).map_err(|e| LabError::io("creating", &www, e))?;
            let file = www.join("slow");
            let mut body = format!("{}\n", self.name).into_bytes();
            body.resize(
                usize::try_from(slow.bytes)
                    .unwrap_or(usize::MAX)
                    .max(body.len()),
                b'.',
            );
            std::fs::write(&file, body).map_err(|e| LabError::io("writing", &file, e))?;
        }
        if let Some(bytes) = self.bulk_bytes {
            let www = dir.join("www");
            std::fs::create_dir_all(&www).map_err(|e| LabError::io("creating", &www, e))?;
            let file = www.join("bulk");
            // Sparse: no disk written, and reads (sendfile) are served from
            // the zero page rather than the disk.
            std::fs::File::create(&file)
                .and_then(|f| f.set_len(bytes))
                .map_err(|e| LabError::io("creating", &file, e))?;
        }
        let conf = self.render(
            &dir,
            tls.as_ref()
                .map(|(id, ca)| (id.cert.as_path(), id.key.as_path(), ca.as_path())),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| LabError::io("writing", &conf_path, e))?;

        let error_log = dir.join("error.log");
        let base = |cmd: &mut Command| {
            cmd.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(&error_log)
                .arg("-c")
                .arg(&conf_path);
        };
        let mut check = Command::new("nginx");
        base(&mut check);
        check.arg("-t").arg("-q");
        cmd::run(&mut check).map_err(|e| match e {
            LabError::Command { stderr, .. } => LabError::Config {
                program: "nginx",
                path: conf_path.clone(),
                stderr,
            },
            other => other,
        })?;

        let mut run = Command::new("nginx");
        base(&mut run);
        let mut process = pod.spawn(run)?;
        let ports: Vec<u16> = self
            .http_ports
            .iter()
            .chain(&self.tls_ports)
            .copied()
            .collect();
        ready::wait_listening(
            &format!("nginx {}", self.name),
            &mut process,
            &ports,
            READY_TIMEOUT,
            Some(&error_log),
        )?;
        tracing::info!(pod = pod.name(), name = %self.name, ?ports, "nginx ready");
        Ok(Nginx {
            process,
            pod: pod.clone(),
            name: self.name,
            dir,
            http_ports: self.http_ports,
            tls_ports: self.tls_ports,
        })
    }

    fn render(&self, dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> String {
        let d = dir.display();
        let mut c = String::new();
        // `user root` because the whole lab runs as root and the workers must
        // write the temp paths in the lab directory.
        let _ = writeln!(
            c,
            "user root;\nworker_processes {};\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n",
            self.workers
        );
        let _ = writeln!(c, "events {{\n    worker_connections 4096;\n}}\n");
        let _ = writeln!(c, "http {{");
        if self.access_log {
            // What the server saw of the client's TLS: the SNI and ALPN the
            // proxy chose and the client identity it presented.
            let _ = writeln!(
                c,
                "    log_format lab '$remote_addr $remote_port $server_port $ssl_protocol sni=$ssl_server_name alpn=$ssl_alpn_protocol client=\"$ssl_client_s_dn\" $connection $connection_requests \"$request\" $status $msec $request_time';"
            );
            let _ = writeln!(c, "    access_log {d}/access.log lab;");
        } else {
            let _ = writeln!(c, "    access_log off;");
        }
        for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            let _ = writeln!(c, "    {kind}_temp_path {d}/tmp-{kind};");
        }
        // Clients and proxies keep connections for the whole test: pooled
        // connections are what the agent must follow.
        let _ = writeln!(
            c,
            "    sendfile on;\n    keepalive_requests 1000000;\n    keepalive_timeout 300s;\n    default_type text/plain;"
        );
        let _ = writeln!(c, "    server {{");
        let h2 = if self.http2 { " http2" } else { "" };
        for port in &self.http_ports {
            let _ = writeln!(
                c,
                "        listen {port}{h2};\n        listen [::]:{port}{h2};"
            );
        }
        if let Some((cert, key, ca)) = tls {
            for port in &self.tls_ports {
                let _ = writeln!(
                    c,
                    "        listen {port} ssl{h2};\n        listen [::]:{port} ssl{h2};"
                );
            }
            let _ = writeln!(
                c,
                "        ssl_certificate {};\n        ssl_certificate_key {};",
                cert.display(),
                key.display()
            );
            // nginx 1.22 fails TLS 1.3 handshakes unless this is explicit.
            let _ = writeln!(c, "        ssl_protocols TLSv1.2 TLSv1.3;");
            if self.verify_client {
                let _ = writeln!(
                    c,
                    "        ssl_verify_client on;\n        ssl_client_certificate {};",
                    ca.display()
                );
            }
        }
        match self.slow {
            None => {
                let _ = writeln!(
                    c,
                    "        location / {{\n            return 200 \"{}\\n\";\n        }}",
                    self.name
                );
            }
            // The padded body is a file; limit_rate paces it (per request,
            // also per HTTP/2 stream).
            Some(slow) => {
                let rate = slow
                    .bytes_per_sec
                    .map(|rate| format!("\n            limit_rate {};", rate.max(1)))
                    .unwrap_or_default();
                let _ = writeln!(
                    c,
                    "        location / {{\n            root {d}/www;\n            try_files /slow =404;{rate}\n        }}"
                );
            }
        }
        if self.bulk_bytes.is_some() {
            let _ = writeln!(
                c,
                "        location = /bulk {{\n            root {d}/www;\n        }}"
            );
        }
        let _ = writeln!(c, "    }}\n}}");
        c
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown: the master stops its workers.
        self.process.terminate(Duration::from_secs(3));
    }
}
