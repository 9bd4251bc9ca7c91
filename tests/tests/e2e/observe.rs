//! End-to-end: the real eBPF programs, attached by the real `meshdrift observe`,
//! watching real nginx, HAProxy and curl traffic between lab pods. HAProxy's own
//! per-server counters are the ground truth. Needs root.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use meshdrift_e2e::{Agent, count, host_of, port_of, privileged};
use meshdrift_lab::{Curl, Haproxy, Lab, Nginx, Pod, ProxyMode, Upstream, UpstreamTls};
use nix::sys::signal::Signal;
use serde_json::Value;

const HOST: &str = "frontend.default.svc.cluster.local";

struct Frontend {
    // Owns the pods: dropping it tears the lab down.
    _lab: Lab,
    client: Pod,
    v1: Pod,
    v2: Pod,
    _servers: Vec<Nginx>,
}

/// A client pod and two server pods running nginx: plaintext on 8080, mTLS
/// (client certificate required) on 8443.
fn frontend(name: &str) -> Frontend {
    let lab = Lab::new(name).expect("creating the lab");
    let client = lab.add_pod("client").expect("client pod");
    let v1 = lab.add_pod("frontend-v1").expect("v1 pod");
    let v2 = lab.add_pod("frontend-v2").expect("v2 pod");
    let servers = [("v1", &v1), ("v2", &v2)]
        .into_iter()
        .map(|(version, pod)| {
            Nginx::builder(version)
                .http(8080)
                .tls(8443)
                .verify_client(true)
                .dns_name(HOST)
                .start(pod)
                .expect("starting nginx")
        })
        .collect();
    Frontend {
        _lab: lab,
        client,
        v1,
        v2,
        _servers: servers,
    }
}

fn by_destination<'a>(flows: &[&'a Value]) -> BTreeMap<String, Vec<&'a Value>> {
    let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for flow in flows {
        groups.entry(host_of(&flow["dst"])).or_default().push(flow);
    }
    groups
}

#[test]
fn http_mode_mtls_80_20_every_upstream_connection_once_with_exchanges_matching_requests() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-http");
    let agent = Agent::observe(&[]);
    let mut proxy = Haproxy::builder(15001, ProxyMode::Http)
        .server(
            Upstream::new("v1", SocketAddr::new(lab.v1.ipv4().into(), 8443), 80)
                .tls(UpstreamTls::istio_http(80, "v1", HOST, "client")),
        )
        .server(
            Upstream::new("v2", SocketAddr::new(lab.v2.ipv4().into(), 8443), 20)
                .tls(UpstreamTls::istio_http(80, "v2", HOST, "client")),
        )
        .start(&lab.client)
        .expect("starting HAProxy");
    // Two concurrent keep-alive clients make HAProxy open more than one upstream connection.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            Curl::new(&proxy.url(false))
                .count(300)
                .spawn(&lab.client)
                .expect("curl")
        })
        .collect();
    for run in runs {
        let report = run.wait().expect("curl finished");
        assert_eq!(
            report.count_status(200),
            300,
            "every request through HAProxy succeeds"
        );
    }
    let stats = proxy.stats().expect("HAProxy stats");
    // Stopping HAProxy closes its upstream connections, so each reports its close.
    proxy.process().terminate(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let observed = agent.stop();

    let closes = observed.client_closes(&lab.client.ipv4().to_string(), 8443);
    let groups = by_destination(&closes);
    let mut seen_tuples = std::collections::BTreeSet::new();
    for (subset, pod) in [("v1", &lab.v1), ("v2", &lab.v2)] {
        let server = stats.server(subset).expect("per-server stats");
        let flows = groups
            .get(&pod.ipv4().to_string())
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            flows.len() as u64,
            server.connect,
            "{subset}: observed upstream connections vs HAProxy's `connect`"
        );
        for flow in &flows {
            assert!(
                seen_tuples.insert((flow["src"].to_string(), flow["dst"].to_string())),
                "4-tuple seen twice: {flow}"
            );
            assert_eq!(flow["transport"], "istio_mtls", "{flow}");
            assert_eq!(flow["sni_subset"], subset, "{flow}");
            assert_eq!(flow["sni_host"], HOST, "{flow}");
            assert_eq!(flow["sni_port"], 80, "{flow}");
            assert_eq!(port_of(&flow["dst"]), 8443);
        }
        let exchanges: u64 = flows.iter().map(|flow| count(flow, "exchanges")).sum();
        let requests = server.stot;
        let error = (exchanges as f64 - requests as f64).abs() / requests.max(1) as f64;
        eprintln!(
            "{subset}: connections observed {} / HAProxy connect {}; exchanges {exchanges} / HAProxy requests {requests}",
            flows.len(),
            server.connect
        );
        assert!(
            error <= 0.02,
            "{subset}: exchanges {exchanges} vs HAProxy requests {requests} differ by {:.1} %",
            error * 100.0
        );
    }
    let total_requests = stats.server("v1").unwrap().stot + stats.server("v2").unwrap().stot;
    assert_eq!(total_requests, 600);
    let v1_share = stats.server("v1").unwrap().stot as f64 / total_requests as f64;
    assert!(
        (0.7..=0.9).contains(&v1_share),
        "HAProxy split 80/20 by request, got {v1_share}"
    );
    assert_eq!(
        observed.lost_total(),
        0,
        "no records lost at this load: {}",
        observed.summary
    );
    // Every client socket has its server-side twin with the same 4-tuple.
    for flow in &closes {
        let twin = observed.flows.iter().any(|other| {
            other["event"] == "close"
                && other["role"] == "server"
                && other["src"] == flow["src"]
                && other["dst"] == flow["dst"]
        });
        assert!(twin, "no server-side record for {flow}");
    }
}

#[test]
fn tcp_mode_per_backend_connections_equal_haproxy_exactly() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-tcp");
    let agent = Agent::observe(&[]);
    let mut proxy = Haproxy::builder(15001, ProxyMode::Tcp)
        .server(Upstream::new(
            "v1",
            SocketAddr::new(lab.v1.ipv4().into(), 8080),
            80,
        ))
        .server(Upstream::new(
            "v2",
            SocketAddr::new(lab.v2.ipv4().into(), 8080),
            20,
        ))
        .start(&lab.client)
        .expect("starting HAProxy");
    let report = Curl::new(&proxy.url(false))
        .count(150)
        .new_connection_per_request(true)
        .run(&lab.client)
        .expect("curl");
    assert_eq!(report.count_status(200), 150);
    let stats = proxy.stats().expect("HAProxy stats");
    proxy.process().terminate(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let observed = agent.stop();

    let closes = observed.client_closes(&lab.client.ipv4().to_string(), 8080);
    let groups = by_destination(&closes);
    let mut total = 0;
    for (subset, pod) in [("v1", &lab.v1), ("v2", &lab.v2)] {
        let server = stats.server(subset).expect("per-server stats");
        let flows = groups
            .get(&pod.ipv4().to_string())
            .cloned()
            .unwrap_or_default();
        eprintln!(
            "{subset}: observed {} connections, HAProxy stot {} connect {}",
            flows.len(),
            server.stot,
            server.connect
        );
        assert_eq!(
            flows.len() as u64,
            server.stot,
            "{subset}: connections vs HAProxy (tcp mode stot)"
        );
        assert!(
            flows.iter().all(|flow| flow["transport"] == "http"),
            "{flows:?}"
        );
        assert!(
            flows.iter().all(|flow| count(flow, "exchanges") == 1),
            "one request per connection"
        );
        total += flows.len();
    }
    assert_eq!(total, 150);
}

#[test]
fn plaintext_http_from_a_pod_without_proxy_is_http() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-plain");
    let agent = Agent::observe(&[]);
    let report = Curl::new(&lab.v2.url("http", false, 8080))
        .count(5)
        .run(&lab.client)
        .expect("curl");
    assert_eq!(report.count_status(200), 5);
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();
    let closes = observed.client_closes(&lab.client.ipv4().to_string(), 8080);
    assert_eq!(closes.len(), 1, "one keep-alive connection: {closes:?}");
    let flow = closes[0];
    assert_eq!(flow["transport"], "http");
    assert_eq!(host_of(&flow["dst"]), lab.v2.ipv4().to_string());
    assert_eq!(
        count(flow, "exchanges"),
        5,
        "five requests on one connection"
    );
    assert!(count(flow, "bytes_sent") > 0 && count(flow, "bytes_received") > 0);
    assert!(flow["sni"].is_null() && flow["sni_subset"].is_null());
    let server_side: Vec<_> = observed
        .flows
        .iter()
        .filter(|other| {
            other["role"] == "server" && other["event"] == "close" && other["src"] == flow["src"]
        })
        .collect();
    assert_eq!(server_side.len(), 1);
    assert_eq!(server_side[0]["transport"], "http");
    assert_eq!(
        count(server_side[0], "bytes_received"),
        count(flow, "bytes_sent")
    );
}

#[test]
fn ipv6_flows_are_observed_with_bracketed_addresses() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-ipv6");
    let agent = Agent::observe(&[]);
    let report = Curl::new(&lab.v1.url("http", true, 8080))
        .count(3)
        .run(&lab.client)
        .expect("curl");
    assert_eq!(report.count_status(200), 3);
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();
    let closes = observed.client_closes(&lab.client.ipv6().to_string(), 8080);
    assert_eq!(closes.len(), 1, "{:?}", observed.flows);
    let flow = closes[0];
    assert_eq!(flow["dst"], format!("[{}]:8080", lab.v1.ipv6()));
    assert!(
        flow["src"]
            .as_str()
            .unwrap()
            .starts_with(&format!("[{}]:", lab.client.ipv6()))
    );
    assert_eq!(flow["transport"], "http");
    assert_eq!(count(flow, "exchanges"), 3);
}

#[test]
fn a_connection_held_open_30s_reports_updates_before_its_close() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-long");
    let agent = Agent::observe(&["--update-interval", "10"]);
    let report = Curl::new(&lab.v1.url("http", false, 8080))
        .count(7)
        .interval(Duration::from_secs(5))
        .run(&lab.client)
        .expect("curl");
    assert_eq!(report.count_status(200), 7);
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();
    let closes = observed.client_closes(&lab.client.ipv4().to_string(), 8080);
    assert_eq!(closes.len(), 1);
    let close = closes[0];
    assert!(
        count(close, "duration_ms") >= 29_000,
        "held about 30 s: {close}"
    );
    let cookie = &close["cookie"];
    let updates: Vec<&Value> = observed
        .flows
        .iter()
        .filter(|flow| flow["event"] == "update" && &flow["cookie"] == cookie)
        .collect();
    assert!(
        updates.len() >= 2,
        "a 30 s flow with a 10 s interval reports at least two updates: {updates:?}"
    );
    let mut previous = 0;
    for update in &updates {
        let exchanges = count(update, "exchanges");
        assert!(
            exchanges >= previous && exchanges <= 7,
            "updates are cumulative: {update}"
        );
        assert!(count(update, "duration_ms") <= count(close, "duration_ms"));
        previous = exchanges;
    }
    assert!(
        count(updates[0], "exchanges") < 7,
        "the first update arrives while the flow is still busy: {updates:?}"
    );
    assert_eq!(count(close, "exchanges"), 7);
}

#[test]
fn a_tiny_ring_buffer_under_load_reports_its_losses() {
    let _agent_slot = privileged();
    let lab = frontend("e2e-loss");
    let agent = Agent::observe(&["--ring-buffer-bytes", "4096"]);
    // A stopped reader lets the 4 KiB ring fill up while connections keep closing.
    agent.signal(Signal::SIGSTOP);
    let connections = 200;
    let report = Curl::new(&lab.v1.url("http", false, 8080))
        .count(connections)
        .new_connection_per_request(true)
        .run(&lab.client);
    agent.signal(Signal::SIGCONT);
    let report = report.expect("curl");
    assert_eq!(report.count_status(200), connections);
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();
    let lost_flow_records = count(&observed.summary["lost"], "ringbuf_full");
    let lost_payloads = count(&observed.summary["lost"], "payload_ringbuf_full");
    assert!(
        lost_flow_records > 0 && lost_payloads > 0,
        "losses must be counted: {}",
        observed.summary
    );
    let client_ip = lab.client.ipv4().to_string();
    let seen = observed
        .flows
        .iter()
        .filter(|flow| {
            flow["event"] == "close"
                && host_of(&flow["src"]) == client_ip
                && port_of(&flow["dst"]) == 8080
        })
        .count() as u64;
    // Both sockets of each connection live on this node: 2 close records each.
    assert!(
        seen + lost_flow_records >= 2 * connections as u64,
        "every close is either observed ({seen}) or counted as lost ({lost_flow_records})"
    );
    assert!(
        observed
            .stderr
            .iter()
            .any(|line| line.contains("lost records")),
        "losses are printed on exit"
    );
}

#[test]
fn stopping_the_agent_leaves_nothing_attached() {
    let _agent_slot = privileged();
    let agent = Agent::observe(&[]);
    let loaded_before = meshdrift_programs();
    assert!(
        loaded_before >= 3,
        "the agent's programs are loaded while it runs"
    );
    agent.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while meshdrift_programs() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "meshdrift programs still loaded 10 s after exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn meshdrift_programs() -> usize {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|program| {
            program
                .name_as_str()
                .is_some_and(|name| name.starts_with("meshdrift_"))
        })
        .count()
}
