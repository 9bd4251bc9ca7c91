//! Builds the kernel programs of `agent-ebpf` for the BPF target and leaves the
//! object in `OUT_DIR/meshdrift-probes`, where `probe` embeds it.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = PathBuf::from(metadata_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent has no parent directory"))?
        .join("agent-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("agent-ebpf path is not UTF-8"))?
        .to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "meshdrift-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    // With AYA_BUILD_SKIP (used by `cargo check`-style work on machines without
    // bpf-linker) no object exists; an empty one keeps the crate compiling and the
    // loader reports the problem at run time instead.
    let object =
        PathBuf::from(env::var("OUT_DIR").context("OUT_DIR not set")?).join("meshdrift-probes");
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
