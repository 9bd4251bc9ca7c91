//! Two nodes, an agent on each: the frontend scenario with `frontend-v1` and
//! `frontend-v2` on node-2 and every client on node-1, the agent installed
//! from `deploy/kubernetes` and run by each node's kubelet attached to that
//! node's own cgroup subtree. Each connection is counted once, by the agent
//! the design names (the client's node for sidecar clients, the server's
//! for the others), and the sum over both agents equals what the real peers
//! counted: HAProxy's per-server totals, nginx's access logs. Prometheus
//! finds both agents through the API server, as a cluster's does. Needs root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshdrift_e2e::privileged;
use meshdrift_lab::{
    cluster::AgentPod,
    meshdrift_bin,
    prometheus::Prometheus,
    scenario::{Frontend, FrontendConfig, Inventory},
    stale_sidecar::{CLIENT_REPLICA_SET, StaleClient},
};

/// How long counts may take to reach both agents' metrics.
const SETTLE: Duration = Duration::from_secs(60);
const SUBSETS: [&str; 2] = ["v1", "v2"];

fn two_nodes(host_network_client: bool) -> Frontend {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend");
    let frontend = Frontend::start(FrontendConfig {
        inventory: Inventory::KUBERNETES,
        server_node: 2,
        host_network_client,
        ..FrontendConfig::new(example, meshdrift_bin(), (50, 50))
    })
    .expect("the frontend scenario on two nodes");
    let placed: Vec<(String, u8)> = frontend
        .agent_pods()
        .iter()
        .map(|agent| (agent.node_name.clone(), agent.pod.node()))
        .collect();
    assert_eq!(
        placed,
        vec![("node-1".to_owned(), 1), ("node-2".to_owned(), 2)],
        "one agent pod per node, run on its node"
    );
    assert_eq!(frontend.v1.node(), 2);
    assert_eq!(frontend.v2.node(), 2);
    assert_eq!(frontend.client.node(), 1);
    // Each node's agent attached to its node's subtree: the pods of one
    // node are not below the other's.
    for agent in frontend.agent_pods() {
        let own = frontend.lab.node_cgroup_path(agent.pod.node());
        assert!(
            agent.pod.cgroup_path().starts_with(&own),
            "{} is not in {}",
            agent.pod.cgroup_path().display(),
            own.display()
        );
    }
    assert!(
        frontend
            .v1
            .cgroup_path()
            .starts_with(frontend.lab.node_cgroup_path(2))
    );
    assert!(
        !frontend
            .client
            .cgroup_path()
            .starts_with(frontend.lab.node_cgroup_path(2))
    );
    frontend
}

/// One sample of the text exposition: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Every sample of metric `name` in a text exposition.
fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((parse_labels(labels), value))
        })
        .collect()
}

/// `a="x",b="y"` as a map; values may hold escaped quotes and commas.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_owned(), value);
        rest = &after[end..];
    }
    labels
}

/// The sum of `name`'s samples whose labels include every `(key, value)`
/// of `want`, per value of label `by`.
fn sum_by(text: &str, name: &str, want: &[(&str, &str)], by: &str) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for (labels, value) in samples(text, name) {
        if want
            .iter()
            .all(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value))
        {
            *sums
                .entry(labels.get(by).cloned().unwrap_or_default())
                .or_insert(0) += value as u64;
        }
    }
    sums
}

fn metrics(agent: &AgentPod) -> String {
    agent.metrics(None).expect("the agent's /metrics")
}

/// Per-subset totals of two agents, added.
fn added(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut sum = a.clone();
    for (key, n) in b {
        *sum.entry(key.clone()).or_insert(0) += n;
    }
    sum.retain(|_, n| *n > 0);
    sum
}

/// Polls both agents until `count` of node-1's and node-2's metrics, added,
/// equals `want` (bounded by [`SETTLE`]); returns both nodes' counts.
fn settle(
    frontend: &Frontend,
    want: &BTreeMap<String, u64>,
    count: impl Fn(&str) -> BTreeMap<String, u64>,
) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let agents = frontend.agent_pods();
    let deadline = Instant::now() + SETTLE;
    loop {
        let node1 = count(&metrics(agents[0]));
        let node2 = count(&metrics(agents[1]));
        if &added(&node1, &node2) == want || Instant::now() >= deadline {
            return (node1, node2);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What HAProxy, the client's sidecar, sent each subset so far.
fn haproxy_sent(frontend: &Frontend) -> BTreeMap<String, u64> {
    let stats = frontend
        .proxy()
        .expect("the client's sidecar")
        .stats()
        .expect("HAProxy's stats");
    SUBSETS
        .into_iter()
        .map(|subset| {
            (
                subset.to_owned(),
                stats.server(subset).map_or(0, |server| server.stot),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Requests each frontend's nginx logged so far.
fn served(frontend: &Frontend) -> BTreeMap<String, u64> {
    frontend
        .servers()
        .iter()
        .map(|nginx| (nginx.name().to_owned(), nginx.access_log().len() as u64))
        .collect()
}

fn since(now: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn excluded(text: &str, reason: &str) -> u64 {
    sum_by(
        text,
        "meshdrift_excluded_flows_total",
        &[("reason", reason)],
        "reason",
    )
    .values()
    .sum()
}

#[test]
fn sidecar_clients_are_counted_once_by_the_agent_on_the_clients_node() {
    let _slot = privileged();
    let frontend = two_nodes(false);
    let requests = 400;
    frontend
        .send(requests, |_, _| {})
        .expect("requests through the client's sidecar");
    let want = haproxy_sent(&frontend);
    assert_eq!(
        want.values().sum::<u64>(),
        requests as u64,
        "HAProxy's count: {want:?}"
    );
    let client = |text: &str| {
        sum_by(
            text,
            "meshdrift_requests_total",
            &[("source_workload", "client")],
            "destination_subset",
        )
    };
    let (node1, node2) = settle(&frontend, &want, client);
    assert_eq!(
        added(&node1, &node2),
        want,
        "both agents' meshdrift_requests_total (node-1 {node1:?}, node-2 {node2:?}) against HAProxy's {want:?}"
    );
    // Once, not twice: the servers' node judged none of it.
    let agents = frontend.agent_pods();
    let server_side = metrics(agents[1]);
    for name in ["meshdrift_requests_total", "meshdrift_connections_total"] {
        let counted: f64 = samples(&server_side, name).iter().map(|(_, v)| v).sum();
        assert_eq!(
            counted, 0.0,
            "node-2's agent counted {name} for traffic node-1's client sent: {server_side}"
        );
    }
    let bypass: f64 = samples(&server_side, "meshdrift_bypass_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(bypass, 0.0, "node-2's agent saw a bypass: {server_side}");
    // The client's node saw no server side of it either: its agent is not
    // attached where the frontends' sockets are.
    let client_side = metrics(agents[0]);
    assert_eq!(
        sum_by(
            &client_side,
            "meshdrift_bypass_total",
            &[],
            "source_workload"
        ),
        BTreeMap::new(),
        "{client_side}"
    );
}

#[test]
fn plaintext_clients_are_counted_once_by_the_agent_on_the_servers_node() {
    let _slot = privileged();
    let frontend = two_nodes(true);
    let agents = frontend.agent_pods();
    let judged_before = excluded(&metrics(agents[0]), "judged_at_server");

    // (b) a pod without a sidecar on node-1.
    let legacy = 120;
    let before = served(&frontend);
    frontend
        .send_from_legacy(legacy)
        .expect("legacy's requests");
    let want_legacy = since(&served(&frontend), &before);
    assert_eq!(
        want_legacy.values().sum::<u64>(),
        legacy as u64,
        "nginx's logs: {want_legacy:?}"
    );
    let no_sidecar = |text: &str| {
        sum_by(
            text,
            "meshdrift_bypass_total",
            &[("source_workload", "legacy"), ("reason", "no_sidecar")],
            "destination_subset",
        )
    };
    let (node1, node2) = settle(&frontend, &want_legacy, no_sidecar);
    assert_eq!(
        added(&node1, &node2),
        want_legacy,
        "both agents' no_sidecar bypass (node-1 {node1:?}, node-2 {node2:?}) against nginx's logs {want_legacy:?}"
    );
    assert_eq!(
        node1,
        BTreeMap::new(),
        "the client's node counted legacy too: twice, not once"
    );
    let deadline = Instant::now() + SETTLE;
    let client_side = loop {
        let text = metrics(agents[0]);
        if excluded(&text, "judged_at_server") - judged_before >= legacy as u64
            || Instant::now() >= deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let judged = excluded(&client_side, "judged_at_server") - judged_before;
    assert!(
        judged >= legacy as u64,
        "node-1's agent left {judged} of legacy's {legacy} connections to the server's node (judged_at_server): {:?}",
        sum_by(
            &client_side,
            "meshdrift_excluded_flows_total",
            &[],
            "reason"
        )
    );

    // (c) a hostNetwork pod on node-1: the node's own address.
    let host = 50;
    let before = served(&frontend);
    frontend
        .send_from_host_network(host)
        .expect("the hostNetwork pod's requests");
    let want_host = since(&served(&frontend), &before);
    assert_eq!(
        want_host.values().sum::<u64>(),
        host as u64,
        "nginx's logs: {want_host:?}"
    );
    let host_network = |text: &str| {
        sum_by(
            text,
            "meshdrift_bypass_total",
            &[("reason", "host_network")],
            "destination_subset",
        )
    };
    let (node1, node2) = settle(&frontend, &want_host, host_network);
    assert_eq!(
        added(&node1, &node2),
        want_host,
        "both agents' host_network bypass (node-1 {node1:?}, node-2 {node2:?}) against nginx's logs {want_host:?}"
    );
    assert_eq!(
        node1,
        BTreeMap::new(),
        "the client's node counted the hostNetwork pod too: twice, not once"
    );
    // Their requests too are counted by the server's node alone.
    for (source, want) in [("legacy", &want_legacy), ("node-agent", &want_host)] {
        let requests = |text: &str| {
            sum_by(
                text,
                "meshdrift_requests_total",
                &[("source_workload", source)],
                "destination_subset",
            )
        };
        let (node1, node2) = settle(&frontend, want, requests);
        assert_eq!(
            (node1, node2),
            (BTreeMap::new(), want.clone()),
            "{source}'s meshdrift_requests_total (node-1, node-2) against nginx's logs {want:?}"
        );
    }
}

#[test]
fn prometheus_finds_both_agents_through_the_api_server_and_sums_them_once() {
    let _slot = privileged();
    let frontend = two_nodes(false);
    let prometheus = discovering_prometheus(&frontend, &[]);

    let deadline = Instant::now() + SETTLE;
    let targets = loop {
        let targets = prometheus.active_targets().expect("the targets");
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if (up == 2 && targets.len() == 2) || Instant::now() >= deadline {
            break targets;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let described: Vec<String> = targets
        .iter()
        .map(|t| format!("{} {} {}", t["labels"], t["health"], t["lastError"]))
        .collect();
    assert_eq!(targets.len(), 2, "the discovered targets: {described:#?}");
    let nodes: BTreeSet<String> = targets
        .iter()
        .map(|t| t["labels"]["node"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["node-1".to_owned(), "node-2".to_owned()]),
        "{described:#?}"
    );
    let agents: BTreeSet<String> = frontend
        .agent_pods()
        .iter()
        .map(|agent| agent.url.trim_start_matches("http://").to_owned())
        .collect();
    for target in &targets {
        assert_eq!(target["health"], "up", "{described:#?}");
        assert_eq!(target["labels"]["job"], "meshdrift", "{described:#?}");
        let instance = target["labels"]["instance"].as_str().unwrap_or_default();
        assert!(
            agents.contains(instance),
            "{instance} is none of the agents' {agents:?}: only their metrics port is kept"
        );
    }

    let requests = 300;
    frontend
        .send(requests, |_, _| {})
        .expect("requests through the client's sidecar");
    let sent: u64 = haproxy_sent(&frontend).values().sum();
    assert_eq!(sent, requests as u64);
    let query = "sum(meshdrift_requests_total)";
    let deadline = Instant::now() + SETTLE;
    let summed = loop {
        let value = prometheus.query_value(query).expect("the query");
        if value == Some(sent as f64) || Instant::now() >= deadline {
            break value;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        summed,
        Some(sent as f64),
        "{query} over both agents against HAProxy's {sent}"
    );
}

/// A Prometheus that finds the agents through the API server, evaluating `rules`.
fn discovering_prometheus(frontend: &Frontend, rules: &[PathBuf]) -> Prometheus {
    frontend
        .discovering_prometheus(rules)
        .expect("Prometheus discovering the agents")
}

mod parsing {
    use super::*;

    #[test]
    fn label_values_keep_escaped_quotes_and_commas() {
        let text = "m_total{a=\"x,\\\"y\\\"\",b=\"2\"} 7\nm_total 3\nother{a=\"x\"} 1\n";
        let got = samples(text, "m_total");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0["a"], "x,\"y\"");
        assert_eq!(got[0].0["b"], "2");
        assert_eq!(got[0].1, 7.0);
        assert_eq!(got[1].1, 3.0);
        assert_eq!(
            sum_by(text, "m_total", &[("b", "2")], "a"),
            BTreeMap::from([("x,\"y\"".to_owned(), 7)])
        );
    }
}

/// The stale-proxy scenario on two nodes: the `client` workload's pod A on
/// node-1 follows the declared 50/50, its pod B on node-2 is stale at 90/10,
/// so the workload is at 70/30. One workload (a ReplicaSet adopted both),
/// each pod's requests counted by its own node's agent, exactly as its
/// sidecar sent them; one `MeshdriftSplitDrift` for the workload from both
/// agents' counters (not one per node); pod B named — by its agent's
/// per-pod verdict, its metrics, `MeshdriftStaleProxy` and `meshdrift report
/// --prometheus` — and pod A not.
#[test]
fn a_stale_proxy_on_one_node_is_named_and_its_workload_alerts_once() {
    let _slot = privileged();
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend");
    let frontend = Frontend::start(FrontendConfig {
        inventory: Inventory::KUBERNETES,
        declared_weights: Some((50, 50)),
        server_node: 2,
        ..FrontendConfig::new(example, meshdrift_bin(), (50, 50))
    })
    .expect("the frontend scenario on two nodes");
    let stale = StaleClient::start(&frontend, "client-b", 16, 2, (90, 10))
        .expect("a stale sidecar on node-2");
    let owners = frontend
        .cluster
        .as_ref()
        .expect("a cluster")
        .kubectl
        .run(&[
            "get",
            "pods",
            "client",
            "client-b",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].name}",
        ])
        .expect("the pods' owners");
    assert_eq!(
        owners.split_whitespace().collect::<Vec<_>>(),
        vec![CLIENT_REPLICA_SET, CLIENT_REPLICA_SET]
    );
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/rules.yaml");
    let prometheus = discovering_prometheus(&frontend, &[rules]);
    frontend.send(300, |_, _| {}).expect("pod A's requests");
    stale.send(&frontend, 300).expect("pod B's requests");
    let sent = |proxy: &meshdrift_lab::Haproxy| -> BTreeMap<String, u64> {
        let stats = proxy.stats().expect("HAProxy's stats");
        SUBSETS
            .into_iter()
            .map(|s| {
                (
                    s.to_owned(),
                    stats.server(s).map_or(0, |server| server.stot),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let want_a = sent(frontend.proxy().expect("pod A's sidecar"));
    let want_b = sent(stale.proxy());
    let want = added(&want_a, &want_b);
    let client = |text: &str| {
        sum_by(
            text,
            "meshdrift_requests_total",
            &[("source_workload", "client")],
            "destination_subset",
        )
    };
    let (node1, node2) = settle(&frontend, &want, client);
    assert_eq!(
        (node1, node2),
        (want_a.clone(), want_b.clone()),
        "workload client's requests per node against pod A's HAProxy {want_a:?} and pod B's {want_b:?}"
    );
    assert!(
        want_b.get("v1").copied().unwrap_or(0) > want_a.get("v1").copied().unwrap_or(0),
        "pod B's sidecar is not the stale one: A {want_a:?}, B {want_b:?}"
    );

    // Each agent judges the client pods on its node: B drifts, A does not.
    let agents = frontend.agent_pods();
    let pod_verdicts = |agent: &AgentPod| -> Vec<(String, bool)> {
        agent.report(None).expect("the agent's report")["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|pod| {
                (
                    pod["pod"].as_str().unwrap_or_default().to_owned(),
                    pod["drift"] == true,
                )
            })
            .collect()
    };
    let deadline = Instant::now() + SETTLE;
    let (on_node1, on_node2) = loop {
        let verdicts = (pod_verdicts(agents[0]), pod_verdicts(agents[1]));
        if verdicts.1.iter().any(|(_, drift)| *drift) || Instant::now() >= deadline {
            break verdicts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(on_node1, vec![("default/client".to_owned(), false)]);
    assert_eq!(on_node2, vec![("default/client-b".to_owned(), true)]);
    // Series for the drifting pod only.
    let node2 = metrics(agents[1]);
    let pod_series = samples(&node2, "meshdrift_pod_split_drift_detected");
    assert_eq!(pod_series.len(), 1, "{node2}");
    assert_eq!(pod_series[0].0["source_pod"], "client-b");
    assert_eq!(pod_series[0].0["source_workload"], "client");
    assert_eq!(pod_series[0].1, 1.0);
    assert!(
        !metrics(agents[0]).contains("source_pod="),
        "node-1 exports a healthy pod's series"
    );

    // One split alert for the workload, from both agents' counters summed,
    // and one stale-proxy alert, for pod B.
    let firing = |name: &str| -> Vec<serde_json::Value> {
        prometheus
            .alerts()
            .expect("the alerts")
            .into_iter()
            .filter(|a| a.name == name && a.state == "firing")
            .map(|a| a.labels)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while (firing("MeshdriftSplitDrift").is_empty() || firing("MeshdriftStaleProxy").is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    let split_alerts = firing("MeshdriftSplitDrift");
    assert_eq!(split_alerts.len(), 1, "{split_alerts:#?}");
    assert_eq!(split_alerts[0]["source_workload"], "client");
    assert!(
        split_alerts[0].get("instance").is_none() && split_alerts[0].get("node").is_none(),
        "a node's alert, not the workload's: {split_alerts:#?}"
    );
    let stale_alerts = firing("MeshdriftStaleProxy");
    assert_eq!(stale_alerts.len(), 1, "{stale_alerts:#?}");
    assert_eq!(stale_alerts[0]["source_pod"], "client-b");

    // The cluster's report from Prometheus: the workload drifts, each node's
    // share is its pod's, and pod B is the one named.
    let output = std::process::Command::new(meshdrift_bin())
        .args([
            "report",
            "--prometheus",
            &prometheus.url(),
            "--range",
            "10m",
        ])
        .args(["--output", "json"])
        .output()
        .expect("meshdrift report --prometheus");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report as JSON");
    let split = report["splits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["source"]["name"] == "client")
        .unwrap_or_else(|| panic!("no split of client: {report:#}"));
    assert_eq!(split["drift"], true, "{split:#}");
    assert_eq!(split["samples"], 600, "{split:#}");
    let pods: Vec<&str> = report["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pod"].as_str())
        .collect();
    assert_eq!(pods, vec!["default/client-b"], "{report:#}");
    let share = |node: &str, subset: &str| -> f64 {
        report["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|row| row["node"] == node && row["subset"] == subset)
            .and_then(|row| row["observed"].as_f64())
            .unwrap_or_else(|| panic!("no {node} {subset} row: {report:#}"))
    };
    assert!((share("node-1", "v1") - 0.5).abs() < 1e-9, "{report:#}");
    assert!((share("node-2", "v1") - 0.9).abs() < 1e-9, "{report:#}");
}

/// A lab of one node keeps its pods directly under its group; a lab that
/// adds a node before its first pod gives each node a subtree, and one that
/// already has pods refuses the node rather than leave them in the wrong one.
#[test]
fn each_node_of_a_lab_has_its_own_cgroup_subtree() {
    let _slot = privileged();
    let single = meshdrift_lab::Lab::new("one-node").expect("a lab");
    let pod = single.add_pod("solo").expect("a pod");
    assert!(!single.has_per_node_cgroups());
    assert_eq!(pod.cgroup_path().parent(), Some(single.cgroup_path()));
    let refused = single.add_node(2);
    assert!(
        refused.is_err(),
        "a node added after the first pod: {refused:?}"
    );

    let lab = meshdrift_lab::Lab::new("two-nodes").expect("a lab");
    lab.add_node(2).expect("node 2");
    assert!(lab.has_per_node_cgroups());
    let one = lab.add_pod_on("one", 20, 1).expect("a pod on node 1");
    let two = lab.add_pod_on("two", 21, 2).expect("a pod on node 2");
    let kubelet = lab
        .nth_node_processes(2, "kubelet")
        .expect("node 2's processes");
    for (pod, node) in [(&one, 1), (&two, 2), (&kubelet, 2)] {
        let subtree = lab.node_cgroup_path(node);
        assert_eq!(subtree, lab.cgroup_path().join(format!("node-{node}")));
        assert_eq!(
            pod.cgroup_path().parent(),
            Some(subtree.as_path()),
            "{} on node {node}",
            pod.name()
        );
    }
}
