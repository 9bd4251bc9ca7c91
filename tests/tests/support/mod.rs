//! Running the real `meshdrift` binary against the lab.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The programs attach to the cgroup root in exclusive mode, so one agent runs at a time.
static ONE_AGENT: Mutex<()> = Mutex::new(());

/// Fails (never skips) when the privileged suite cannot run here, then serialises agents.
pub fn privileged() -> MutexGuard<'static, ()> {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the end-to-end suite creates network namespaces and loads eBPF programs: \
         it needs root (run `cargo xtask test` as root)"
    );
    ONE_AGENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn meshdrift_bin() -> PathBuf {
    let path = std::env::var_os("MESHDRIFT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/meshdrift"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "meshdrift binary not found at {} — build it first (`cargo build -p meshdrift-agent`; \
         `cargo xtask test` does) or set MESHDRIFT_BIN",
        path.display()
    );
    path
}

/// A running `meshdrift observe --output json`.
pub struct Agent {
    child: Child,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

/// What the agent printed: flow records and its closing summary.
#[derive(Debug)]
pub struct Observed {
    pub flows: Vec<Value>,
    pub summary: Value,
    pub stderr: Vec<String>,
}

impl Agent {
    pub fn observe(extra_args: &[&str]) -> Agent {
        let mut child = Command::new(meshdrift_bin())
            .args(["observe", "--output", "json"])
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting meshdrift observe");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect());
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("observing TCP flows") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        let mut agent = Agent {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = agent.child.kill();
            let _ = agent.child.wait();
            let stderr = agent.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
            panic!("meshdrift observe did not attach within 30 s:\n{}", stderr.join("\n"));
        }
        agent
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGINT, then everything it printed.
    pub fn stop(mut self) -> Observed {
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for meshdrift") {
                break status;
            }
            assert!(Instant::now() < deadline, "meshdrift did not exit within 30 s of SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        assert!(status.success(), "meshdrift exited with {status}:\n{}", stderr.join("\n"));
        let mut flows = Vec::new();
        let mut summary = Value::Null;
        for line in &stdout {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            if value["event"] == "summary" {
                summary = value;
            } else {
                flows.push(value);
            }
        }
        assert!(!summary.is_null(), "meshdrift printed no summary on exit:\n{}", stderr.join("\n"));
        Observed { flows, summary, stderr }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Observed {
    /// Close records of client sockets from `src_ip` to `dst_port`.
    pub fn client_closes(&self, src_ip: &str, dst_port: u16) -> Vec<&Value> {
        self.flows
            .iter()
            .filter(|flow| {
                flow["event"] == "close"
                    && flow["role"] == "client"
                    && host_of(&flow["src"]) == src_ip
                    && port_of(&flow["dst"]) == dst_port
            })
            .collect()
    }

    pub fn lost_total(&self) -> u64 {
        self.summary["lost_total"].as_u64().expect("lost_total")
    }
}

/// `ip` of an `ip:port` or `[ip]:port` string.
pub fn host_of(addr: &Value) -> String {
    let text = addr.as_str().expect("address string");
    let host = text.rsplit_once(':').map_or(text, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']').to_owned()
}

pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|text| text.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .expect("address with a port")
}

pub fn count(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {value}"))
}
