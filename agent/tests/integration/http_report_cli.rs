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

#[test]
fn invalid_urls_are_refused_before_connecting() {
    // (--url, what the error says)
    let table = [
        ("http://127.0.0.1:99999", "port 99999 is not a TCP port"),
        ("127.0.0.1:70000", "port 70000 is not a TCP port"),
        ("http://127.0.0.1:0", "port 0 is not a TCP port"),
        ("ftp://127.0.0.1:9477", "unsupported scheme"),
        ("http://", "not a URL"),
    ];
    for (url, says) in table {
        let out = meshdrift(&["report", "--url", url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("invalid value"), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(!stderr.contains("cannot connect"), "{url}: {stderr}");
    }
}

#[test]
fn host_and_port_without_a_scheme_reach_the_agent() {
    let server = Server::start(drift_report());
    let port = server.addr.port();
    for url in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let out = meshdrift(&["report", "--url", &url, "--output", "json"]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Report = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(report, drift_report(), "{url}");
    }
}

/// A server on a free local port that answers its first request with
/// `response` (or, with `None`, accepts and never answers).
fn answer_once(response: Option<&'static str>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        match response {
            Some(response) => {
                let _ = stream.write_all(response.as_bytes());
            }
            // Hold the connection open past the client's timeout.
            None => std::thread::sleep(std::time::Duration::from_secs(10)),
        }
    });
    url
}

#[test]
fn the_agents_answer_is_reported_as_it_was() {
    let server = Server::start(drift_report());
    // (--url, what the error says)
    let table = [
        (
            server.url("/not-the-agent"),
            "the agent answered 404 Not Found".to_owned(),
        ),
        (
            answer_once(Some(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom",
            )),
            "the agent answered 500 Internal Server Error".to_owned(),
        ),
        (
            answer_once(Some(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]",
            )),
            "the answer (200 OK) is not a meshdrift report".to_owned(),
        ),
        (
            answer_once(None),
            "no answer within 1s (timed out)".to_owned(),
        ),
    ];
    for (url, says) in table {
        let out = meshdrift(&["report", "--url", &url, "--timeout", "1s"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(&says), "{url}: {stderr}");
        assert!(!stderr.contains("meshdrift run"), "no guessing: {stderr}");
    }
}
