//! Every printing command with its standard output closed early (`| head`:
//! EPIPE) or full (`> /dev/full`: ENOSPC): a quiet exit with the command's own
//! status in the first case, one error line in the second, never a panic.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use meshdrift_testkit::{Server, drift_report};

fn frontend() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/frontend")
        .to_string_lossy()
        .into_owned()
}

/// Each printing command that runs without root, in its text and JSON
/// forms, and the help texts; all exit 0 when their output is read in full.
fn commands(report_url: &str) -> Vec<Vec<String>> {
    let manifests = frontend();
    let from = ["--from", "default/client", "--to", "frontend"];
    let printing: [Vec<&str>; 3] = [
        vec!["check", "--manifests", &manifests],
        [&["explain", "--manifests", &manifests][..], &from].concat(),
        vec!["report", "--url", report_url],
    ];
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for args in &printing {
        out.push(owned(args));
        out.push(owned(&[&args[..], &["--output", "json"]].concat()));
    }
    for help in [
        &["--help"][..],
        &["--version"],
        &["check", "--help"],
        &["report", "--help"],
    ] {
        out.push(owned(help));
    }
    out
}

fn run(args: &[String], stdout: impl Into<Stdio>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshdrift"))
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let server = Server::start(drift_report());
    for args in commands(&server.url("")) {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = run(&args, writer);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn a_full_stdout_is_one_error_line() {
    let server = Server::start(drift_report());
    for args in commands(&server.url("")) {
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = run(&args, full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr,
            "error: cannot write to standard output: No space left on device (os error 28)\n",
            "{args:?}"
        );
    }
}
