//! The capabilities the shipped DaemonSet grants are the ones the agent
//! needs, no more and no fewer: run as root with exactly that set (read from
//! `deploy/kubernetes/daemonset.yaml`, bounded the way a container runtime
//! bounds a container, with `setpriv`), it attaches and counts every request
//! HAProxy sent; without any one of them it stops at start with one line
//! naming what is missing — no panic, nothing attached.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshdrift_e2e::privileged;
use meshdrift_lab::cluster::kubelet::{bounded_to, container_capabilities};
use meshdrift_lab::meshdrift_bin;
use meshdrift_lab::scenario::{Frontend, FrontendConfig, HOST};
use serde_json::Value;

const REQUESTS: usize = 200;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The agent container of the shipped DaemonSet.
fn daemonset_container() -> Value {
    let path = workspace().join("deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the DaemonSet");
    let daemonset: Value = serde_yaml_ng::from_str(&text).expect("parsing the DaemonSet");
    daemonset["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The DaemonSet's capability set, as a runtime grants it.
fn granted() -> Vec<String> {
    let container = daemonset_container();
    assert_ne!(
        container["securityContext"]["privileged"], true,
        "the DaemonSet must not run the agent privileged"
    );
    let capabilities =
        container_capabilities(&container).expect("a non-privileged container has a set");
    assert!(
        !capabilities.iter().any(|name| name == "SYS_ADMIN"),
        "CAP_SYS_ADMIN implies every capability: {capabilities:?}"
    );
    capabilities
}

/// A script that runs the agent as root bounded to `capabilities`, as the
/// container's process would be.
fn bounded_agent(dir: &Path, capabilities: &[String]) -> PathBuf {
    let script = dir.join(format!("meshdrift-with-{}", capabilities.join("-")));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec {} '{}' \"$@\"\n",
            bounded_to(capabilities, true).join(" "),
            meshdrift_bin().display()
        ),
    )
    .expect("writing the wrapper");
    let mut permissions = std::fs::metadata(&script).expect("wrapper").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).expect("making the wrapper executable");
    script
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshdrift-caps-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

#[test]
fn the_daemonsets_capabilities_attach_the_probe_and_count_every_request() {
    let _guard = privileged();
    let capabilities = granted();
    let dir = scratch("granted");
    let agent = bounded_agent(&dir, &capabilities);
    let frontend = Frontend::start(FrontendConfig::new(
        workspace().join("deploy/examples/frontend"),
        agent,
        (50, 50),
    ))
    .expect("the agent starts with the DaemonSet's capabilities");

    frontend
        .send(REQUESTS, |_, _| {})
        .expect("sending requests");
    let stats = frontend
        .proxy()
        .expect("the client's proxy")
        .stats()
        .expect("HAProxy's stats");
    let sent: u64 = ["v1", "v2"]
        .iter()
        .map(|name| stats.server(name).map_or(0, |server| server.stot))
        .sum();
    assert_eq!(sent, REQUESTS as u64, "HAProxy's own count");

    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let report = frontend.report().expect("the agent's report");
        let counted: u64 = report["splits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|split| split["source"]["name"] == "client" && split["host"] == HOST)
            .flat_map(|split| split["subsets"].as_array().into_iter().flatten())
            .filter_map(|subset| subset["count"].as_u64())
            .sum();
        if counted >= sent || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        counted, sent,
        "with {capabilities:?} the agent counts what HAProxy sent"
    );
    drop(frontend);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_any_one_capability_the_agent_stops_at_start_naming_it() {
    let _guard = privileged();
    let capabilities = granted();
    let dir = scratch("dropped");
    for dropped in &capabilities {
        let rest: Vec<String> = capabilities
            .iter()
            .filter(|name| *name != dropped)
            .cloned()
            .collect();
        let agent = bounded_agent(&dir, &rest);
        let mut child = Command::new(&agent)
            .args(["run", "--manifests"])
            .arg(workspace().join("deploy/examples/frontend"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the agent");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("waiting").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "without CAP_{dropped} the agent kept running: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        assert_eq!(
            output.status.code(),
            Some(2),
            "without CAP_{dropped}: {stderr}"
        );
        assert_eq!(lines.len(), 1, "one line without CAP_{dropped}: {stderr}");
        assert!(
            lines[0].contains(&format!("CAP_{dropped}")) && lines[0].contains("missing capabilit"),
            "the line names CAP_{dropped}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
