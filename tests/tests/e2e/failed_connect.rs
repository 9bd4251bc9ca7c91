//! End-to-end: connects that never reach ESTABLISHED, as `meshdrift observe`
//! prints them. curl's own exit code for each attempt is the ground truth:
//! 7 when the connect was refused, 28 when it timed out. Needs root.

use std::time::Duration;

use meshdrift_e2e::{Agent, Observed, host_of, port_of, privileged};
use meshdrift_lab::{Curl, CurlReport, Lab, Nginx, Pod};
use serde_json::Value;

/// Where the server pod's nginx listens.
const OPEN_PORT: u16 = 8080;
/// Where nobody listens: the server pod's kernel answers a SYN with a reset.
const CLOSED_PORT: u16 = 8081;
/// curl's exit codes: "Failed to connect" and "Operation timeout".
const CURL_COULDNT_CONNECT: i32 = 7;
const CURL_TIMED_OUT: i32 = 28;

struct Pair {
    // Owns the pods: dropping it tears the lab down (the server's firewall rule too).
    _lab: Lab,
    client: Pod,
    server: Pod,
    _nginx: Nginx,
}

fn pair(name: &str) -> Pair {
    let lab = Lab::new(name).expect("creating the lab");
    let client = lab.add_pod("client").expect("client pod");
    let server = lab.add_pod("server").expect("server pod");
    let nginx = Nginx::builder("v1")
        .http(OPEN_PORT)
        .start(&server)
        .expect("starting nginx");
    Pair {
        _lab: lab,
        client,
        server,
        _nginx: nginx,
    }
}

/// `count` attempts from `pair.client`, each on a new connection.
fn attempts(pair: &Pair, v6: bool, port: u16, count: usize, curl: Curl) -> CurlReport {
    let report = curl
        .count(count)
        .new_connection_per_request(true)
        .run(&pair.client)
        .expect("curl ran");
    assert_eq!(
        report.responses.len(),
        count,
        "curl reports every attempt to {}: {}",
        pair.server.url("http", v6, port),
        report.stderr
    );
    report
}

fn exit_codes(report: &CurlReport) -> Vec<i32> {
    report.responses.iter().map(|r| r.exit_code).collect()
}

/// The `failed` lines of sockets in `client`.
fn failed_from<'a>(observed: &'a Observed, client: &Pod) -> Vec<&'a Value> {
    let ips = [client.ipv4().to_string(), client.ipv6().to_string()];
    observed
        .flows
        .iter()
        .filter(|flow| flow["event"] == "failed" && ips.contains(&host_of(&flow["src"])))
        .collect()
}

/// Checks one failed line: the client socket's addresses, `failure`, and
/// nothing counted.
fn assert_failed_line(flow: &Value, client: &Pod, server: &Pod, v6: bool, port: u16, why: &str) {
    assert_eq!(flow["failure"], why, "{flow}");
    assert_eq!(flow["role"], "client", "{flow}");
    assert_eq!(host_of(&flow["src"]), client.ip(v6).to_string(), "{flow}");
    assert_ne!(port_of(&flow["src"]), 0, "{flow}");
    let dst = if v6 {
        format!("[{}]:{port}", server.ipv6())
    } else {
        format!("{}:{port}", server.ipv4())
    };
    assert_eq!(flow["dst"], dst, "{flow}");
    for field in ["bytes_sent", "bytes_received", "exchanges"] {
        assert_eq!(flow[field], 0, "{field} of {flow}");
    }
    assert_eq!(flow["transport"], "none", "{flow}");
}

#[test]
fn a_connect_to_a_port_nobody_listens_on_is_one_refused_line_per_attempt() {
    let _agent_slot = privileged();
    let pair = pair("e2e-refused");
    let agent = Agent::observe(&[]);
    let v4 = attempts(
        &pair,
        false,
        CLOSED_PORT,
        3,
        Curl::new(&pair.server.url("http", false, CLOSED_PORT)),
    );
    let v6 = attempts(
        &pair,
        true,
        CLOSED_PORT,
        2,
        Curl::new(&pair.server.url("http", true, CLOSED_PORT)),
    );
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();

    assert_eq!(exit_codes(&v4), [CURL_COULDNT_CONNECT; 3], "{}", v4.stderr);
    assert_eq!(exit_codes(&v6), [CURL_COULDNT_CONNECT; 2], "{}", v6.stderr);
    let failed = failed_from(&observed, &pair.client);
    assert_eq!(
        failed.len(),
        5,
        "one failed line per refused attempt: {failed:?}"
    );
    let (lines_v4, lines_v6): (Vec<&Value>, Vec<&Value>) = failed
        .iter()
        .partition(|flow| !flow["src"].as_str().unwrap_or("").starts_with('['));
    assert_eq!((lines_v4.len(), lines_v6.len()), (3, 2), "{failed:?}");
    for flow in &lines_v4 {
        assert_failed_line(
            flow,
            &pair.client,
            &pair.server,
            false,
            CLOSED_PORT,
            "refused",
        );
    }
    for flow in &lines_v6 {
        assert_failed_line(
            flow,
            &pair.client,
            &pair.server,
            true,
            CLOSED_PORT,
            "refused",
        );
    }
    // Each attempt is its own socket.
    let mut sockets: Vec<(String, u64)> = failed
        .iter()
        .map(|flow| {
            (
                flow["src"].to_string(),
                flow["cookie"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    sockets.sort();
    sockets.dedup();
    assert_eq!(sockets.len(), 5, "{failed:?}");
    assert_eq!(observed.lost_total(), 0, "{}", observed.summary);
}

#[test]
fn a_connect_whose_syn_is_dropped_is_one_timed_out_line_per_attempt() {
    let _agent_slot = privileged();
    let pair = pair("e2e-timeout");
    // Inside the server pod's own namespace: its SYNs on the open port go
    // unanswered, nothing outside the lab is touched.
    pair.server
        .exec(&[
            "iptables",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            &OPEN_PORT.to_string(),
            "--syn",
            "-j",
            "DROP",
        ])
        .expect("dropping SYNs in the server pod");
    let agent = Agent::observe(&[]);
    // A 2 s limit: the SYN is sent, retransmitted once after the initial
    // 1 s RTO, and then curl gives up.
    let report = attempts(
        &pair,
        false,
        OPEN_PORT,
        2,
        Curl::new(&pair.server.url("http", false, OPEN_PORT))
            .arg("--connect-timeout")
            .arg("2"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();

    assert_eq!(
        exit_codes(&report),
        [CURL_TIMED_OUT; 2],
        "{}",
        report.stderr
    );
    let failed = failed_from(&observed, &pair.client);
    assert_eq!(
        failed.len(),
        2,
        "one failed line per timed-out attempt: {failed:?}"
    );
    for flow in &failed {
        assert_failed_line(
            flow,
            &pair.client,
            &pair.server,
            false,
            OPEN_PORT,
            "timed_out",
        );
    }
    assert_eq!(observed.lost_total(), 0, "{}", observed.summary);
}

#[test]
fn connects_that_succeed_print_no_failed_line() {
    let _agent_slot = privileged();
    let pair = pair("e2e-connected");
    let agent = Agent::observe(&[]);
    let connections = 5;
    let report = attempts(
        &pair,
        false,
        OPEN_PORT,
        connections,
        Curl::new(&pair.server.url("http", false, OPEN_PORT)),
    );
    std::thread::sleep(Duration::from_millis(300));
    let observed = agent.stop();

    assert_eq!(report.count_status(200), connections, "{}", report.stderr);
    assert_eq!(report.connections() as usize, connections);
    let closes = observed.client_closes(&pair.client.ipv4().to_string(), OPEN_PORT);
    assert_eq!(closes.len(), connections, "every connection closes once");
    let failed = failed_from(&observed, &pair.client);
    assert!(failed.is_empty(), "no failed line: {failed:?}");
}
