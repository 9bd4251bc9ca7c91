//! `cargo xtask test --repeat N`: the end-to-end suite N times in a row, to
//! find the tests that fail only now and then. Every run goes on to the end
//! (a failure does not stop the lane), its whole output is kept in
//! `target/repeat/run-K.log`, and the summary names each failing test with
//! the runs it failed in.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// One run of the suite.
struct Run {
    passed: bool,
    took: Duration,
    failed_tests: Vec<String>,
    log: PathBuf,
}

pub fn run(times: u32, binary: &Path, test_args: &[String]) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let logs = root.join("target").join("repeat");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // Built once, before the clock starts: the runs time the tests alone.
    cmd::run(suite(&root, binary).arg("--no-run").stdout(Stdio::null()))?;
    let started = Instant::now();
    let mut runs = Vec::new();
    for k in 1..=times {
        let log = logs.join(format!("run-{k}.log"));
        let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let errors = file
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let begun = Instant::now();
        let status = suite(&root, binary)
            .args(["--"])
            .args(test_args)
            .stdout(file)
            .stderr(errors)
            .status()
            .context("cannot start `cargo test` for the end-to-end suite")?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let run = Run {
            passed: status.success(),
            took: begun.elapsed(),
            failed_tests: failed_tests(&text),
            log,
        };
        eprintln!(
            "[repeat] run {k}/{times}: {} in {:.0} s{}",
            if run.passed { "passed" } else { "FAILED" },
            run.took.as_secs_f64(),
            if run.passed {
                String::new()
            } else {
                format!(
                    " ({}; log {})",
                    if run.failed_tests.is_empty() {
                        "no test named: see the log".to_owned()
                    } else {
                        run.failed_tests.join(", ")
                    },
                    run.log.display()
                )
            }
        );
        runs.push(run);
    }
    let failures = runs.iter().filter(|run| !run.passed).count();
    let mut by_test: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, run) in runs.iter().enumerate() {
        for test in &run.failed_tests {
            by_test.entry(test).or_default().push(k + 1);
        }
    }
    let times_taken: Vec<f64> = runs.iter().map(|run| run.took.as_secs_f64()).collect();
    let slowest = times_taken.iter().copied().fold(0.0, f64::max);
    let fastest = times_taken.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "[repeat] {times} runs of the end-to-end suite in {:.0} s (each {fastest:.0}–{slowest:.0} s): {failures} failed",
        started.elapsed().as_secs_f64()
    );
    for (test, in_runs) in &by_test {
        eprintln!("[repeat]   {test}: failed in run(s) {in_runs:?}");
    }
    if failures > 0 {
        bail!("{failures} of {times} runs of the end-to-end suite failed");
    }
    Ok(())
}

/// `cargo test` of the end-to-end suite against `binary`.
fn suite(root: &Path, binary: &Path) -> Command {
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["test", "-p", "meshdrift-e2e", "--test", "e2e"])
        .env(cmd::REQUIRE_EBPF.0, cmd::REQUIRE_EBPF.1)
        .env("MESHDRIFT_BIN", binary);
    command
}

/// The tests libtest lists under `failures:` at the end of its output.
fn failed_tests(output: &str) -> Vec<String> {
    let mut tests = Vec::new();
    let mut in_list = false;
    for line in output.lines() {
        if line == "failures:" {
            in_list = true;
            tests.clear();
            continue;
        }
        if in_list {
            match line.strip_prefix("    ") {
                Some(name) if !name.contains(' ') => tests.push(name.to_owned()),
                _ if line.is_empty() && tests.is_empty() => {}
                _ => in_list = false,
            }
        }
    }
    tests
}

#[cfg(test)]
mod tests {
    use super::failed_tests;

    #[test]
    fn failing_tests_are_read_from_libtests_summary() {
        let output = "running 3 tests\ntest a ... ok\n\nfailures:\n\n---- b::c stdout ----\npanic\n\n\
                      failures:\n    b::c\n    d\n\ntest result: FAILED. 1 passed; 2 failed\n";
        assert_eq!(failed_tests(output), ["b::c", "d"]);
        assert!(failed_tests("test result: ok. 3 passed\n").is_empty());
    }
}
