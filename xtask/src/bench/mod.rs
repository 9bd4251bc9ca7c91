//! `cargo xtask bench [--quick]`: what meshdrift costs, measured against the
//! no-agent limit, and how far its estimates are from the truth. Prints a
//! table and rewrites BENCHMARKS.md with the machine, kernel, date, commit
//! and command. Not part of `cargo xtask test`.

mod ab;
mod budgets;
mod criterion;
mod empty_program;
mod markdown;
mod misses;
mod profile;
mod rate;
mod stats;
mod sysctl;

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::Context as _;
use meshdrift_lab::{
    h2_error::{Cell, Measurement, measure},
    scenario::Protocol,
};
use serde_json::Value;

use crate::cmd;
use ab::{AbLab, AbResults, Workload, program_stats, start_agent};
use empty_program::EmptyProgram;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// A smoke run in under 3 minutes: 2 rounds of 1 s, no scale benchmarks
    /// (the full run takes about 20).
    #[arg(long)]
    pub quick: bool,
}

/// How long and how often.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub seconds: u64,
    pub rate_seconds: u64,
    pub h2_requests: u64,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                quick,
                rounds: 2,
                seconds: 1,
                rate_seconds: 5,
                h2_requests: 5_000,
            }
        } else {
            Plan {
                quick,
                rounds: 9,
                seconds: 4,
                rate_seconds: 20,
                h2_requests: 20_000,
            }
        }
    }
}

/// Everything one run measured.
pub struct Results {
    pub plan: Plan,
    pub command: String,
    pub ab: AbResults,
    pub rate: rate::RateResult,
    pub rate_target: u32,
    pub criterion: criterion::CriterionResults,
    pub kernel_scaling: Vec<Value>,
    pub h2: Vec<(Cell, Measurement)>,
    pub profile: profile::Profile,
}

/// New connections per second the agent must sustain.
const TARGET_RATE: u32 = 10_000;

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let plan = Plan::new(args.quick);
    let command = if args.quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    meshdrift_lab::install_signal_cleanup().context("installing the Ctrl-C cleanup")?;
    let meshdrift = cmd::build_meshdrift_release()?;

    eprintln!("[bench] user-space pipeline and policy engine (criterion)");
    let criterion = criterion::run(&root, args.quick)?;
    eprintln!("[bench] kernel path and sweep as tracked flows grow");
    let kernel_scaling = kernel_scaling(&root)?;

    eprintln!(
        "[bench] lab: with and without the agent, {} rounds",
        plan.rounds
    );
    let lab = AbLab::start()?;
    let ab = ab_rounds(&lab, &meshdrift, plan)?;
    eprintln!("[bench] the agent at {TARGET_RATE} new connections/s");
    let rate = rate::sustained(&lab, &meshdrift, TARGET_RATE, plan.rate_seconds)?;
    eprintln!("[bench] where the CPU goes: perf over new connections with the agent");
    let profile =
        profile::new_connections(&lab, &meshdrift, Duration::from_secs(plan.seconds * 2))?;
    drop(lab);

    eprintln!("[bench] HTTP/2 request estimators against HAProxy's counts");
    let h2 = h2_table(&root, &meshdrift, args.quick, plan.h2_requests)?;

    let results = Results {
        plan,
        command: command.to_owned(),
        ab,
        rate,
        rate_target: TARGET_RATE,
        criterion,
        kernel_scaling,
        h2,
        profile,
    };
    let mut text = markdown::render(&results, &machine(&root));
    // Sections measured by other commands are not this run's to rewrite.
    let previous = std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default();
    text.push_str(&markdown::carried_over(&previous));
    println!("{}", markdown::summary_table(&results));
    std::fs::write(root.join("BENCHMARKS.md"), text).context("writing BENCHMARKS.md")?;
    eprintln!("[bench] BENCHMARKS.md rewritten");
    Ok(())
}

fn ab_rounds(lab: &AbLab, meshdrift: &Path, plan: Plan) -> anyhow::Result<AbResults> {
    let duration = Duration::from_secs(plan.seconds);
    let mut results = AbResults::default();
    for round in 0..plan.rounds {
        // Alternate which comes first, so drift over time hits both alike.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_agent in order {
            let agent = if with_agent {
                Some(start_agent(meshdrift, lab.manifests())?)
            } else {
                None
            };
            for workload in Workload::ALL {
                let sample = lab.run(workload, duration)?;
                let runs = if with_agent {
                    &mut results.with
                } else {
                    &mut results.without
                };
                runs.entry(workload).or_default().push(sample);
            }
            if let Some((agent, _)) = agent {
                agent.stop(Duration::from_secs(30))?;
            }
        }
        eprintln!("[bench]   round {}/{} done", round + 1, plan.rounds);
    }
    eprintln!("[bench]   kernel statistics pass (the agent and an empty program attached)");
    statistics_pass(lab, meshdrift, duration, &mut results)?;
    Ok(results)
}

/// Every workload once more with the agent, the kernel's per-program
/// statistics on and the empty comparison program attached beside it.
fn statistics_pass(
    lab: &AbLab,
    meshdrift: &Path,
    duration: Duration,
    results: &mut AbResults,
) -> anyhow::Result<()> {
    let _stats = sysctl::Sysctl::set("/proc/sys/kernel/bpf_stats_enabled", "1")?;
    let (agent, _) = start_agent(meshdrift, lab.manifests())?;
    let cgroup = meshdrift_host::cgroup2_root().context("finding the cgroup v2 hierarchy")?;
    let empty = EmptyProgram::attach(&cgroup)?;
    for workload in Workload::ALL {
        let before = program_stats()?;
        let sample = lab.run(workload, duration)?;
        let after = program_stats()?;
        let per_program = results.ns_per_run.entry(workload).or_default();
        for (name, (time, count)) in after {
            let (t0, c0) = before.get(&name).copied().unwrap_or((0, 0));
            per_program.insert(name, (time.saturating_sub(t0), count.saturating_sub(c0)));
        }
        results.stats_pass.insert(workload, sample);
    }
    drop(empty);
    agent.stop(Duration::from_secs(30))?;
    Ok(())
}

fn kernel_scaling(root: &Path) -> anyhow::Result<Vec<Value>> {
    let output = Command::new("cargo")
        .current_dir(root)
        .env(cmd::REQUIRE_EBPF.0, cmd::REQUIRE_EBPF.1)
        .args([
            "bench",
            "--quiet",
            "-p",
            "meshdrift-e2e",
            "--bench",
            "kernel",
        ])
        .output()
        .context("running the kernel benchmark")?;
    if !output.status.success() {
        anyhow::bail!(
            "the kernel benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect())
}

fn h2_table(
    root: &Path,
    meshdrift: &Path,
    quick: bool,
    requests: u64,
) -> anyhow::Result<Vec<(Cell, Measurement)>> {
    let example = root.join("deploy/examples/frontend");
    let concurrency: &[(u32, u32)] = if quick {
        &[(16, 32)]
    } else {
        &[(4, 1), (8, 8), (16, 32)]
    };
    let mut out = Vec::new();
    for protocol in [Protocol::Http2, Protocol::H2c] {
        for &(clients, streams) in concurrency {
            for slow_v2 in [false, true] {
                let cell = Cell {
                    protocol,
                    clients,
                    streams,
                    slow_v2,
                };
                let measured = measure(example.clone(), meshdrift.to_path_buf(), cell, requests)?;
                out.push((cell, measured));
            }
        }
    }
    Ok(out)
}

/// Machine, kernel, date and commit, for the report's header.
fn machine(root: &Path) -> BTreeMap<&'static str, String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory_gib = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1_048_576.0);
    let output = |program: &str, args: &[&str]| {
        cmd::output(Command::new(program).current_dir(root).args(args))
            .map(|text| text.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    BTreeMap::from([
        (
            "machine",
            format!("{cpu}, {cores} cores, {memory_gib:.0} GiB"),
        ),
        ("kernel", output("uname", &["-r"])),
        ("date", output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])),
        ("commit", output("git", &["rev-parse", "--short", "HEAD"])),
        ("rustc", output("rustc", &["--version"])),
    ])
}
