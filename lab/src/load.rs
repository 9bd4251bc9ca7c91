//! Client traffic with curl and wrk, always bounded in count and time.
//!
//! curl reads its URLs from a config file, so one process can send
//! thousands of requests over one kept-alive connection (the default), one
//! connection per request (`new_connection_per_request`), or spaced out over
//! a long-held connection (`interval`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::pod::Pod;
use crate::process::Process;

/// At most this many requests per curl run.
pub const MAX_REQUESTS: usize = 100_000;
const MARK: &str = "@@meshdrift-lab";

/// TLS material for curl.
#[derive(Debug, Clone, Default)]
pub struct CurlTls {
    /// Trust anchor; `None` means `--insecure`.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A bounded run of HTTP requests from one curl process in a pod.
#[derive(Debug, Clone)]
pub struct Curl {
    urls: Vec<String>,
    count: usize,
    new_connection_per_request: bool,
    interval: Option<Duration>,
    transfer_timeout: Duration,
    connect_timeout: Duration,
    total_timeout: Option<Duration>,
    tls: Option<CurlTls>,
    extra: Vec<String>,
}

/// One response (or failed attempt: status 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status, 0 when no response arrived.
    pub status: u16,
    pub body: String,
    /// New TCP connections this request opened (0 when it reused one).
    pub new_connections: u32,
    /// curl's exit code for this transfer (0 = success).
    pub exit_code: i32,
    /// Server address curl talked to, as curl reports it.
    pub remote: String,
    /// Local port of the connection.
    pub local_port: u16,
}

/// All responses of a curl run.
#[derive(Debug, Clone, Default)]
pub struct CurlReport {
    pub responses: Vec<Response>,
    /// curl's stderr (error messages for failed transfers).
    pub stderr: String,
}

impl CurlReport {
    /// Responses per status code.
    pub fn status_counts(&self) -> BTreeMap<u16, usize> {
        let mut m = BTreeMap::new();
        for r in &self.responses {
            *m.entry(r.status).or_default() += 1;
        }
        m
    }

    /// Responses per body (trimmed), e.g. `{"v1": 160, "v2": 40}`.
    pub fn body_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in self.responses.iter().filter(|r| r.status != 0) {
            *m.entry(r.body.trim().to_owned()).or_default() += 1;
        }
        m
    }

    /// Number of responses with status `code`.
    pub fn count_status(&self, code: u16) -> usize {
        self.responses.iter().filter(|r| r.status == code).count()
    }

    /// TCP connections opened over the run.
    pub fn connections(&self) -> u32 {
        self.responses.iter().map(|r| r.new_connections).sum()
    }

    /// Every response has this status.
    pub fn all(&self, code: u16) -> bool {
        !self.responses.is_empty() && self.responses.iter().all(|r| r.status == code)
    }
}

impl Curl {
    /// `count` GET requests to `url` (default 1).
    pub fn new(url: &str) -> Curl {
        Curl {
            urls: vec![url.to_owned()],
            count: 1,
            new_connection_per_request: false,
            interval: None,
            transfer_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            total_timeout: None,
            tls: None,
            extra: Vec::new(),
        }
    }

    /// Requests to send (cycling through the URLs); capped at [`MAX_REQUESTS`].
    pub fn count(mut self, n: usize) -> Self {
        self.count = n.clamp(1, MAX_REQUESTS);
        self
    }

    /// Also request these URLs, round-robin with the first.
    pub fn also(mut self, url: &str) -> Self {
        self.urls.push(url.to_owned());
        self
    }

    /// `Connection: close` on every request, so each one opens a new TCP
    /// connection (what TCP-mode proxies balance on).
    pub fn new_connection_per_request(mut self, on: bool) -> Self {
        self.new_connection_per_request = on;
        self
    }

    /// Start requests `interval` apart (curl `--rate`), keeping the
    /// connection open in between: a long-held pooled connection.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Per-request limit (default 5 s).
    pub fn transfer_timeout(mut self, t: Duration) -> Self {
        self.transfer_timeout = t;
        self
    }

    /// Limit for the whole run (default: derived from count, interval and
    /// the per-request limit, at most 10 minutes).
    pub fn total_timeout(mut self, t: Duration) -> Self {
        self.total_timeout = Some(t);
        self
    }

    /// Verify the server with `ca` and present `client` (cert, key) if given.
    pub fn tls(mut self, tls: CurlTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Any other curl argument.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    fn bound(&self) -> Duration {
        self.total_timeout.unwrap_or_else(|| {
            let n = self.count as u32;
            let spacing = self.interval.unwrap_or_default() * n;
            (spacing + self.transfer_timeout * n.min(20) + Duration::from_secs(10))
                .min(Duration::from_secs(600))
        })
    }

    /// Starts curl in `pod` and returns at once; see [`CurlRun::wait`].
    pub fn spawn(&self, pod: &Pod) -> Result<CurlRun> {
        let lab = pod.lab()?;
        let dir = lab.instance_dir("curl", pod.name())?;
        let config = dir.join("urls.curlrc");
        let mut text = String::new();
        for i in 0..self.count {
            let url = &self.urls[i % self.urls.len()];
            if url.contains('"') || url.contains('\n') {
                return Err(LabError::invalid("url", url.clone()));
            }
            let _ = writeln!(text, "url = \"{url}\"");
        }
        std::fs::write(&config, text).map_err(|e| LabError::io("writing", &config, e))?;

        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--globoff", "--http1.1"]);
        cmd.arg("--max-time")
            .arg(format!("{:.3}", self.transfer_timeout.as_secs_f64()));
        cmd.arg("--connect-timeout")
            .arg(format!("{:.3}", self.connect_timeout.as_secs_f64()));
        // A marker line after each body: status, new connections, exit code.
        cmd.arg("--write-out").arg(format!(
            "\n{MARK} %{{http_code}} %{{num_connects}} %{{exitcode}} %{{remote_ip}} %{{local_port}}\n"
        ));
        if self.new_connection_per_request {
            cmd.args(["--header", "Connection: close"]);
        }
        if let Some(interval) = self.interval {
            // curl 7.88 takes N/s|m|h; per hour gives the finest whole steps.
            let per_hour = (3600.0 / interval.as_secs_f64().max(0.001))
                .round()
                .max(1.0) as u64;
            cmd.arg("--rate").arg(format!("{per_hour}/h"));
        }
        if let Some(tls) = &self.tls {
            match &tls.ca {
                Some(ca) => {
                    cmd.arg("--cacert").arg(ca);
                }
                None => {
                    cmd.arg("--insecure");
                }
            }
            if let Some((cert, key)) = &tls.client {
                cmd.arg("--cert").arg(cert).arg("--key").arg(key);
            }
        }
        cmd.args(&self.extra);
        cmd.arg("--config").arg(&config);
        Ok(CurlRun {
            process: pod.spawn(cmd)?,
            bound: self.bound(),
        })
    }

    /// Runs curl in `pod` to completion.
    pub fn run(&self, pod: &Pod) -> Result<CurlReport> {
        self.spawn(pod)?.wait()
    }
}

/// A curl run in progress.
#[derive(Debug)]
pub struct CurlRun {
    process: Process,
    bound: Duration,
}

impl CurlRun {
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits for curl (killing it past its time bound) and parses responses.
    pub fn wait(self) -> Result<CurlReport> {
        let bound = self.bound;
        let output = self.process.wait_output(bound)?;
        let responses = parse_curl_output(&output.stdout);
        if responses.is_empty() {
            return Err(LabError::Command {
                command: output.command,
                status: output.status.to_string(),
                stderr: output.stderr,
            });
        }
        Ok(CurlReport {
            responses,
            stderr: output.stderr,
        })
    }
}

fn parse_curl_output(stdout: &str) -> Vec<Response> {
    let mut responses = Vec::new();
    let mut body = String::new();
    for line in stdout.split_inclusive('\n') {
        if let Some(rest) = line.trim_end().strip_prefix(MARK) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).copied().unwrap_or("");
            // The marker is preceded by "\n" we added; drop it from the body.
            let text = body.strip_suffix('\n').unwrap_or(&body).to_owned();
            responses.push(Response {
                status: get(0).parse().unwrap_or(0),
                new_connections: get(1).parse().unwrap_or(0),
                exit_code: get(2).parse().unwrap_or(-1),
                remote: get(3).to_owned(),
                local_port: get(4).parse().unwrap_or(0),
                body: text,
            });
            body.clear();
        } else {
            body.push_str(line);
        }
    }
    responses
}

/// A bounded wrk benchmark run: `wrk -t<threads> -c<connections> -d<duration> --latency URL`.
#[derive(Debug, Clone)]
pub struct Wrk {
    url: String,
    threads: u32,
    connections: u32,
    duration: Duration,
    close: bool,
}

/// What wrk measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub latency_p50: Duration,
    pub latency_p90: Duration,
    pub latency_p99: Duration,
    /// Responses that were neither 2xx nor 3xx.
    pub non_2xx_3xx: u64,
    /// Socket errors (connect + read + write + timeout).
    pub socket_errors: u64,
    /// Response bytes per second.
    pub bytes_per_sec: f64,
}

/// Longest wrk run allowed.
pub const MAX_WRK_DURATION: Duration = Duration::from_secs(120);

impl Wrk {
    /// 1 thread, 4 connections, 5 s.
    pub fn new(url: &str) -> Wrk {
        Wrk {
            url: url.to_owned(),
            threads: 1,
            connections: 4,
            duration: Duration::from_secs(5),
            close: false,
        }
    }

    /// `Connection: close` on every request: measures the new-connection
    /// rate instead of the keep-alive request rate.
    pub fn new_connection_per_request(mut self, on: bool) -> Self {
        self.close = on;
        self
    }

    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n.clamp(1, 64);
        self
    }

    pub fn connections(mut self, n: u32) -> Self {
        self.connections = n.clamp(1, 10_000);
        self
    }

    /// Capped at [`MAX_WRK_DURATION`]; whole seconds (wrk's resolution).
    pub fn duration(mut self, d: Duration) -> Self {
        self.duration = d.clamp(Duration::from_secs(1), MAX_WRK_DURATION);
        self
    }

    pub fn run(&self, pod: &Pod) -> Result<WrkReport> {
        self.spawn(pod)?.wait()
    }

    /// Starts wrk in `pod` and returns at once; see [`WrkRun::wait`].
    pub fn spawn(&self, pod: &Pod) -> Result<WrkRun> {
        let mut cmd = Command::new("wrk");
        let connections = self.connections.max(self.threads);
        cmd.arg(format!("-t{}", self.threads))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)))
            .arg("--timeout")
            .arg("5s")
            .arg("--latency");
        if self.close {
            cmd.args(["--header", "Connection: close"]);
        }
        cmd.arg(&self.url);
        Ok(WrkRun {
            process: pod.spawn(cmd)?,
            bound: self.duration + Duration::from_secs(20),
        })
    }
}

/// A wrk run in progress.
#[derive(Debug)]
pub struct WrkRun {
    process: Process,
    bound: Duration,
}

impl WrkRun {
    /// Waits for wrk (killing it past its time bound) and parses its report.
    pub fn wait(self) -> Result<WrkReport> {
        let output = self.process.wait_output(self.bound)?.ok()?;
        parse_wrk(&output.stdout)
    }
}

/// A bounded h2load run: `h2load -n<requests> -c<clients> -m<streams> URL`,
/// HTTP/2 (h2c with prior knowledge for `http://` URLs) with several
/// concurrent streams per connection.
#[derive(Debug, Clone)]
pub struct H2load {
    url: String,
    requests: u64,
    clients: u32,
    streams: u32,
    timeout: Duration,
    http1: bool,
    connection_rate: Option<u32>,
}

/// What h2load reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2loadReport {
    pub succeeded: u64,
    pub failed: u64,
    pub requests_per_sec: f64,
}

impl H2load {
    /// 1 000 requests over 1 client with 1 stream, within 60 s.
    pub fn new(url: &str) -> H2load {
        H2load {
            url: url.to_owned(),
            requests: 1_000,
            clients: 1,
            streams: 1,
            timeout: Duration::from_secs(60),
            http1: false,
            connection_rate: None,
        }
    }

    /// Speak HTTP/1.1 instead of HTTP/2.
    pub fn http1(mut self, on: bool) -> Self {
        self.http1 = on;
        self
    }

    /// Open `per_second` new connections per second (each client is one
    /// connection; `clients` is then how many are opened in all), in steps
    /// of a hundredth of a second so the rate is even.
    pub fn connection_rate(mut self, per_second: u32) -> Self {
        self.connection_rate = Some(per_second.clamp(100, 1_000_000));
        self
    }

    /// Capped at [`MAX_REQUESTS`] times 10.
    pub fn requests(mut self, n: u64) -> Self {
        self.requests = n.clamp(1, 10 * MAX_REQUESTS as u64);
        self
    }

    pub fn clients(mut self, n: u32) -> Self {
        self.clients = n.clamp(1, 10_000_000);
        self
    }

    /// Concurrent streams per client connection.
    pub fn streams(mut self, n: u32) -> Self {
        self.streams = n.clamp(1, 1_000);
        self
    }

    /// The run is killed (and fails) past this; capped at [`MAX_WRK_DURATION`].
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t.min(MAX_WRK_DURATION);
        self
    }

    pub fn run(&self, pod: &Pod) -> Result<H2loadReport> {
        let mut cmd = Command::new("h2load");
        cmd.arg(format!("-n{}", self.requests))
            .arg(format!("-c{}", self.clients))
            .arg(format!("-m{}", self.streams));
        if self.http1 {
            cmd.arg("--h1");
        }
        if let Some(rate) = self.connection_rate {
            cmd.arg(format!("-r{}", rate / 100))
                .arg("--rate-period=10ms")
                .arg("-t2");
        }
        cmd.arg(&self.url);
        let output = pod.run_ok(cmd, self.timeout)?;
        parse_h2load(&output.stdout)
    }
}

pub(crate) fn parse_h2load(text: &str) -> Result<H2loadReport> {
    let mut report = H2loadReport::default();
    let mut saw_requests = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("requests:") {
            saw_requests = true;
            for part in rest.split(',') {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n = n.parse().unwrap_or(0);
                    match what {
                        "succeeded" => report.succeeded = n,
                        "failed" => report.failed = n,
                        _ => {}
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("finished in") {
            report.requests_per_sec = rest
                .split(',')
                .nth(1)
                .and_then(|part| part.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        }
    }
    if !saw_requests {
        return Err(LabError::parse("h2load output", text.to_owned()));
    }
    Ok(report)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// wrk's sizes: `4.00MB`, `512.10KB`, `830B` (binary multiples).
fn parse_size(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * scale)
}

pub(crate) fn parse_wrk(text: &str) -> Result<WrkReport> {
    let mut report = WrkReport::default();
    let mut saw_rate = false;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Transfer/sec:"), Some(v)) => {
                report.bytes_per_sec = parse_size(v).unwrap_or(0.0);
            }
            (Some("Requests/sec:"), Some(v)) => {
                report.requests_per_sec = v.parse().unwrap_or(0.0);
                saw_rate = true;
            }
            (Some(p @ ("50%" | "90%" | "99%")), Some(v)) => {
                let d = parse_duration(v).unwrap_or_default();
                match p {
                    "50%" => report.latency_p50 = d,
                    "90%" => report.latency_p90 = d,
                    _ => report.latency_p99 = d,
                }
            }
            (Some(n), Some("requests")) => report.requests = n.parse().unwrap_or(0),
            (Some("Socket"), Some("errors:")) => {
                report.socket_errors = line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
            }
            (Some("Non-2xx"), _) => {
                report.non_2xx_3xx = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    if !saw_rate {
        return Err(LabError::parse("wrk output", text.to_owned()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_markers() {
        let out = format!(
            "v1\n\n{MARK} 200 1 0 10.213.1.11 40000\nv2\n\n{MARK} 200 0 0 10.213.1.12 40000\n\n{MARK} 000 0 7  0\n"
        );
        let r = parse_curl_output(&out);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].status, r[0].body.as_str(), r[0].new_connections),
            (200, "v1\n", 1)
        );
        assert_eq!((r[1].body.as_str(), r[1].new_connections), ("v2\n", 0));
        assert_eq!((r[2].status, r[2].exit_code), (0, 7));
    }

    #[test]
    fn parses_h2load() {
        let text = "starting benchmark...
finished in 1.02s, 980.39 req/s, 40.21KB/s
requests: 1000 total, 1000 started, 1000 done, 998 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 998 2xx, 0 3xx, 0 4xx, 0 5xx
";
        let r = parse_h2load(text).expect("parses");
        assert_eq!((r.succeeded, r.failed), (998, 2));
        assert!((r.requests_per_sec - 980.39).abs() < 1e-6);
        assert!(parse_h2load("nothing").is_err());
    }

    #[test]
    fn parses_wrk() {
        let text = "Running 5s test @ http://10.213.1.10:8080/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.00us   50.00us   2.00ms   90.00%
    Req/Sec    30.00k     1.00k   33.00k    70.00%
  Latency Distribution
     50%  110.00us
     75%  130.00us
     90%  160.00us
     99%    1.20ms
  150000 requests in 5.00s, 20.00MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  30000.50
Transfer/sec:      4.00MB
";
        let r = parse_wrk(text).expect("parses");
        assert_eq!(r.requests, 150_000);
        assert!((r.requests_per_sec - 30000.5).abs() < 1e-6);
        assert_eq!(r.latency_p50, Duration::from_micros(110));
        assert_eq!(r.latency_p99, Duration::from_micros(1200));
        assert_eq!(r.socket_errors, 6);
        assert_eq!(r.non_2xx_3xx, 4);
        assert!((r.bytes_per_sec - 4.0 * 1024.0 * 1024.0).abs() < 1e-6);
    }
}
