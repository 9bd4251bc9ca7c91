//! The agent at a sustained rate of new connections: its share of a core,
//! its peak memory, and whether it lost anything.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use meshdrift_lab::{H2load, prometheus::get_json};

use super::ab::{AbLab, start_agent};

#[derive(Debug, Clone, Copy, Default)]
pub struct RateResult {
    /// Connections per second h2load achieved.
    pub achieved: f64,
    /// The agent's CPU over the run, in cores (1.0 = one core busy).
    pub agent_cores: f64,
    pub peak_rss_mib: f64,
    pub lost: u64,
    pub connections: u64,
}

/// `rate` new connections per second (one request each) for `seconds`.
pub fn sustained(
    lab: &AbLab,
    meshdrift: &Path,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<RateResult> {
    let (agent, listen) = start_agent(meshdrift, lab.manifests())?;
    let pid = agent.pid();
    let ticks_before = cpu_ticks(pid)?;
    let started = std::time::Instant::now();
    let connections = u64::from(rate) * seconds;
    let run = H2load::new(&lab.plain_url())
        .http1(true)
        .requests(connections)
        .clients(u32::try_from(connections).unwrap_or(u32::MAX))
        .connection_rate(rate)
        .timeout(Duration::from_secs(seconds + 60))
        .run(lab.client())
        .context("h2load at a fixed connection rate")?;
    let elapsed = started.elapsed().as_secs_f64();
    // One sweep and one publish after the load, so the report has it all.
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(pid)?.saturating_sub(ticks_before);
    let peak_rss_mib = peak_rss_kib(pid)? as f64 / 1024.0;
    let report = get_json(&format!("http://{listen}/report"), "the agent's report")?;
    let lost = report["agent"]["lost_events"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, count)| count.as_u64())
        .sum();
    agent.stop(Duration::from_secs(30))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(RateResult {
        // One request per connection: requests per second are connections per second.
        achieved: run.requests_per_sec,
        agent_cores: ticks as f64 / hz / (elapsed + 2.0),
        peak_rss_mib,
        lost,
        connections: run.succeeded,
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat; after the name they are at 11 and 12.
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("stime")?;
    Ok(utime + stime)
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .context("VmHWM in /proc/PID/status")
}
