//! Names from manifests, file names and a report's JSON reach the terminal
//! escaped: a newline or an escape sequence in a name cannot forge a line or
//! drive the terminal.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use meshdrift_testkit::{Server, drift_report, workload};

const FORGED: &str = "error [IST0101] forged";

/// What a hostile name carries: a line break, a forged line, and escape
/// sequences that clear the screen and change colours.
fn hostile(name: &str) -> String {
    format!("{name}\n{FORGED}\u{1b}[2J\u{1b}[31m\u{9b}0m\u{202e}")
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshdrift-terminal-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn meshdrift(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// No raw control character but line ends, no line that starts with what
/// the hostile name tried to forge, and the name still shown (escaped).
fn assert_escaped(what: &str, text: &str) {
    assert!(
        !text
            .chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
        "{what}: raw control characters in {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with(FORGED)),
        "{what}: a forged line in {text}"
    );
    assert!(
        text.contains("\\n") && text.contains("\\u{1b}"),
        "{what}: the escapes are shown: {text}"
    );
}

/// A mesh whose names and JSON strings carry escape sequences (JSON `\n`
/// and `\u001b` decode to the raw characters).
fn hostile_manifests(dir: &std::path::Path) {
    let name = serde_json::to_string(&hostile("v")).unwrap();
    let subset = serde_json::to_string(&hostile("v1")).unwrap();
    fs::write(
        dir.join("mesh.json"),
        format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client", "namespace": "default", "labels": {{"app": "client"}}}},
    "spec": {{"containers": [{{"name": "c", "image": "i"}}]}}, "status": {{"podIP": "10.1.0.1"}}}},
  {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web", "namespace": "default"}},
    "spec": {{"selector": {{"app": "web"}}, "ports": [{{"name": "http", "port": 80}}]}}}},
  {{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {{"name": {name}, "namespace": "default"}},
    "spec": {{"hosts": ["web"], "http": [{{"name": {name}, "route": [{{"destination": {{"host": "web", "subset": {subset}}}}}]}}]}}}}
]}}"#
        ),
    )
    .unwrap();
}

#[test]
fn check_and_explain_escape_names_from_manifests() {
    let dir = tempdir("manifests");
    hostile_manifests(&dir);
    let manifests = dir.to_str().unwrap();
    let (stdout, _) = meshdrift(&["check", "--manifests", manifests]);
    assert_escaped("check", &stdout);
    let (stdout, _) = meshdrift(&[
        "explain",
        "--manifests",
        manifests,
        "--from",
        "default/client",
        "--to",
        "web",
    ]);
    assert_escaped("explain", &stdout);
}

#[test]
fn warnings_escape_file_names() {
    let dir = tempdir("file-names");
    hostile_manifests(&dir);
    fs::write(dir.join(format!("{}.yaml", hostile("broken"))), "kind: [\n").unwrap();
    let (_, stderr) = meshdrift(&[
        "explain",
        "--manifests",
        dir.to_str().unwrap(),
        "--from",
        "default/client",
        "--to",
        "web",
    ]);
    assert!(stderr.starts_with("warning: "), "{stderr}");
    assert_escaped("explain warnings", &stderr);
}

#[test]
fn report_escapes_names_from_the_agents_json() {
    let mut report = drift_report();
    report.node = hostile("node");
    report.splits[0].source = workload(&hostile("loadgen"));
    report.splits[0].subsets[0].subset = Some(hostile("v1"));
    report.transport[0].host = hostile("frontend");
    report.findings[0].message = hostile("message");
    report.agent.inventory.insert(hostile("kind"), 1);
    let server = Server::start(report);
    let (stdout, stderr) = meshdrift(&["report", "--url", &server.url("")]);
    assert!(stderr.is_empty(), "{stderr}");
    assert_escaped("report", &stdout);
}
