//! The real data plane: sidecar interception (istio-iptables' rules, HAProxy
//! as the outbound proxy, nginx as the inbound one), the real kube-proxy's
//! DNAT for the Service's cluster IP on the lab's real control plane, and
//! traffic that goes around the proxies. Counts are compared with the
//! proxies' and servers' own. Needs root.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use meshdrift_e2e::{Agent, host_of, port_of, privileged};
use meshdrift_lab::{
    meshdrift_bin,
    scenario::{AMBIENT_NAMESPACE, AMBIENT_POD, Frontend, FrontendConfig, HOST, Inventory},
};
use serde_json::Value;

/// The frontend scenario on the lab's real control plane: the agent
/// installed from `deploy/kubernetes`, reading the API server.
fn frontend(config: impl FnOnce(FrontendConfig) -> FrontendConfig) -> Frontend {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend");
    Frontend::start(config(FrontendConfig {
        inventory: Inventory::KUBERNETES,
        ..FrontendConfig::new(example, meshdrift_bin(), (50, 50))
    }))
    .expect("starting the frontend scenario")
}

/// The report's bypass rows of `source`, as (subset, reason, transport) →
/// (connections, requests).
fn bypass_rows(report: &Value, source: &str) -> BTreeMap<(String, String, String), (u64, u64)> {
    report["bypass"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["source"]["name"] == source)
        .map(|row| {
            assert_eq!(row["destination"]["host"], HOST, "{row}");
            assert_eq!(row["destination"]["port"], 80, "{row}");
            (
                (
                    row["destination"]["subset"]
                        .as_str()
                        .unwrap_or("-")
                        .to_owned(),
                    row["reason"].as_str().unwrap_or_default().to_owned(),
                    row["transport"].as_str().unwrap_or_default().to_owned(),
                ),
                (
                    row["connections"].as_u64().unwrap_or(0),
                    row["requests"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn requests_served(frontend: &Frontend) -> BTreeMap<String, u64> {
    frontend
        .servers()
        .iter()
        .map(|nginx| (nginx.name().to_owned(), nginx.access_log().len() as u64))
        .collect()
}

#[test]
fn a_sidecar_client_through_interception_is_judged_by_its_proxys_connections() {
    let _slot = privileged();
    let frontend = frontend(|config| FrontendConfig {
        proxy_weights: (80, 20),
        ..config
    });
    frontend.send(1_000, |_, _| {}).expect("traffic");
    let stats = frontend
        .proxy()
        .expect("the client's sidecar")
        .stats()
        .expect("HAProxy's stats");
    let truth: BTreeMap<&str, u64> = ["v1", "v2"]
        .into_iter()
        .map(|name| (name, stats.server(name).map_or(0, |s| s.stot)))
        .collect();
    let total: u64 = truth.values().sum();
    assert_eq!(total, 1_000, "HAProxy's count: {truth:?}");
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            report["splits"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|split| split["samples"] == total && split["drift"] == true)
        })
        .expect("the agent's report");
    assert!(settled, "no DRIFT over all {total} requests: {report:#}");
    // One split only, the client's: the application's redirected socket and
    // the legs inside pods (proxy to application) are in none.
    let splits = report["splits"].as_array().unwrap();
    assert_eq!(splits.len(), 1, "{splits:#?}");
    let split = &splits[0];
    assert_eq!(split["source"]["name"], "client");
    let v1 = split["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subset"] == "v1")
        .expect("subset v1");
    let observed = v1["observed"].as_f64().unwrap();
    let haproxy = truth["v1"] as f64 / total as f64;
    eprintln!("v1: meshdrift {observed:.4}, HAProxy {haproxy:.4} of {total}");
    assert!(
        (observed - haproxy).abs() <= 0.005,
        "v1's share {observed:.4} is not within 0.5 points of HAProxy's {haproxy:.4}"
    );
    let excluded = &report["agent"]["excluded_flows"];
    assert!(
        excluded["sidecar_redirect"].as_u64().unwrap_or(0) > 0,
        "the redirected legs are not accounted for: {excluded}"
    );
    assert!(
        excluded["loopback"].as_u64().unwrap_or(0) > 0,
        "the legs inside pods are not accounted for: {excluded}"
    );
    assert_eq!(report["bypass"], serde_json::json!([]), "{report:#}");
}

#[test]
fn clients_without_a_sidecar_are_a_bypass_judged_by_kube_proxys_choice() {
    let _slot = privileged();
    let frontend = frontend(|config| FrontendConfig {
        host_network_client: true,
        ..config
    });
    let (legacy, host) = (200, 40);
    frontend
        .send_from_legacy(legacy)
        .expect("legacy's requests");
    let served_legacy = requests_served(&frontend);
    frontend
        .send_from_host_network(host)
        .expect("the hostNetwork pod's requests");
    let served = requests_served(&frontend);
    let served_host: BTreeMap<String, u64> = served
        .iter()
        .map(|(name, n)| (name.clone(), n - served_legacy[name]))
        .collect();
    assert_eq!(served_legacy.values().sum::<u64>(), legacy as u64);
    assert_eq!(served_host.values().sum::<u64>(), host as u64);
    assert!(
        served_legacy.values().all(|&n| n > 0),
        "kube-proxy sent legacy to one subset only: {served_legacy:?}"
    );
    let expected = |served: &BTreeMap<String, u64>, reason: &str| {
        served
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(subset, n)| {
                (
                    (subset.clone(), reason.to_owned(), "http".to_owned()),
                    (*n, *n),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let want_legacy = expected(&served_legacy, "no_sidecar");
    let want_host = expected(&served_host, "host_network");
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            bypass_rows(report, "legacy") == want_legacy
                && bypass_rows(report, "node-agent") == want_host
        })
        .expect("the agent's report");
    assert!(
        settled,
        "bypass rows differ from what each nginx served (legacy {want_legacy:?}, hostNetwork {want_host:?}): {:#}",
        report["bypass"]
    );
    // kube-proxy's choice, not the VirtualService's: no split, so no DRIFT.
    assert_eq!(report["splits"], serde_json::json!([]), "{report:#}");
    // Plaintext into sidecars whose PeerAuthentication is STRICT.
    let violations: Vec<&Value> = report["transport"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["source"]["name"] == "legacy")
        .collect();
    assert!(!violations.is_empty(), "{report:#}");
    for verdict in violations {
        assert_eq!(verdict["violation"], true, "{verdict}");
        assert_eq!(verdict["expected"], "mtls", "{verdict}");
    }
}

#[test]
fn a_client_in_ambient_mode_is_shown_as_ambient_never_as_a_bypass() {
    let _slot = privileged();
    let frontend = frontend(|config| FrontendConfig {
        ambient_client: true,
        ..config
    });
    let count = 60;
    frontend
        .send_from_ambient(count)
        .expect("the ambient pod's requests");
    let served = requests_served(&frontend);
    assert_eq!(served.values().sum::<u64>(), count as u64, "{served:?}");
    let ambient_totals = |report: &Value| -> (u64, u64) {
        report["ambient"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|row| {
                row["source"]["namespace"] == AMBIENT_NAMESPACE
                    && row["source"]["name"] == AMBIENT_POD
                    && row["destination"]["host"] == HOST
                    && row["destination"]["port"] == 80
                    && row["transport"] == "http"
            })
            .fold((0, 0), |(c, r), row| {
                (
                    c + row["connections"].as_u64().unwrap_or(0),
                    r + row["requests"].as_u64().unwrap_or(0),
                )
            })
    };
    let want = (count as u64, count as u64);
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            ambient_totals(report) == want
        })
        .expect("the agent's report");
    assert!(
        settled,
        "ambient rows differ from what the nginx servers logged ({want:?} connections, requests): {:#}",
        report["ambient"]
    );
    let from_ambient = |section: &str| -> Vec<Value> {
        report[section]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|row| row["source"]["name"] == AMBIENT_POD)
            .cloned()
            .collect()
    };
    assert_eq!(from_ambient("bypass"), Vec::<Value>::new(), "{report:#}");
    assert_eq!(from_ambient("transport"), Vec::<Value>::new(), "{report:#}");
    assert_eq!(from_ambient("splits"), Vec::<Value>::new(), "{report:#}");
    // What the bypass alert reads has no series for it either.
    let metrics = ureq::get(&format!("{}/metrics", frontend.agent_url))
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .expect("the agent's metrics");
    assert!(
        !metrics
            .lines()
            .any(|line| line.contains(&format!("source_workload=\"{AMBIENT_POD}\""))),
        "{metrics}"
    );
}

#[test]
fn a_connection_around_a_sidecar_is_a_bypass_with_its_count() {
    let _slot = privileged();
    let frontend = frontend(|config| FrontendConfig {
        bypass: true,
        ..config
    });
    let requests = 37;
    frontend
        .send_around_sidecar(requests)
        .expect("requests around the sidecar");
    let served = requests_served(&frontend);
    assert_eq!(served["v1"], requests as u64, "{served:?}");
    let want = BTreeMap::from([(
        (
            "v1".to_owned(),
            "sidecar_bypassed".to_owned(),
            "http".to_owned(),
        ),
        (1, requests as u64),
    )]);
    let (report, settled) = frontend
        .wait_report(Duration::from_secs(30), |report| {
            bypass_rows(report, "batch") == want
        })
        .expect("the agent's report");
    assert!(
        settled,
        "want {want:?} for the batch pod: {:#}",
        report["bypass"]
    );
    assert!(
        report["splits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|split| split["source"]["name"] != "batch"),
        "{report:#}"
    );
}

/// What the kernel itself records for interception: the application's socket
/// to the cluster IP went to its sidecar's 15001 (a REDIRECT in its own
/// namespace) and is owned by the application; the sidecar's upstream sockets
/// are owned by uid 1337 and go where they say; a pod without a sidecar dials
/// the cluster IP with no nat of its own (kube-proxy's DNAT is in the node's
/// namespace) and arrives at the server's inbound capture port.
#[test]
fn the_kernel_sees_the_redirect_and_tells_the_application_from_its_sidecar() {
    let _slot = privileged();
    let frontend = frontend(|config| FrontendConfig {
        agent_at_start: false,
        ..config
    });
    let agent = Agent::observe(&["--update-interval", "1s"]);
    frontend.send(100, |_, _| {}).expect("traffic");
    frontend.send_from_legacy(10).expect("legacy traffic");
    // The sidecar's pooled upstream connections stay open: wait for an update.
    std::thread::sleep(Duration::from_secs(3));
    let observed = agent.stop();

    let client = frontend.client.ipv4().to_string();
    let legacy = frontend.legacy.ipv4().to_string();
    let cluster_ip = frontend.cluster_ip.to_string();
    let pods = [
        frontend.v1.ipv4().to_string(),
        frontend.v2.ipv4().to_string(),
    ];
    let client_flows = |src: &str| -> Vec<&Value> {
        observed
            .flows
            .iter()
            .filter(|flow| flow["role"] == "client" && host_of(&flow["src"]) == src)
            .collect()
    };

    let from_client = client_flows(&client);
    let application: Vec<_> = from_client
        .iter()
        .filter(|flow| host_of(&flow["dst"]) == cluster_ip)
        .collect();
    assert!(
        !application.is_empty(),
        "no application socket seen: {from_client:?}"
    );
    for flow in &application {
        assert_eq!(flow["nat"], "127.0.0.1:15001", "{flow}");
        assert_ne!(flow["uid"], 1337, "{flow}");
    }
    let upstream: Vec<_> = from_client
        .iter()
        .filter(|flow| pods.contains(&host_of(&flow["dst"])))
        .collect();
    assert!(
        !upstream.is_empty(),
        "no sidecar upstream seen: {from_client:?}"
    );
    for flow in &upstream {
        assert_eq!(flow["uid"], 1337, "{flow}");
        assert!(flow.get("nat").is_none(), "{flow}");
    }

    let from_legacy = client_flows(&legacy);
    assert_eq!(
        from_legacy
            .iter()
            .filter(|flow| flow["event"] == "close")
            .count(),
        10,
        "{from_legacy:?}"
    );
    for flow in &from_legacy {
        assert_eq!(host_of(&flow["dst"]), cluster_ip, "{flow}");
        assert!(flow.get("nat").is_none(), "{flow}");
    }
    let arrived = observed
        .flows
        .iter()
        .filter(|flow| {
            flow["event"] == "close"
                && flow["role"] == "server"
                && host_of(&flow["src"]) == legacy
                && port_of(&flow["dst"]) == 15006
                && pods.contains(&host_of(&flow["dst"]))
        })
        .count();
    assert_eq!(
        arrived, 10,
        "legacy's connections at the inbound capture port"
    );
}
