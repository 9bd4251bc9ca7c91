//! BENCHMARKS.md from one run's results.

use std::{collections::BTreeMap, fmt::Write as _};

use meshdrift_lab::{h2_error::ESTIMATORS, scenario::Protocol};

use super::{
    Results,
    ab::{Sample, Workload},
    empty_program,
    stats::Summary,
};

/// ns per run of each program over all workloads while the agent was attached.
fn ns_per_run(results: &Results) -> BTreeMap<String, f64> {
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for programs in results.ab.ns_per_run.values() {
        for (name, (time, count)) in programs {
            let entry = totals.entry(name.clone()).or_insert((0, 0));
            entry.0 += time;
            entry.1 += count;
        }
    }
    totals
        .into_iter()
        .map(|(name, (time, count))| (name, time as f64 / count.max(1) as f64))
        .collect()
}

/// What the kernel's statistics add to any program run: the empty
/// comparison program's ns per run.
fn statistics_cost(results: &Results) -> f64 {
    ns_per_run(results)
        .get(empty_program::NAME)
        .copied()
        .unwrap_or(0.0)
}

/// Kernel nanoseconds per connection in the statistics pass's new-connection
/// run: meshdrift's programs' time, net of the statistics' own cost per run,
/// over the connections made.
fn kernel_ns_per_connection(results: &Results) -> Option<f64> {
    let programs = results.ab.ns_per_run.get(&Workload::NewConnections)?;
    let floor = statistics_cost(results);
    let time: f64 = programs
        .iter()
        .filter(|(name, _)| name.as_str() != empty_program::NAME)
        .map(|(_, (time, count))| (*time as f64 - floor * *count as f64).max(0.0))
        .sum();
    let connections =
        results.ab.stats_pass.get(&Workload::NewConnections)?.rate * results.plan.seconds as f64;
    (connections > 0.0).then(|| time / connections)
}

fn user_ns_per_connection(results: &Results) -> Option<f64> {
    let rate = &results.rate;
    let seconds = rate.connections as f64 / rate.achieved.max(1.0);
    (rate.connections > 0)
        .then(|| rate.agent_cores * (seconds + 2.0) * 1e9 / rate.connections as f64)
}

fn ratio(summary: Option<Summary>) -> String {
    summary.map_or_else(
        || "—".to_owned(),
        |s| format!("**{:.3}** [{:.3}–{:.3}]", s.median, s.min, s.max),
    )
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The budget table: the figures the project holds itself to.
pub fn summary_table(results: &Results) -> String {
    let ab = &results.ab;
    let rate_of = |s: &Sample| Some(s.rate);
    let p99 = |s: &Sample| s.p99_ms;
    let connections = ab.ratio(Workload::NewConnections, rate_of);
    let keep_alive = ab.ratio(Workload::KeepAlive, rate_of);
    let keep_alive_p99 = ab.ratio(Workload::KeepAlive, p99);
    let bulk = ab.ratio(Workload::Bulk, rate_of);
    let ns = ns_per_run(results);
    let program = |name: &str| ns.get(name).copied();
    let kernel = kernel_ns_per_connection(results);
    let user = user_ns_per_connection(results);
    let mut t = String::new();
    let _ = writeln!(t, "| what | measured | budget | |");
    let _ = writeln!(t, "|---|---|---|---|");
    let mut row = |what: &str, measured: String, budget: &str, ok: bool| {
        let _ = writeln!(t, "| {what} | {measured} | {budget} | {} |", verdict(ok));
    };
    row(
        "new connections/s, with / without",
        ratio(connections),
        "≥ 0.97",
        connections.is_some_and(|s| s.median >= 0.97),
    );
    row(
        "keep-alive requests/s, with / without",
        ratio(keep_alive),
        "≥ 0.98",
        keep_alive.is_some_and(|s| s.median >= 0.98),
    );
    row(
        "keep-alive p99 latency, with / without",
        ratio(keep_alive_p99),
        "≤ 1.05",
        keep_alive_p99.is_some_and(|s| s.median <= 1.05),
    );
    row(
        "bulk throughput (iperf3), with / without",
        ratio(bulk),
        "≥ 0.98",
        bulk.is_some_and(|s| s.median >= 0.98),
    );
    let floor = statistics_cost(results);
    for (name, label, budget) in [
        ("meshdrift_sockops", "`sock_ops`, average ns per run", 150.0),
        (
            "meshdrift_egress",
            "`cgroup_skb` egress, average ns per run",
            100.0,
        ),
        (
            "meshdrift_ingress",
            "`cgroup_skb` ingress, average ns per run",
            60.0,
        ),
    ] {
        let value = program(name);
        let net = value.map(|v| (v - floor).max(0.0));
        row(
            label,
            value.map_or("—".to_owned(), |v| {
                format!(
                    "**{:.0}** net ({v:.0} measured − {floor:.0} empty program)",
                    (v - floor).max(0.0)
                )
            }),
            &format!("≤ {budget:.0}"),
            net.is_some_and(|v| v <= budget),
        );
    }
    let cores = results.rate.agent_cores;
    row(
        &format!(
            "agent CPU at {} new connections/s (achieved {:.0}/s)",
            results.rate_target, results.rate.achieved
        ),
        format!("**{:.1} %** of a core", cores * 100.0),
        "≤ 3 % of a core",
        cores <= 0.03,
    );
    row(
        "agent peak RSS at that rate",
        format!("**{:.1} MiB**", results.rate.peak_rss_mib),
        "≤ 64 MiB",
        results.rate.peak_rss_mib <= 64.0,
    );
    row(
        "events lost at that rate",
        format!("**{}**", results.rate.lost),
        "0",
        results.rate.lost == 0,
    );
    let total = kernel.zip(user).map(|(k, u)| k + u);
    row(
        "kernel + user cost per connection",
        match (kernel, user) {
            (Some(k), Some(u)) => format!(
                "**{:.1} µs** ({:.1} kernel + {:.1} user)",
                (k + u) / 1e3,
                k / 1e3,
                u / 1e3
            ),
            _ => "—".to_owned(),
        },
        "≤ 5 µs",
        total.is_some_and(|t| t <= 5_000.0),
    );
    t
}

pub fn render(results: &Results, machine: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::new();
    let get = |key: &str| machine.get(key).cloned().unwrap_or_default();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Every figure below comes from one run of\n\n```\n{}\n```\n\n\
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
