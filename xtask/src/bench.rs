//! `cargo xtask bench`: the criterion benchmarks of the workspace.

use std::process::Command;

use crate::cmd;

pub fn run() -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    cmd::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["bench", "-p", "meshdrift-agent"]),
    )
}
