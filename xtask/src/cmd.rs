//! Running commands with their command line shown, and finding the workspace.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or(manifest_dir.clone(), PathBuf::from)
}

/// `program` run in the eBPF crate's directory, where rustup picks the nightly
/// its rust-toolchain.toml pins. Cargo tells the programs it runs (xtask among
/// them) which toolchain it is in `RUSTUP_TOOLCHAIN`, which would override
/// the file: it is removed.
pub fn in_ebpf_dir(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(workspace_root().join("agent-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// Makes a missing eBPF tool an error in `agent/build.rs` rather than a
/// build without the kernel programs: everything xtask builds runs them.
pub const REQUIRE_EBPF: (&str, &str) = ("MESHDRIFT_REQUIRE_EBPF", "1");

/// Builds the `meshdrift` binary (debug profile) and returns its path.
pub fn build_meshdrift() -> anyhow::Result<PathBuf> {
    build_meshdrift_profile(false)
}

/// Builds the `meshdrift` binary (release profile, as it ships) and returns its path.
pub fn build_meshdrift_release() -> anyhow::Result<PathBuf> {
    build_meshdrift_profile(true)
}

fn build_meshdrift_profile(release: bool) -> anyhow::Result<PathBuf> {
    let root = workspace_root();
    let mut command = Command::new("cargo");
    command
        .current_dir(&root)
        .env(REQUIRE_EBPF.0, REQUIRE_EBPF.1)
        .args(["build", "--quiet"]);
    if release {
        command.arg("--release");
    }
    run(command.args(["-p", "meshdrift-agent", "--bin", "meshdrift"]))?;
    let profile = if release { "release" } else { "debug" };
    Ok(root.join("target").join(profile).join("meshdrift"))
}

/// Runs a command inheriting stdio, failing with its command line when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("[xtask] $ {}", render(command));
    let status = command
        .status()
        .with_context(|| format!("cannot start `{}`", render(command)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", render(command));
    }
    Ok(())
}

/// Runs a command quietly and returns whether it succeeded (false when it cannot start).
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs a command and returns its standard output, if it succeeded.
pub fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn render(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
