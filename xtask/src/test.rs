//! `cargo xtask test`: lint (the Rust code, then the shipped manifests with
//! helm lint, kubernetes-validate and checkov), then every test of the
//! workspace, privileged ones included, then a few seconds of each fuzz
//! target.

use std::process::Command;

use crate::{cmd, fuzz, manifests, repeat, upstream};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy on the host and eBPF crates, and
    /// the checks of the shipped manifests (helm lint, kubernetes-validate,
    /// checkov).
    #[arg(long)]
    pub no_lint: bool,
    /// Run only the checks of the shipped manifests (helm lint,
    /// kubernetes-validate, checkov on the kustomize output and the chart's
    /// renderings); the chart's rendering tests are `-- chart`.
    #[arg(long, conflicts_with_all = ["no_lint", "repeat"])]
    pub manifests_only: bool,
    /// Skip the short run of each fuzz target.
    #[arg(long)]
    pub no_fuzz: bool,
    /// Run only the end-to-end suite, N times in a row, to find flaky tests:
    /// each run goes to the end, its output is kept in target/repeat/, and
    /// the summary names every test that failed and in which runs (lint,
    /// unit tests and fuzzing are skipped).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: Option<u32>,
    /// Arguments passed to `cargo test` after `--` (a test-name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    if let Some(times) = args.repeat {
        let binary = cmd::build_meshdrift()?;
        return repeat::run(times, &binary, &args.test_args);
    }
    if args.manifests_only {
        return manifests::check(&upstream::build(&upstream::default_dir())?);
    }
    if !args.no_lint {
        cmd::run(
            Command::new("cargo")
                .current_dir(&root)
                .args(["fmt", "--all", "--check"]),
        )?;
        cmd::run(Command::new("cargo").current_dir(&root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        // Run in agent-ebpf/ so rustup picks the pinned nightly.
        cmd::run(cmd::in_ebpf_dir("cargo").args([
            "clippy",
            "-p",
            "meshdrift-ebpf",
            "--bins",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]))?;
        // Helm and kubectl as setup built them (up to date: no build here).
        let built = upstream::build(&upstream::default_dir())?;
        manifests::check(&built)?;
    }
    // The end-to-end suite runs the real `meshdrift` binary.
    let binary = cmd::build_meshdrift()?;
    cmd::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["test", "--workspace", "--"])
            .args(&args.test_args)
            .env(cmd::REQUIRE_EBPF.0, cmd::REQUIRE_EBPF.1)
            .env("MESHDRIFT_BIN", &binary),
    )?;
    if !args.no_fuzz {
        // Seconds per target on its corpus: what changed still holds on the
        // inputs earlier runs found; `cargo xtask fuzz` runs longer.
        fuzz::run_all(fuzz::SMOKE_SECONDS, fuzz::Build::Smoke)?;
    }
    Ok(())
}
