//! Where the CPU goes while the agent is attached: a system-wide `perf`
//! profile (`cpu-clock`, the one event a VM always has) of the new-connection
//! workload, its samples grouped by who spent them. The budgets the kernel
//! path misses are explained from this table in BENCHMARKS.md.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;

use super::{
    ab::{AbLab, Workload, start_agent},
    sysctl::Sysctl,
};

/// Samples per second and CPU.
const FREQUENCY: &str = "1999";

/// Who spent a share of the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Spender {
    /// The JIT-compiled meshdrift programs themselves.
    Programs,
    /// Kernel BPF code the programs call or that runs them: map lookups,
    /// updates and deletes, the ring buffer, the cgroup hook's dispatch.
    BpfRuntime,
    /// The agent's own threads, user and kernel time.
    Agent,
    /// Idle CPU.
    Idle,
    /// Everything else: the workload itself, the network stack.
    Workload,
}

impl Spender {
    pub fn describe(self) -> &'static str {
        match self {
            Spender::Programs => "meshdrift's eBPF programs (JIT code)",
            Spender::BpfRuntime => {
                "kernel BPF runtime they call: hash-map lookup/update/delete, ring buffer, cgroup hook dispatch"
            }
            Spender::Agent => "the agent's threads (user space and the syscalls they make)",
            Spender::Idle => "idle",
            Spender::Workload => "the workload and the network stack (wrk, nginx, TCP)",
        }
    }
}

/// One symbol's share of every sample.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub spender: Spender,
    pub command: String,
    pub symbol: String,
    pub percent: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub seconds: u64,
    pub samples: u64,
    pub symbols: Vec<Symbol>,
}

impl Profile {
    /// Samples in symbols too small to list (under 0.01 % each).
    pub fn unlisted(&self) -> f64 {
        (100.0 - self.symbols.iter().map(|s| s.percent).sum::<f64>()).max(0.0)
    }

    pub fn share(&self, spender: Spender) -> f64 {
        self.symbols
            .iter()
            .filter(|s| s.spender == spender)
            .map(|s| s.percent)
            .sum()
    }

    /// The heaviest symbols meshdrift is answerable for.
    pub fn top_of_meshdrift(&self, count: usize) -> Vec<&Symbol> {
        let mut ours: Vec<&Symbol> = self
            .symbols
            .iter()
            .filter(|s| {
                matches!(
                    s.spender,
                    Spender::Programs | Spender::BpfRuntime | Spender::Agent
                )
            })
            .collect();
        ours.sort_by(|a, b| b.percent.total_cmp(&a.percent));
        ours.truncate(count);
        ours
    }
}

/// Profiles the whole machine while the new-connection workload runs with
/// the agent attached. `perf` must be able to name JIT-compiled programs, so
/// `net.core.bpf_jit_kallsyms` is set for the run and restored after.
pub fn new_connections(
    lab: &AbLab,
    meshdrift: &Path,
    duration: Duration,
) -> anyhow::Result<Profile> {
    let _kallsyms = Sysctl::set("/proc/sys/net/core/bpf_jit_kallsyms", "1")?;
    let (agent, _) = start_agent(meshdrift, lab.manifests())?;
    let data = std::env::temp_dir().join(format!("meshdrift-bench-{}.perf", std::process::id()));
    let seconds = duration.as_secs().max(1);
    let perf = Command::new("perf")
        .args([
            "record",
            "-a",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            FREQUENCY,
            "-o",
        ])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `perf record` (cargo xtask setup installs linux-perf)")?;
    // The workload runs a little longer than the profile, which then sees
    // only steady traffic.
    lab.run(Workload::NewConnections, duration + Duration::from_secs(1))?;
    let recorded = perf
        .wait_with_output()
        .context("waiting for `perf record`")?;
    agent.stop(Duration::from_secs(30))?;
    if !recorded.status.success() {
        anyhow::bail!(
            "`perf record` failed: {}",
            String::from_utf8_lossy(&recorded.stderr).trim()
        );
    }
    let report = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "comm,sym"])
        .args(["--percent-limit", "0.01", "-i"])
        .arg(&data)
        .output()
        .context("running `perf report`")?;
    let _ = std::fs::remove_file(&data);
    if !report.status.success() {
        anyhow::bail!(
            "`perf report` failed: {}",
            String::from_utf8_lossy(&report.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&report.stdout);
    Ok(Profile {
        seconds,
        samples: sample_count(&text),
        symbols: text.lines().filter_map(symbol_line).collect(),
    })
}

/// `# Samples: 12K of event 'cpu-clock'` (perf abbreviates with K and M).
fn sample_count(report: &str) -> u64 {
    report
        .lines()
        .find_map(|line| line.strip_prefix("# Samples: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| {
            let (digits, scale) = match count.chars().last() {
                Some('K') => (&count[..count.len() - 1], 1_000.0),
                Some('M') => (&count[..count.len() - 1], 1_000_000.0),
                _ => (count, 1.0),
            };
            digits.parse::<f64>().ok().map(|n| (n * scale) as u64)
        })
        .unwrap_or(0)
}

/// `    12.34%  nginx   [k] tcp_v4_connect`
fn symbol_line(line: &str) -> Option<Symbol> {
    let mut fields = line.split_whitespace();
    let percent = fields.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
    let command = fields.next()?.to_owned();
    let kind = fields.next()?;
    if !matches!(kind, "[k]" | "[.]") {
        return None;
    }
    let symbol = fields.collect::<Vec<_>>().join(" ");
    Some(Symbol {
        spender: spender(&command, &symbol),
        command,
        symbol,
        percent,
    })
}

fn spender(command: &str, symbol: &str) -> Spender {
    const BPF_RUNTIME: [&str; 10] = [
        "bpf_",
        "__bpf_",
        "htab_",
        "__htab_",
        "lookup_nulls_elem_raw",
        "__cgroup_bpf_",
        "cgroup_bpf_",
        "pcpu_freelist",
        "alloc_htab_elem",
        "free_htab_elem",
    ];
    if symbol.contains("meshdrift_") {
        Spender::Programs
    } else if command.starts_with("meshdrift") {
        Spender::Agent
    } else if BPF_RUNTIME.iter().any(|prefix| symbol.starts_with(prefix)) {
        Spender::BpfRuntime
    } else if command == "swapper" {
        Spender::Idle
    } else {
        Spender::Workload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_read_and_grouped() {
        let line = |text| symbol_line(text).map(|s| (s.spender, s.percent));
        assert_eq!(
            line("     3.10%  wrk   [k] bpf_prog_5f2a_meshdrift_egress"),
            Some((Spender::Programs, 3.10))
        );
        assert_eq!(
            line("     1.50%  nginx [k] lookup_nulls_elem_raw"),
            Some((Spender::BpfRuntime, 1.50))
        );
        assert_eq!(
            line("     0.80%  meshdrift  [.] meshdrift::pipeline::FlowJoiner::join"),
            Some((Spender::Agent, 0.80))
        );
        assert_eq!(
            line("    40.00%  swapper  [k] pv_native_safe_halt"),
            Some((Spender::Idle, 40.0))
        );
        assert_eq!(line("# Overhead  Command  Symbol"), None);
        assert_eq!(
            sample_count("# Samples: 12K of event 'cpu-clock'\n"),
            12_000
        );
    }
}
