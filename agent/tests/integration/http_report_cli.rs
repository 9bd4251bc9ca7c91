//! `meshdrift report` against a real agent HTTP server, and against nothing.

use std::process::Command;

use meshdrift::report::Report;
use meshdrift_testkit::{Server, drift_report};

fn meshdrift(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .output()
        .expect("run meshdrift")
}

#[test]
fn table_output_shows_the_drift_and_the_violation() {
    let server = Server::start(drift_report());
    let out = meshdrift(&["report", "--url", &server.url("")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("node lab-node-1, window 10m"), "{text}");
    assert!(text.contains("DRIFT: subset v2 received 20.0%"), "{text}");
    assert!(
        text.contains("subset v1") && text.contains("observed  80.0%"),
        "{text}"
    );
    assert!(text.contains("VIOLATION (57 plaintext)"), "{text}");
    assert!(text.contains("default/frontend-v3-7d9f"), "{text}");
    eprintln!("{text}");
}

#[test]
fn json_output_is_the_agents_report() {
    let server = Server::start(drift_report());
    let out = meshdrift(&[
        "report",
        "--url",
        &format!("{}/", server.url("")),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Report = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report, drift_report());
}

#[test]
fn unreachable_agent_is_a_clear_error_naming_the_url() {
    // Bind then drop: a local port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = meshdrift(&["report", "--url", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("{url}/report")), "{stderr}");
    assert!(stderr.contains("meshdrift run"), "{stderr}");
}
