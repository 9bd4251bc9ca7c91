//! The budgets the project holds itself to, measured from one run: the
//! figures BENCHMARKS.md's table shows and its misses section explains.

use std::collections::BTreeMap;

use super::{
    Results,
    ab::{Sample, Workload},
    criterion, empty_program,
    stats::Summary,
};

/// ns per run of each program over all workloads while the agent was attached.
pub fn ns_per_run(results: &Results) -> BTreeMap<String, f64> {
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
pub fn statistics_cost(results: &Results) -> f64 {
    ns_per_run(results)
        .get(empty_program::NAME)
        .copied()
        .unwrap_or(0.0)
}

/// Kernel nanoseconds per connection in the statistics pass's new-connection
/// run: meshdrift's programs' time, net of the statistics' own cost per run,
/// over the connections made.
pub fn kernel_ns_per_connection(results: &Results) -> Option<f64> {
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

pub fn user_ns_per_connection(results: &Results) -> Option<f64> {
    let rate = &results.rate;
    let seconds = rate.connections as f64 / rate.achieved.max(1.0);
    (rate.connections > 0)
        .then(|| rate.agent_cores * (seconds + 2.0) * 1e9 / rate.connections as f64)
}

pub fn ratio(summary: Option<Summary>) -> String {
    summary.map_or_else(
        || NOT_MEASURED.to_owned(),
        |s| format!("**{:.3}** [{:.3}–{:.3}]", s.median, s.min, s.max),
    )
}

/// Which budget a row holds: the misses section explains each by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetId {
    NewConnections,
    KeepAlive,
    KeepAliveP99,
    Bulk,
    Program(&'static str),
    AgentCpu,
    AgentRss,
    Lost,
    ClusterRss,
    PerConnection,
}

/// One budget: what, the measured figure as shown, the budget, met or not.
pub struct Budget {
    pub id: BudgetId,
    pub what: String,
    pub measured: String,
    pub budget: String,
    pub met: bool,
}

/// What a run that did not measure a figure shows for it.
pub const NOT_MEASURED: &str = "—";

impl Budget {
    pub fn measured(&self) -> bool {
        self.measured != NOT_MEASURED
    }
}

/// The figures the project holds itself to, measured.
pub fn budgets(results: &Results) -> Vec<Budget> {
    let ab = &results.ab;
    let rate_of = |s: &Sample| Some(s.rate);
    let p99 = |s: &Sample| s.p99_ms;
    let connections = ab.ratio(Workload::NewConnections, rate_of);
    let keep_alive = ab.ratio(Workload::KeepAlive, rate_of);
    let keep_alive_p99 = ab.ratio(Workload::KeepAlive, p99);
    let bulk = ab.ratio(Workload::Bulk, rate_of);
    let ns = ns_per_run(results);
    let kernel = kernel_ns_per_connection(results);
    let user = user_ns_per_connection(results);
    let mut rows = Vec::new();
    let mut row = |id, what: &str, measured: String, budget: &str, met: bool| {
        rows.push(Budget {
            id,
            what: what.to_owned(),
            measured,
            budget: budget.to_owned(),
            met,
        });
    };
    row(
        BudgetId::NewConnections,
        "new connections/s, with / without",
        ratio(connections),
        "≥ 0.97",
        connections.is_some_and(|s| s.median >= 0.97),
    );
    row(
        BudgetId::KeepAlive,
        "keep-alive requests/s, with / without",
        ratio(keep_alive),
        "≥ 0.98",
        keep_alive.is_some_and(|s| s.median >= 0.98),
    );
    row(
        BudgetId::KeepAliveP99,
        "keep-alive p99 latency, with / without",
        ratio(keep_alive_p99),
        "≤ 1.05",
        keep_alive_p99.is_some_and(|s| s.median <= 1.05),
    );
    row(
        BudgetId::Bulk,
        "bulk throughput (iperf3), with / without",
        ratio(bulk),
        "≥ 0.98",
        bulk.is_some_and(|s| s.median >= 0.98),
    );
    let floor = statistics_cost(results);
    for (name, label, budget) in PROGRAM_BUDGETS {
        let value = ns.get(name).copied();
        let net = value.map(|v| (v - floor).max(0.0));
        row(
            BudgetId::Program(name),
            label,
            value.map_or(NOT_MEASURED.to_owned(), |v| {
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
        BudgetId::AgentCpu,
        &format!(
            "agent CPU at {} new connections/s (achieved {:.0}/s)",
            results.rate_target, results.rate.achieved
        ),
        format!("**{:.1} %** of a core", cores * 100.0),
        "≤ 3 % of a core",
        cores <= 0.03,
    );
    row(
        BudgetId::AgentRss,
        "agent peak RSS at that rate",
        format!("**{:.1} MiB**", results.rate.peak_rss_mib),
        "≤ 64 MiB",
        results.rate.peak_rss_mib <= 64.0,
    );
    row(
        BudgetId::Lost,
        "events lost at that rate",
        format!("**{}**", results.rate.lost),
        "0",
        results.rate.lost == 0,
    );
    let cluster_rss = results.criterion.printed_value(criterion::CLUSTER_RSS);
    row(
        BudgetId::ClusterRss,
        "agent peak RSS at 150 k pods and 20 k Services (the stand-in Kubernetes API)",
        cluster_rss.map_or(NOT_MEASURED.to_owned(), |value| {
            format!("**{value}** (peak, steady)")
        }),
        "< 150 MiB",
        cluster_rss
            .and_then(criterion::leading_number)
            .is_some_and(|mib| mib < 150.0),
    );
    let total = kernel.zip(user).map(|(k, u)| k + u);
    row(
        BudgetId::PerConnection,
        "kernel + user cost per connection",
        match (kernel, user) {
            (Some(k), Some(u)) => format!(
                "**{:.1} µs** ({:.1} kernel + {:.1} user)",
                (k + u) / 1e3,
                k / 1e3,
                u / 1e3
            ),
            _ => NOT_MEASURED.to_owned(),
        },
        "≤ 5 µs",
        total.is_some_and(|t| t <= 5_000.0),
    );
    rows
}

/// Each program's budget, ns per run net of the statistics' own cost.
pub const PROGRAM_BUDGETS: [(&str, &str, f64); 3] = [
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
];
