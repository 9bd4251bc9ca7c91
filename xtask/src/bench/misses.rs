//! Where the CPU goes with the agent attached (the perf profile), and for
//! each budget this run missed: what the remaining cost is made of, from
//! this run's own figures, and what would remove it.

use std::fmt::Write as _;

use super::{
    Results,
    ab::Workload,
    budgets::{
        BudgetId, budgets, kernel_ns_per_connection, ns_per_run, statistics_cost,
        user_ns_per_connection,
    },
    criterion,
    profile::Spender,
};

/// Symbols of the flow map's hash lookup, the per-packet path's largest part.
const LOOKUP_SYMBOLS: [&str; 3] = [
    "__htab_map_lookup_elem",
    "lookup_nulls_elem_raw",
    "htab_map_hash",
];

pub fn render(results: &Results) -> String {
    let mut out = profile_section(results);
    let missed: Vec<_> = budgets(results)
        .into_iter()
        .filter(|b| b.measured() && !b.met)
        .collect();
    if missed.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## Budgets missed: what the rest is made of\n");
    for budget in missed {
        let _ = writeln!(
            out,
            "- **{}** ({}; budget {}). {}\n",
            budget.what,
            budget.measured.replace("**", ""),
            budget.budget,
            explain(results, budget.id)
        );
    }
    out
}

fn profile_section(results: &Results) -> String {
    let profile = &results.profile;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Where the CPU goes\n\n\
         `perf record -a -e cpu-clock` over {} s ({} samples on both cores) while the \
         new-connection workload ran with the agent attached (`net.core.bpf_jit_kallsyms=1`, \
         so the programs' JIT code has names):\n",
        profile.seconds, profile.samples
    );
    let _ = writeln!(out, "| who | share of all CPU samples |");
    let _ = writeln!(out, "|---|---|");
    for spender in [
        Spender::Programs,
        Spender::BpfRuntime,
        Spender::Agent,
        Spender::Workload,
        Spender::Idle,
    ] {
        let _ = writeln!(
            out,
            "| {} | {:.1} % |",
            spender.describe(),
            profile.share(spender)
        );
    }
    let _ = writeln!(
        out,
        "| symbols under 0.01 % each, not attributed | {:.1} % |",
        profile.unlisted()
    );
    let top = profile.top_of_meshdrift(12);
    if !top.is_empty() {
        let _ = writeln!(
            out,
            "\nThe heaviest symbols meshdrift answers for (the command is whichever \
             process's packet or syscall ran them):\n"
        );
        let _ = writeln!(out, "| command | symbol | share |");
        let _ = writeln!(out, "|---|---|---|");
        for symbol in top {
            let _ = writeln!(
                out,
                "| {} | `{}` | {:.2} % |",
                symbol.command, symbol.symbol, symbol.percent
            );
        }
    }
    out.push('\n');
    out
}

fn lookup_share(results: &Results) -> f64 {
    results
        .profile
        .symbols
        .iter()
        .filter(|s| LOOKUP_SYMBOLS.contains(&s.symbol.as_str()))
        .map(|s| s.percent)
        .sum()
}

/// Runs of each program per connection in the new-connection statistics pass.
fn runs_per_connection(results: &Results) -> Vec<(String, f64)> {
    let Some(programs) = results.ab.ns_per_run.get(&Workload::NewConnections) else {
        return Vec::new();
    };
    let connections = results
        .ab
        .stats_pass
        .get(&Workload::NewConnections)
        .map_or(0.0, |s| s.rate * results.plan.seconds as f64);
    programs
        .iter()
        .filter(|(name, _)| name.starts_with("meshdrift_") && name.as_str() != "meshdrift_empty")
        .map(|(name, (_, count))| (name.clone(), *count as f64 / connections.max(1.0)))
        .collect()
}

const SK_STORAGE: &str = "What would remove it: per-socket storage (`BPF_MAP_TYPE_SK_STORAGE`, \
     `bpf_sk_storage_get`) reaches a flow's state from the socket itself, without hashing \
     the cookie into a shared table; the update-interval sweep would then walk sockets with \
     a `bpf_iter` over the storage instead of a batched map read, and the kernel self-tests, \
     which drive the programs with `BPF_PROG_TEST_RUN` on packets that have no socket, \
     would have to run on real sockets.";

fn explain(results: &Results, id: BudgetId) -> String {
    let profile = &results.profile;
    let ours = profile.share(Spender::Programs)
        + profile.share(Spender::BpfRuntime)
        + profile.share(Spender::Agent);
    let kernel_us = kernel_ns_per_connection(results).unwrap_or(f64::NAN) / 1e3;
    let user_us = user_ns_per_connection(results).unwrap_or(f64::NAN) / 1e3;
    let runs = runs_per_connection(results)
        .iter()
        .map(|(name, runs)| format!("`{name}` {runs:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    match id {
        BudgetId::NewConnections => {
            let without = results
                .ab
                .values(false, Workload::NewConnections, |s| Some(s.rate))
                .map_or(f64::NAN, |s| s.median);
            let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
            let budget_us = cores * 1e6 / without;
            let predicted = budget_us / (budget_us + kernel_us + user_us);
            let idle = profile.share(Spender::Idle);
            format!(
                "Each connection runs the programs {runs} times: {kernel_us:.1} µs of kernel \
                 time, plus {user_us:.1} µs in the agent's user space. Without the agent the \
                 machine's {cores:.0} cores spent {budget_us:.1} µs per connection (wrk and \
                 nginx share them), so that cost alone predicts a ratio of {predicted:.3}. \
                 In the profile meshdrift's programs, the BPF runtime they call and the \
                 agent hold {ours:.1} % of all CPU samples (the flow map's hash lookup alone \
                 {:.1} %), and the CPUs were idle {idle:.1} % of the time: wrk keeps 16 \
                 connections in flight, so its rate follows each connection's latency, not \
                 only CPU. The gap beyond the CPU cost is not explained by this profile; \
                 the range of the rounds shows this VM's noise is of the same order. A \
                 budget of 0.97 leaves 3 % of {budget_us:.1} µs, about {:.1} µs per \
                 connection for kernel and agent together. {SK_STORAGE}",
                lookup_share(results),
                budget_us * 0.03
            )
        }
        BudgetId::Program(name) => {
            let measured = ns_per_run(results).get(name).copied().unwrap_or(f64::NAN);
            let floor = statistics_cost(results);
            let program_share: f64 = profile
                .symbols
                .iter()
                .filter(|s| s.symbol.ends_with(name))
                .map(|s| s.percent)
                .sum();
            let single = results
                .kernel_scaling
                .first()
                .and_then(|row| row["egress_ns_per_packet"].as_f64());
            format!(
                "{measured:.0} ns per run as the kernel counts it, of which {floor:.0} ns is \
                 the statistics' own clock reads (the empty program's run; subtracted). The \
                 profile puts this program's JIT code at {program_share:.2} % of all samples \
                 and the hash lookup it makes on every packet (`__htab_map_lookup_elem`, \
                 `lookup_nulls_elem_raw`) at {:.2} % for all programs together: the lookup \
                 is the largest part, the counters (atomic adds) and the turn logic the \
                 rest. Timed alone on one flow with `BPF_PROG_TEST_RUN` the egress path \
                 costs {} ns, so the figure above is mostly the lookup's cache misses \
                 under real traffic. {SK_STORAGE}",
                lookup_share(results),
                single.map_or("—".to_owned(), |ns| format!("{ns:.0}")),
            )
        }
        BudgetId::PerConnection => format!(
            "{kernel_us:.1} µs in the kernel (the programs' runs per connection: {runs}; \
             see the programs' rows) and {user_us:.1} µs in the agent: decoding the \
             ring-buffer records, joining a flow's records, classifying its first bytes, \
             attribution against the inventory and policy, tallying and metrics (the \
             criterion pipeline benchmark below times the same path on one core). What \
             would remove the kernel part is in the programs' rows. The user part would \
             shrink by attributing a client pod and server endpoint once and \
             reusing it for every later connection between them, and by sending the \
             server side of a connection between two pods on one node only when the \
             client side cannot be attributed."
        ),
        BudgetId::KeepAlive | BudgetId::KeepAliveP99 | BudgetId::Bulk => format!(
            "Per packet the programs cost what their rows show; in the profile \
             meshdrift's share of all CPU is {ours:.1} %. When the range of the rounds \
             spans the budget the miss is this VM's noise as much as the agent."
        ),
        BudgetId::ClusterRss => {
            let held = results
                .criterion
                .printed_value(criterion::HEAP_HELD)
                .unwrap_or("—");
            format!(
                "What the agent holds at that size, measured on the heap by a counting \
                 allocator (inventory index, policies, policy objects kept for rebuilds): \
                 {held}; the rest is the binary, the async runtime, the kernel objects' \
                 metadata and the allocator's slack. The index already keeps each string \
                 once (interned labels and names) and a pod change costs what that pod \
                 touches; per pod it still holds the pod's record, its IP, its name, its \
                 label postings and its endpoint entries in hash maps of its own. What \
                 would remove most of the rest: keep only the pods on this node and the \
                 endpoints of Services they reach in full, and the remaining pods as an \
                 IP → (workload, labels-id) table of a few dozen bytes each; build the \
                 policies lazily per host instead of for all 20 000 at once; and drop the \
                 raw policy objects after building, re-listing a kind when one changes."
            )
        }
        BudgetId::AgentCpu | BudgetId::AgentRss | BudgetId::Lost => format!(
            "The agent's threads held {:.1} % of all CPU samples in the profile; \
             the per-connection user-space cost is {user_us:.1} µs.",
            profile.share(Spender::Agent)
        ),
    }
}
