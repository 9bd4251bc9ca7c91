//! BENCHMARKS.md from one run's results.

use std::{collections::BTreeMap, fmt::Write as _};

use meshdrift_lab::{h2_error::ESTIMATORS, scenario::Protocol};

use super::{
    Results,
    ab::{Sample, Workload},
    budgets::{budgets, kernel_ns_per_connection, ns_per_run, ratio, user_ns_per_connection},
    misses,
    stats::Summary,
};

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The budget table.
pub fn summary_table(results: &Results) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "| what | measured | budget | |");
    let _ = writeln!(t, "|---|---|---|---|");
    for budget in budgets(results) {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} |",
            budget.what,
            budget.measured,
            budget.budget,
            if budget.measured() {
                verdict(budget.met)
            } else {
                "not measured in this run"
            }
        );
    }
    t
}

pub fn render(results: &Results, machine: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::new();
    let get = |key: &str| machine.get(key).cloned().unwrap_or_default();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Every figure below, except in the sections that name their own command, comes \
         from one run of\n\n```\n{}\n```\n\n\
         on {}, Linux {}, {} (commit `{}`, {}). A/B pairs alternate which side runs first \
         over {} rounds of {} s; ratios are with/without per round, shown as the median \
         [lowest–highest]. The kernel's figures are its own per-program statistics \
         (`kernel.bpf_stats_enabled`, `bpftool prog show`) while the agent was attached.\n",
        results.command,
        get("machine"),
        get("kernel"),
        get("date"),
        get("commit"),
        get("rustc"),
        results.plan.rounds,
        results.plan.seconds
    );
    let _ = writeln!(out, "## Budgets\n\n{}", summary_table(results));
    out.push_str(&misses::render(results));

    let _ = writeln!(out, "## With and without the agent\n");
    let _ = writeln!(
        out,
        "| traffic | without (median) | with (median) | with / without | p50 without → with | p99 without → with |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for workload in Workload::ALL {
        let rate_of = |s: &Sample| Some(s.rate);
        let fmt = |s: Option<Summary>| {
            s.map_or_else(
                || "—".to_owned(),
                |s| format!("{:.2} {}", s.median, workload.unit()),
            )
        };
        let latency = |metric: fn(&Sample) -> Option<f64>| {
            let without = results.ab.values(false, workload, metric);
            let with = results.ab.values(true, workload, metric);
            match (without, with) {
                (Some(without), Some(with)) if workload != Workload::Bulk => {
                    format!("{:.3} → {:.3} ms", without.median, with.median)
                }
                _ => "—".to_owned(),
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            workload.describe(),
            fmt(results.ab.values(false, workload, rate_of)),
            fmt(results.ab.values(true, workload, rate_of)),
            ratio(results.ab.ratio(workload, rate_of)),
            latency(|s| s.p50_ms),
            latency(|s| s.p99_ms),
        );
    }

    let _ = writeln!(out, "\n## Kernel programs, ns per run\n");
    let programs: Vec<String> = ns_per_run(results).keys().cloned().collect();
    let _ = writeln!(out, "| traffic | {} |", programs.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(programs.len()));
    for (workload, stats) in &results.ab.ns_per_run {
        let cells: Vec<String> = programs
            .iter()
            .map(|name| {
                stats.get(name).map_or("—".to_owned(), |(time, count)| {
                    format!(
                        "{:.0} ({} runs)",
                        *time as f64 / (*count).max(1) as f64,
                        count
                    )
                })
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", workload.describe(), cells.join(" | "));
    }
    let all = ns_per_run(results);
    let cells: Vec<String> = programs
        .iter()
        .map(|name| {
            all.get(name)
                .map_or("—".to_owned(), |v| format!("**{v:.0}**"))
        })
        .collect();
    let _ = writeln!(out, "| all of the above | {} |", cells.join(" | "));

    let rate = &results.rate;
    let _ = writeln!(
        out,
        "\n## The agent at {} new connections/s\n\n\
         h2load (`--h1`, one request per connection, connections opened evenly every 10 ms) \
         against nginx for {} s: {} connections at {:.0}/s. The agent (`meshdrift run`, \
         release build) used **{:.1} %** of one core (utime + stime from `/proc/PID/stat` over \
         the run and the 2 s after it); its peak RSS (`VmHWM`) was **{:.1} MiB**; it lost \
         **{}** events. User space spent {:.2} µs per connection; the kernel {:.2} µs \
         (all programs, in the new-connection runs above).\n",
        results.rate_target,
        results.plan.rate_seconds,
        rate.connections,
        rate.achieved,
        rate.agent_cores * 100.0,
        rate.peak_rss_mib,
        rate.lost,
        user_ns_per_connection(results).unwrap_or(f64::NAN) / 1e3,
        kernel_ns_per_connection(results).unwrap_or(f64::NAN) / 1e3,
    );

    let _ = writeln!(out, "## User-space pipeline (criterion)\n");
    if let Some(ns) = results.criterion.median_ns.get("pipeline/record_to_tally") {
        // 1 000 connections of four records each per iteration.
        let records = 4_000.0;
        let _ = writeln!(
            out,
            "`agent/benches/pipeline.rs`: ring-buffer records (a client and a server socket's \
             first bytes and closes per connection) decoded, joined, attributed against the \
             frontend example, tallied and counted in the metrics, on one core: \
             **{:.2} M events/s**, {:.2} µs per connection (budget ≥ 1 M events/s).\n",
            records / ns * 1e3,
            ns / 1e3 / 1_000.0
        );
    }

    let _ = writeln!(out, "## As tracked flows grow\n");
    let _ = writeln!(
        out,
        "`tests/benches/kernel.rs`: the flow map filled with synthetic flows; the packet path \
         timed with `BPF_PROG_TEST_RUN` on one of them (a client TLS record: lookup, counters, \
         turn, record walk); one sweep of the whole map read and joined in user space (the \
         agent sweeps once per update interval, 10 s by default).\n"
    );
    let _ = writeln!(
        out,
        "| flows | egress ns per packet | sweep ms | sweep ns per flow |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    for row in &results.kernel_scaling {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} |",
            row["flows"],
            row["egress_ns_per_packet"],
            row["sweep_ms"].as_f64().unwrap_or(f64::NAN),
            row["sweep_ns_per_flow"].as_f64().unwrap_or(f64::NAN)
        );
    }

    let _ = writeln!(out, "\n## Policy engine and inventory\n");
    if results.plan.quick {
        let _ = writeln!(
            out,
            "`--quick` leaves the scale benchmarks (150 k pods) to the full run.\n"
        );
    }
    let median = |id: &str| results.criterion.median_ns.get(id).copied();
    let _ = writeln!(out, "| what | measured |");
    let _ = writeln!(out, "|---|---|");
    for (id, what) in [
        (
            "build/inventory_index_150k_pods_20k_services",
            "inventory index build, 150 k pods and 20 k services",
        ),
        (
            "build/policies_20k_vs_20k_dr",
            "policy index build, 20 k VirtualServices + 20 k DestinationRules",
        ),
        ("expectation_lookup", "one expectation lookup"),
        ("pod_by_ip", "pod by IP"),
    ] {
        let _ = writeln!(
            out,
            "| {what} | {} |",
            median(id).map_or("—".to_owned(), human_ns)
        );
    }
    for printed in &results.criterion.printed {
        if let Some(what) = printed["what"].as_str() {
            let _ = writeln!(
                out,
                "| {what} | {} |",
                printed["value"].as_str().unwrap_or("")
            );
        }
    }

    let _ = writeln!(
        out,
        "\n## HTTP/2: request estimators against HAProxy's counts\n"
    );
    let _ = writeln!(
        out,
        "HAProxy (the client's proxy) splits 50/50 between v1 and v2 over HTTP/2, h2load drives \
         it ({} requests per cell); the truth is HAProxy's per-server request count. \
         \"slow v2\": v2 answers at 40 kB/s (about 50 ms per response), so more requests are \
         in flight on its connections; both serve the same 2 kB responses then. Each cell: \
         count error (largest over v1 and v2, relative) / error of v1's share (points). \
         `client_records` is TLS application-data records over TLS, HEADERS frames on h2c.\n",
        results.plan.h2_requests
    );
    let _ = writeln!(
        out,
        "| protocol | clients × streams | slow v2 | {} |",
        ESTIMATORS.join(" | ")
    );
    let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(ESTIMATORS.len()));
    let mut worst_share = 0.0f64;
    for (cell, measured) in &results.h2 {
        let cells: Vec<String> = ESTIMATORS
            .iter()
            .map(|estimator| {
                let count = measured.count_error(estimator);
                let share = measured.share_error(estimator);
                if *estimator == "client_bytes" {
                    format!("— / {:.1}", share * 100.0)
                } else {
                    format!("{:.0} % / {:.1}", count * 100.0, share * 100.0)
                }
            })
            .collect();
        if cell.protocol == Protocol::Http2 {
            worst_share = worst_share.max(measured.share_error("client_records"));
        }
        let _ = writeln!(
            out,
            "| {} | {} × {} | {} | {} |",
            match cell.protocol {
                Protocol::Http2 => "h2 (TLS)",
                Protocol::H2c => "h2c",
                Protocol::Http1 => "http/1.1",
            },
            cell.clients,
            cell.streams,
            if cell.slow_v2 { "yes" } else { "no" },
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        out,
        "\nChosen: h2c counts HEADERS frames (exact); HTTP/2 over TLS counts TLS records, \
         whose share error here peaks at **{:.1} points**; the agent marks such splits \
         *estimated* and adds 10 points to the tolerance before calling drift \
         (`ESTIMATED_SHARE_ERROR`).",
        worst_share * 100.0
    );
    out
}

/// Sections of BENCHMARKS.md that other commands measure, with the command
/// in their text; `cargo xtask bench` keeps them as they are.
pub const CARRIED_OVER: &[&str] = &["## Drift alarms under continuous evaluation"];

/// The [`CARRIED_OVER`] sections of `previous` (the file before this run), each
/// from its heading to the next second-level heading, preceded by a blank line.
pub fn carried_over(previous: &str) -> String {
    let mut out = String::new();
    let mut keeping = false;
    for line in previous.lines() {
        if line.starts_with("## ") {
            keeping = CARRIED_OVER.contains(&line.trim_end());
            if keeping {
                out.push('\n');
            }
        }
        if keeping {
            out.push_str(line);
            out.push('\n');
        }
    }
    // One trailing newline, whatever the sections ended with.
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_over_keeps_only_the_named_sections() {
        let previous = "# Benchmarks\n\n## Budgets\n\n| a |\n\n\
                        ## Drift alarms under continuous evaluation\n\ntext\n\n| t |\n\n\n\
                        ## HTTP/2\n\nmore\n";
        assert_eq!(
            carried_over(previous),
            "\n## Drift alarms under continuous evaluation\n\ntext\n\n| t |\n"
        );
        assert_eq!(carried_over("# Benchmarks\n\n## Budgets\n"), "");
        assert_eq!(carried_over(""), "");
    }
}
