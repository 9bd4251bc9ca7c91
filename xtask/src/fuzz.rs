//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (cargo-fuzz), run
//! with the nightly the eBPF crate pins. Each target reads its committed
//! seeds (`fuzz/seeds/<target>`) and grows a working corpus
//! (`fuzz/corpus/<target>`, not committed); a crash is saved under
//! `fuzz/artifacts/<target>` and fails the run.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// Every fuzz target: first client bytes, manifests, an agent's report.
pub const TARGETS: &[&str] = &["wire_classify", "manifest_loader", "report_json"];

/// How long `cargo xtask test` runs each target.
pub const SMOKE_SECONDS: u64 = 5;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// The target to run [default: every target, one after the other].
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// How long to run each target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

/// How the targets are built.
#[derive(Debug, Clone, Copy)]
pub enum Build {
    /// Optimised, with AddressSanitizer: the most executions per second and
    /// memory errors caught, for long runs. The first build takes a while
    /// (every dependency instrumented twice over).
    Thorough,
    /// Unoptimised, coverage only: builds in a few minutes, enough for the
    /// seconds-long runs of `cargo xtask test` (safe Rust rarely needs the
    /// sanitizer; overflow and bounds checks stay on).
    Smoke,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    match &args.target {
        Some(target) => run_target(target, args.seconds, Build::Thorough),
        None => run_all(args.seconds, Build::Thorough),
    }
}

pub fn run_all(seconds: u64, build: Build) -> anyhow::Result<()> {
    TARGETS
        .iter()
        .try_for_each(|target| run_target(target, seconds, build))
}

fn run_target(target: &str, seconds: u64, build: Build) -> anyhow::Result<()> {
    let fuzz_dir = cmd::workspace_root().join("fuzz");
    let corpus = format!("corpus/{target}");
    std::fs::create_dir_all(fuzz_dir.join(&corpus))
        .with_context(|| format!("creating fuzz/{corpus}"))?;
    let toolchain = pinned_nightly()?;
    cmd::run(
        Command::new("rustup")
            .current_dir(&fuzz_dir)
            // Cargo tells xtask its own toolchain, which would win over `rustup run`.
            .env_remove("RUSTUP_TOOLCHAIN")
            .args(["run", &toolchain, "cargo", "fuzz", "run"])
            .args(match build {
                Build::Thorough => &[][..],
                Build::Smoke => &["--dev", "--sanitizer", "none"][..],
            })
            .args([target, &corpus])
            .arg(format!("seeds/{target}"))
            .args(["--", &format!("-max_total_time={seconds}")]),
    )
    .with_context(|| {
        format!("fuzz target {target} failed; its crash input is in fuzz/artifacts/{target}")
    })
}

/// The nightly `agent-ebpf/rust-toolchain.toml` pins, as rustup resolves it there.
pub fn pinned_nightly() -> anyhow::Result<String> {
    let Some(shown) = cmd::output(cmd::in_ebpf_dir("rustup").args(["show", "active-toolchain"]))
    else {
        bail!("rustup cannot resolve the toolchain of agent-ebpf/ (run `cargo xtask setup`)");
    };
    match shown.split_whitespace().next() {
        Some(name) => Ok(name.to_owned()),
        None => bail!("rustup names no toolchain for agent-ebpf/"),
    }
}
