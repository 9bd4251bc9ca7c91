//! An Istio sidecar as the kernel sees one: the nat rules `istio-iptables`
//! installs in the pod's namespace, and an inbound proxy that terminates
//! mTLS on 15006 and hands requests to the application on loopback. The
//! outbound proxy is HAProxy on 15001 ([`crate::Haproxy`] with
//! [`crate::HaproxyBuilder::uid`]), run as the proxy's user like both
//! proxies here, so its own connections pass the rules untouched.
//!
//! The rules are Istio's (`tools/istio-iptables`): every inbound TCP port
//! redirected to 15006 (except the proxy's own 15008/15020/15021/15090);
//! outbound TCP redirected to 15001 except the proxy's user's, loopback, and
//! the ports and ranges the pod's `traffic.sidecar.istio.io/exclude*`
//! annotations name.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::pod::Pod;
use crate::process::Process;
use crate::ready;

/// The user both proxies run as, and the rules let through.
pub const PROXY_UID: u32 = 1337;
/// Where outbound connections are redirected.
pub const OUTBOUND_PORT: u16 = 15001;
/// Where inbound connections are redirected.
pub const INBOUND_PORT: u16 = 15006;
/// The inbound proxy's internal TLS terminator (loopback only).
const INBOUND_TLS_PORT: u16 = 15443;
/// The source address Istio's inbound proxy uses toward the application.
const INBOUND_SOURCE: &str = "127.0.0.6";
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The nat rules of one pod's sidecar.
#[derive(Debug, Clone, Default)]
pub struct Interception {
    /// `traffic.sidecar.istio.io/excludeOutboundPorts`.
    pub exclude_outbound_ports: Vec<u16>,
    /// `traffic.sidecar.istio.io/excludeOutboundIPRanges` (CIDRs).
    pub exclude_outbound_ranges: Vec<String>,
}

impl Interception {
    /// Replaces the pod's nat table with the sidecar's rules.
    pub fn install(&self, pod: &Pod) -> Result<()> {
        let lab = pod.lab()?;
        let path = lab
            .instance_dir("istio-iptables", pod.name())?
            .join("rules");
        std::fs::write(&path, self.render()).map_err(|e| LabError::io("writing", &path, e))?;
        pod.exec(&["iptables-restore", &path.display().to_string()])?;
        tracing::debug!(pod = pod.name(), ?self, "sidecar interception installed");
        Ok(())
    }

    /// The annotations a pod with these rules carries in its manifest.
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut out = vec![("sidecar.istio.io/status".to_owned(), "{}".to_owned())];
        if !self.exclude_outbound_ports.is_empty() {
            let ports: Vec<String> = self
                .exclude_outbound_ports
                .iter()
                .map(u16::to_string)
                .collect();
            out.push((
                "traffic.sidecar.istio.io/excludeOutboundPorts".to_owned(),
                ports.join(","),
            ));
        }
        if !self.exclude_outbound_ranges.is_empty() {
            out.push((
                "traffic.sidecar.istio.io/excludeOutboundIPRanges".to_owned(),
                self.exclude_outbound_ranges.join(","),
            ));
        }
        out
    }

    fn render(&self) -> String {
        let mut r = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n:ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n\
             -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A OUTPUT -p tcp -j ISTIO_OUTPUT\n",
        );
        for port in [15008, 15090, 15021, 15020] {
            let _ = writeln!(r, "-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN");
        }
        let _ = writeln!(r, "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT");
        let _ = writeln!(
            r,
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}"
        );
        for port in &self.exclude_outbound_ports {
            let _ = writeln!(r, "-A ISTIO_OUTPUT -p tcp -m tcp --dport {port} -j RETURN");
        }
        let _ = writeln!(
            r,
            "-A ISTIO_OUTPUT -s {INBOUND_SOURCE}/32 -o lo -j RETURN\n\
             -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {PROXY_UID} -j ISTIO_IN_REDIRECT\n\
             -A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {PROXY_UID} -j RETURN\n\
             -A ISTIO_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN\n\
             -A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN"
        );
        for range in &self.exclude_outbound_ranges {
            let _ = writeln!(r, "-A ISTIO_OUTPUT -d {range} -j RETURN");
        }
        let _ = writeln!(
            r,
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}\nCOMMIT"
        );
        r
    }
}

/// The inbound half of a sidecar: nginx as the proxy's user, listening on
/// 15006 for whatever the rules redirect there. TLS (Istio mTLS, client
/// certificate required) is terminated and its requests proxied to the
/// application; plaintext (a client without a sidecar, as PERMISSIVE
/// PeerAuthentication allows) is passed through to it.
#[derive(Debug)]
pub struct InboundProxy {
    process: Process,
    dir: PathBuf,
}

impl InboundProxy {
    /// Starts the inbound proxy in `pod` in front of the application on
    /// `127.0.0.1:app_port`. `http2` offers h2 as well as HTTP/1.1 over TLS.
    pub fn start(pod: &Pod, app_port: u16, http2: bool, dns_names: &[&str]) -> Result<Self> {
        Self::launch(pod, app_port, http2, dns_names, false)
    }

    /// [`InboundProxy::start`], and log every request that arrives over
    /// mTLS ([`InboundProxy::requests_by_connection`]): the application
    /// behind the proxy sees the proxy's own pooled connections, this log
    /// sees the client proxy's.
    pub fn start_with_access_log(
        pod: &Pod,
        app_port: u16,
        http2: bool,
        dns_names: &[&str],
    ) -> Result<Self> {
        Self::launch(pod, app_port, http2, dns_names, true)
    }

    fn launch(
        pod: &Pod,
        app_port: u16,
        http2: bool,
        dns_names: &[&str],
        access_log: bool,
    ) -> Result<Self> {
        let lab = pod.lab()?;
        let dir = lab.instance_dir("inbound", pod.name())?;
        let identity = pod.server_identity(dns_names)?;
        let ca = lab.ca()?.cert;
        // The proxy's user must read its keys and write its own files.
        let own = |from: &Path, name: &str| -> Result<PathBuf> {
            let to = dir.join(name);
            std::fs::copy(from, &to).map_err(|e| LabError::io("copying", from, e))?;
            Ok(to)
        };
        let cert = own(&identity.cert, "cert.pem")?;
        let key = own(&identity.key, "key.pem")?;
        let ca = own(&ca, "ca.pem")?;
        let conf = render(&dir, app_port, http2, access_log, (&cert, &key, &ca));
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| LabError::io("writing", &conf_path, e))?;
        chown_tree(&dir, PROXY_UID)?;
        let error_log = dir.join("error.log");
        let mut run = Command::new("setpriv");
        run.arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .arg("--clear-groups")
            .arg("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(&error_log)
            .arg("-c")
            .arg(&conf_path);
        let mut process = pod.spawn(run)?;
        ready::wait_listening(
            "inbound proxy",
            &mut process,
            &[INBOUND_PORT, INBOUND_TLS_PORT],
            READY_TIMEOUT,
            Some(&error_log),
        )?;
        tracing::info!(pod = pod.name(), app_port, "inbound proxy ready");
        Ok(Self { process, dir })
    }

    pub fn error_log(&self) -> String {
        crate::process::read_lossy(&self.dir.join("error.log"))
    }

    /// Access log lines (with [`InboundProxy::start_with_access_log`]), in
    /// the format of [`crate::Nginx::access_log`]: the client is the
    /// subject of the certificate the client's proxy presented.
    pub fn access_log(&self) -> Vec<String> {
        crate::process::read_lossy(&self.dir.join("access.log"))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Requests per mTLS connection of the client whose certificate's common
    /// name is `client`, by the proxy's connection serial number: one entry
    /// per connection the client's proxy opened to this pod.
    pub fn requests_by_connection(&self, client: &str) -> Result<BTreeMap<u64, u64>> {
        let mut by_connection = BTreeMap::new();
        for line in self.access_log() {
            let (dn, rest) = line
                .split_once(" client=\"")
                .and_then(|(_, rest)| rest.split_once('"'))
                .ok_or_else(|| LabError::parse("inbound proxy access log line", line.clone()))?;
            if !dn.split(',').any(|part| part == format!("CN={client}")) {
                continue;
            }
            let serial = rest
                .split_whitespace()
                .next()
                .and_then(|serial| serial.parse::<u64>().ok())
                .ok_or_else(|| LabError::parse("inbound proxy access log line", line.clone()))?;
            *by_connection.entry(serial).or_default() += 1;
        }
        Ok(by_connection)
    }
}

impl Drop for InboundProxy {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(3));
    }
}

fn chown_tree(dir: &Path, uid: u32) -> Result<()> {
    let chown = |path: &Path| {
        std::os::unix::fs::chown(path, Some(uid), Some(uid))
            .map_err(|e| LabError::io("changing the owner of", path, e))
    };
    chown(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|e| LabError::io("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LabError::io("reading", dir, e))?;
        chown(&entry.path())?;
    }
    Ok(())
}

fn render(
    dir: &Path,
    app_port: u16,
    http2: bool,
    access_log: bool,
    (cert, key, ca): (&Path, &Path, &Path),
) -> String {
    let d = dir.display();
    let h2 = if http2 { " http2" } else { "" };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "load_module {STREAM_MODULE};\nworker_processes 1;\ndaemon off;\nmaster_process on;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n"
    );
    // TLS goes to the terminator, anything else straight to the application.
    let _ = writeln!(
        c,
        "stream {{\n    map $ssl_preread_protocol $inbound_upstream {{\n        \"\" 127.0.0.1:{app_port};\n        default 127.0.0.1:{INBOUND_TLS_PORT};\n    }}\n\
         \x20   server {{\n        listen {INBOUND_PORT};\n        ssl_preread on;\n        proxy_pass $inbound_upstream;\n        proxy_bind {INBOUND_SOURCE};\n    }}\n}}\n"
    );
    if access_log {
        // nginx's own format of the lab (`crate::nginx`): one worker, so
        // `$connection` numbers each mTLS connection once.
        let _ = writeln!(
            c,
            "http {{\n    log_format lab '$remote_addr $remote_port $server_port $ssl_protocol sni=$ssl_server_name alpn=$ssl_alpn_protocol client=\"$ssl_client_s_dn\" $connection $connection_requests \"$request\" $status $msec $request_time';\n    access_log {d}/access.log lab;"
        );
    } else {
        let _ = writeln!(c, "http {{\n    access_log off;");
    }
    for kind in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(c, "    {kind}_temp_path {d}/tmp-{kind};");
    }
    let _ = writeln!(
        c,
        "    keepalive_requests 1000000;\n    keepalive_timeout 300s;\n\
         \x20   upstream app {{\n        server 127.0.0.1:{app_port};\n        keepalive 64;\n        keepalive_requests 1000000;\n    }}\n\
         \x20   server {{\n        listen 127.0.0.1:{INBOUND_TLS_PORT} ssl{h2};\n        ssl_certificate {};\n        ssl_certificate_key {};\n\
         \x20       ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_verify_client on;\n        ssl_client_certificate {};\n\
         \x20       location / {{\n            proxy_pass http://app;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n\
         \x20           proxy_bind {INBOUND_SOURCE};\n            proxy_buffering off;\n        }}\n    }}\n}}",
        cert.display(),
        key.display(),
        ca.display()
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_istio_iptables() {
        let rules = Interception {
            exclude_outbound_ports: vec![8080],
            exclude_outbound_ranges: vec!["10.96.0.0/12".into()],
        }
        .render();
        assert!(rules.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
        assert!(rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
        assert!(rules.contains("-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
        assert!(rules.contains("-A ISTIO_OUTPUT -p tcp -m tcp --dport 8080 -j RETURN"));
        assert!(rules.contains("-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN"));
        // Exclusions come before the catch-all redirect.
        let redirect = rules.find("-A ISTIO_OUTPUT -j ISTIO_REDIRECT").unwrap();
        assert!(rules.find("--dport 8080 -j RETURN").unwrap() < redirect);
        assert!(rules.find("-d 10.96.0.0/12 -j RETURN").unwrap() < redirect);
    }
}
