//! iperf3: bulk TCP throughput between two pods, bounded in time.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::error::{LabError, Result};
use crate::pod::Pod;
use crate::process::Process;
use crate::ready;

/// A running `iperf3 -s` in a pod; stopped on drop.
#[derive(Debug)]
pub struct Iperf3Server {
    process: Process,
    port: u16,
}

impl Iperf3Server {
    pub fn start(pod: &Pod, port: u16) -> Result<Self> {
        let mut cmd = Command::new("iperf3");
        cmd.args(["-s", "-p", &port.to_string()]);
        let mut process = pod.spawn(cmd)?;
        ready::wait_listening(
            "iperf3",
            &mut process,
            &[port],
            Duration::from_secs(10),
            None,
        )?;
        Ok(Self { process, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(3));
    }
}

/// Sends from `pod` to `server:port` for `duration` (capped at two minutes)
/// and returns the receiver's bits per second.
pub fn iperf3_bits_per_sec(
    pod: &Pod,
    server: IpAddr,
    port: u16,
    duration: Duration,
) -> Result<f64> {
    let seconds = duration.as_secs().clamp(1, 120);
    let mut cmd = Command::new("iperf3");
    cmd.args([
        "-c",
        &server.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
    ]);
    let output = pod.run_ok(cmd, Duration::from_secs(seconds + 20))?;
    let report: Value = serde_json::from_str(&output.stdout)
        .map_err(|e| LabError::parse("iperf3 JSON", format!("{e}: {}", output.stdout)))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| LabError::parse("iperf3 JSON", output.stdout.clone()))
}
