//! Readiness without traffic: a server is ready once its listening sockets
//! appear in its network namespace's `/proc/<pid>/net/tcp{,6}`. Probing with a
//! connection would add flows that the agent under test would then count.

use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::process::Process;

const TCP_LISTEN: &str = "0A";

/// Ports in LISTEN state in the network namespace of `pid`.
pub(crate) fn listening_ports(pid: u32) -> Vec<u16> {
    let mut ports = Vec::new();
    for file in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            if state != Some(TCP_LISTEN) {
                continue;
            }
            if let Some(port) = local
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Waits until every port in `ports` listens in the process's namespace.
/// Fails early, with the process's output and `extra_log`, if it exits.
pub(crate) fn wait_listening(
    what: &str,
    process: &mut Process,
    ports: &[u16],
    timeout: Duration,
    extra_log: Option<&std::path::Path>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let details = |process: &Process| {
        let mut detail = format!("stderr: {}", process.stderr().trim());
        if let Some(log) = extra_log {
            detail.push_str(&format!(
                "; {}: {}",
                log.display(),
                crate::process::read_lossy(log).trim()
            ));
        }
        detail
    };
    loop {
        if let Some(status) = process.try_status() {
            return Err(LabError::NotReady {
                what: what.to_owned(),
                pod: process.pod().to_owned(),
                timeout,
                detail: format!("it exited ({status}); {}", details(process)),
            });
        }
        let listening = listening_ports(process.pid());
        if ports.iter().all(|p| listening.contains(p)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::NotReady {
                what: what.to_owned(),
                pod: process.pod().to_owned(),
                timeout,
                detail: format!(
                    "listening on {listening:?}, want {ports:?}; {}",
                    details(process)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
