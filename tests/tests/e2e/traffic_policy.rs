//! DestinationRule traffic policies, one lab per check (on the lab's real
//! control plane, the agent reading the API server): `client-obey`'s
//! sidecar does what the rule declares, `client-break`'s does not. Each test
//! first shows from HAProxy's own counters and the servers' logs that the
//! proxies really obeyed and broke the field, then that the agent's report
//! says so: `ok` for client-obey, `violation` for client-break. Needs root.

use std::{collections::BTreeMap, time::Duration};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    HaproxyStats, meshdrift_bin,
    scenario::Inventory,
    traffic_policy::{
        BACKEND_PODS, EXTERNAL_HOST, EXTERNAL_POD, IDLE, PolicyCheck, REFUSING_POD, Side,
        TrafficPolicyConfig, TrafficPolicyLab, WRONG_SNI,
    },
};
use serde_json::Value;

/// How long the report may take to judge both workloads.
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// The check's lab on the real control plane: the agent installed from
/// `deploy/kubernetes`, reading the API server.
fn config(check: PolicyCheck) -> TrafficPolicyConfig {
    TrafficPolicyConfig {
        inventory: Inventory::KUBERNETES,
        ..TrafficPolicyConfig::new(check, meshdrift_bin())
    }
}

fn start(check: PolicyCheck) -> TrafficPolicyLab {
    let lab = TrafficPolicyLab::start(config(check)).expect("starting the traffic-policy lab");
    lab.send_load().expect("the check's load");
    lab
}

fn stats(lab: &TrafficPolicyLab, side: Side) -> HaproxyStats {
    lab.proxy(side).stats().expect("HAProxy's stats")
}

/// Requests per backend endpoint, from the proxy's per-server `stot`.
fn requests(lab: &TrafficPolicyLab, side: Side) -> BTreeMap<String, u64> {
    stats(lab, side)
        .servers
        .iter()
        .map(|server| (server.name.clone(), server.stot))
        .collect()
}

/// Part (b): the report's rows for both workloads, polled until client-obey's
/// verdict is `ok` and client-break's `violation`.
fn expect_verdicts(lab: &TrafficPolicyLab) {
    let verdict = |report: &Value, side| {
        lab.policy_row(report, side)
            .and_then(|row| row["verdict"].as_str())
            .map(str::to_owned)
    };
    let (report, settled) = lab
        .wait_report(REPORT_TIMEOUT, |report| {
            verdict(report, Side::Obey).as_deref() == Some("ok")
                && verdict(report, Side::Break).as_deref() == Some("violation")
        })
        .expect("the agent's report");
    let rows = |side| {
        lab.policy_row(&report, side)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert!(
        settled,
        "{}: want client-obey ok and client-break violation, got\n  client-obey: {}\n  client-break: {}\nall policies: {:#}",
        lab.check.name(),
        rows(Side::Obey),
        rows(Side::Break),
        report["policies"]
    );
    for side in Side::BOTH {
        let row = rows(side);
        assert_eq!(row["host"], lab.check.host(), "{row}");
        assert!(row["samples"].as_u64().unwrap_or(0) > 0, "{row}");
    }
}

#[test]
fn load_balancer_round_robin_is_judged_from_each_workloads_requests() {
    let _slot = privileged();
    let lab = start(PolicyCheck::LoadBalancer);
    let share_a = |side| {
        let served = requests(&lab, side);
        assert_eq!(served.values().sum::<u64>(), 400, "{served:?}");
        served[BACKEND_PODS[0]] as f64 / 400.0
    };
    let (obey, broken) = (share_a(Side::Obey), share_a(Side::Break));
    assert!(
        (0.45..=0.55).contains(&obey),
        "round robin gave backend-v1-a {obey:.3}"
    );
    assert!(
        (0.85..=0.95).contains(&broken),
        "weights 9:1 gave backend-v1-a {broken:.3}"
    );
    expect_verdicts(&lab);
    // The per-endpoint counter equals what each HAProxy sent each server,
    // and the violation gauge names the check.
    let truth: Vec<(Side, String, u64)> = Side::BOTH
        .into_iter()
        .flat_map(|side| {
            requests(&lab, side)
                .into_iter()
                .map(move |(server, n)| (side, server, n))
        })
        .collect();
    let deadline = std::time::Instant::now() + REPORT_TIMEOUT;
    let (metrics, counted) = loop {
        let metrics = lab.metrics().expect("the agent's metrics");
        let counted: Vec<(Side, String, Option<f64>)> = truth
            .iter()
            .map(|(side, server, _)| {
                let value = sample(
                    &metrics,
                    "meshdrift_endpoint_requests_total",
                    &[
                        ("source_workload", side.pod_name()),
                        ("destination_pod", &format!("default/{server}")),
                        ("destination_subset", "v1"),
                    ],
                );
                (*side, server.clone(), value)
            })
            .collect();
        let exact = truth
            .iter()
            .zip(&counted)
            .all(|((_, _, n), (_, _, value))| *value == Some(*n as f64));
        if exact || std::time::Instant::now() > deadline {
            break (metrics, counted);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for ((side, server, n), (_, _, value)) in truth.iter().zip(&counted) {
        assert_eq!(
            *value,
            Some(*n as f64),
            "{} → {server}: HAProxy sent {n}, meshdrift_endpoint_requests_total says {value:?}",
            side.pod_name()
        );
    }
    for (side, expected) in [(Side::Obey, 0.0), (Side::Break, 1.0)] {
        let gauge = sample(
            &metrics,
            "meshdrift_policy_violation",
            &[
                ("source_workload", side.pod_name()),
                ("check", "load_balancer"),
            ],
        );
        assert_eq!(
            gauge,
            Some(expected),
            "{}'s violation gauge",
            side.pod_name()
        );
    }
}

/// The value of the first sample of `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(key, value)| set.contains(&format!("{key}=\"{value}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[test]
fn consistent_hash_on_the_source_ip_is_judged_from_where_one_client_lands() {
    let _slot = privileged();
    let lab = start(PolicyCheck::ConsistentHash);
    let obey = requests(&lab, Side::Obey);
    assert_eq!(
        obey.values().max().copied(),
        Some(100),
        "balance source spread one client over endpoints: {obey:?}"
    );
    let broken = requests(&lab, Side::Break);
    assert!(
        broken.values().all(|&n| n >= 40) && broken.values().sum::<u64>() == 100,
        "round robin did not spread the client: {broken:?}"
    );
    expect_verdicts(&lab);
}

/// The connections `side`'s proxy holds open to the backend now, in use or
/// idle in its pool.
fn pooled(lab: &TrafficPolicyLab, side: Side) -> u64 {
    lab.proxy(side)
        .connections()
        .expect("HAProxy's pools")
        .iter()
        .map(|c| c.used_cur + c.idle_cur)
        .sum()
}

/// The `N` of the report's "at most N open at once".
fn most_open(row: &Value) -> u64 {
    row["observed"]
        .as_str()
        .and_then(|text| text.split("at most ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no open count in {row}"))
}

/// The agent's window in the pooled test: short, so the pools outlive it
/// as pooled upstream connections outlive any window in a mesh.
const SHORT_WINDOW: Duration = Duration::from_secs(10);

#[test]
fn max_connections_is_judged_from_pools_that_stay_open() {
    let _slot = privileged();
    let mut config = config(PolicyCheck::MaxConnections);
    config.agent_args = ["--window", "10s"].map(str::to_owned).to_vec();
    let lab = TrafficPolicyLab::start(config).expect("starting the traffic-policy lab");
    lab.send_load().expect("the check's load");
    // Every connection opened more than a window ago: nothing but what is
    // open now can show the pools.
    std::thread::sleep(SHORT_WINDOW + Duration::from_secs(3));
    let most_in_use = |side| {
        let connections = lab.proxy(side).connections().expect("HAProxy's pools");
        assert_eq!(connections.len(), 2, "{connections:?}");
        (
            connections.iter().map(|c| c.used_max).collect::<Vec<_>>(),
            stats(&lab, side)
                .servers
                .iter()
                .map(|s| s.smax)
                .collect::<Vec<_>>(),
        )
    };
    let (obey_used, obey_smax) = most_in_use(Side::Obey);
    assert!(
        obey_used.iter().all(|&n| n <= 1) && obey_smax.iter().all(|&n| n <= 1),
        "maxconn 1 per endpoint exceeded: used_max {obey_used:?}, smax {obey_smax:?}"
    );
    let (broken_used, broken_smax) = most_in_use(Side::Break);
    assert!(
        broken_used.iter().sum::<u64>() > 2 && broken_smax.iter().sum::<u64>() > 2,
        "16 concurrent clients stayed within 2 connections: used_max {broken_used:?}, smax {broken_smax:?}"
    );
    // The load is over; both pools are still open, as in a mesh.
    let (obey_pool, broken_pool) = (pooled(&lab, Side::Obey), pooled(&lab, Side::Break));
    assert!(
        (1..=2).contains(&obey_pool) && broken_pool > 2,
        "pools after the load: client-obey {obey_pool}, client-break {broken_pool}"
    );
    expect_verdicts(&lab);
    let report = lab.report().expect("the agent's report");
    let row = |side| {
        lab.policy_row(&report, side)
            .cloned()
            .unwrap_or(Value::Null)
    };
    // Read while the pools are open: what is open is counted.
    let (obey_now, broken_now) = (pooled(&lab, Side::Obey), pooled(&lab, Side::Break));
    assert_eq!(
        (obey_now, broken_now),
        (obey_pool, broken_pool),
        "the pools changed during the report"
    );
    let obey_seen = most_open(&row(Side::Obey));
    assert!(
        (obey_pool..=2).contains(&obey_seen),
        "client-obey holds {obey_pool} open, the report says at most {obey_seen}: {}",
        row(Side::Obey)
    );
    let broken_seen = most_open(&row(Side::Break));
    assert!(
        broken_seen >= broken_pool,
        "client-break holds {broken_pool} open, the report says at most {broken_seen}: {}",
        row(Side::Break)
    );
}

#[test]
fn max_requests_per_connection_is_judged_from_requests_on_each_connection() {
    let _slot = privileged();
    let lab = start(PolicyCheck::MaxRequestsPerConnection);
    // What the endpoints' sidecars saw on each of the client proxy's
    // connections (the applications behind them see the sidecars' own pool).
    let per_connection = |side: Side| -> Vec<u64> {
        BACKEND_PODS[..2]
            .iter()
            .flat_map(|pod| {
                lab.inbound(pod)
                    .expect("the endpoint's inbound proxy")
                    .requests_by_connection(side.pod_name())
                    .expect("its access log")
                    .into_values()
            })
            .collect()
    };
    let obey = per_connection(Side::Obey);
    assert_eq!(obey.iter().sum::<u64>(), 300, "{obey:?}");
    assert!(
        obey.iter().all(|&n| n <= 10),
        "max-reuse 9 carried more than 10 requests on a connection: {obey:?}"
    );
    let broken = per_connection(Side::Break);
    assert_eq!(broken.iter().sum::<u64>(), 300, "{broken:?}");
    assert!(
        broken.iter().any(|&n| n > 10),
        "no connection carried more than 10 requests: {broken:?}"
    );
    let obey_stats = stats(&lab, Side::Obey).total();
    assert!(
        obey_stats.connect >= 30,
        "HAProxy opened {} connections for 300 requests",
        obey_stats.connect
    );
    expect_verdicts(&lab);
}

#[test]
fn idle_timeout_is_judged_from_connections_left_open_idle() {
    let _slot = privileged();
    let lab = start(PolicyCheck::IdleTimeout);
    // `send_load` ended with IDLE of silence.
    let idle = |side: Side| -> u64 {
        lab.proxy(side)
            .connections()
            .expect("HAProxy's pools")
            .iter()
            .map(|c| c.idle_cur + c.used_cur)
            .sum()
    };
    let obey = stats(&lab, Side::Obey).total();
    assert_eq!(
        (idle(Side::Obey), obey.connect),
        (0, 20),
        "client-obey's proxy kept a connection past its response"
    );
    let open = idle(Side::Break);
    assert!(
        open >= 1,
        "client-break's proxy kept no connection open through {IDLE:?} of silence"
    );
    // The endpoints' sidecars saw the same: one request per connection
    // from client-obey, a few long-lived ones from client-break.
    let connections = |side: Side| -> usize {
        BACKEND_PODS[..2]
            .iter()
            .map(|pod| {
                lab.inbound(pod)
                    .expect("the endpoint's inbound proxy")
                    .requests_by_connection(side.pod_name())
                    .expect("its access log")
                    .len()
            })
            .sum()
    };
    assert_eq!(connections(Side::Obey), 20);
    assert!(connections(Side::Break) <= 2);
    expect_verdicts(&lab);
}

#[test]
fn outlier_detection_is_judged_from_dials_to_a_refusing_endpoint() {
    let _slot = privileged();
    let lab = start(PolicyCheck::OutlierDetection);
    let refusing = |side| {
        stats(&lab, side)
            .server(REFUSING_POD)
            .cloned()
            .expect("the refusing endpoint's row")
    };
    let obey = refusing(Side::Obey);
    // Three refused connections, each retried on another endpoint, then
    // marked down and never dialed again.
    assert_eq!(
        (obey.stot, obey.wredis),
        (3, 3),
        "client-obey's proxy: {obey:?}"
    );
    assert!(
        obey.status.starts_with("DOWN") && obey.check_status == "HANA",
        "client-obey's proxy did not eject the endpoint: {obey:?}"
    );
    let broken = refusing(Side::Break);
    assert!(
        broken.stot >= 15 && broken.wredis == broken.stot,
        "client-break's proxy stopped dialing the refusing endpoint: {broken:?}"
    );
    expect_verdicts(&lab);
}

#[test]
fn tls_origination_is_judged_from_the_sni_the_sidecar_sends() {
    let _slot = privileged();
    let lab = start(PolicyCheck::TlsOrigination);
    let server = lab.server(EXTERNAL_POD).expect("the external server");
    let sni_of = |side: Side| -> BTreeMap<String, usize> {
        let ip = format!("{} ", lab.client(side).pod.ipv4());
        let mut seen = BTreeMap::new();
        for line in server.access_log().iter().filter(|l| l.starts_with(&ip)) {
            let sni = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("sni="))
                .unwrap_or_default();
            *seen.entry(sni.to_owned()).or_default() += 1;
        }
        seen
    };
    assert_eq!(
        sni_of(Side::Obey),
        BTreeMap::from([(EXTERNAL_HOST.to_owned(), 20)])
    );
    assert_eq!(
        sni_of(Side::Break),
        BTreeMap::from([(WRONG_SNI.to_owned(), 20)])
    );
    expect_verdicts(&lab);
}
