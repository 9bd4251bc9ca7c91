//! Builds the kernel programs of `agent-ebpf` for the BPF target with the
//! nightly that `agent-ebpf/rust-toolchain.toml` pins, and leaves the object in
//! `OUT_DIR/meshdrift-probes`, where `probe` embeds it.
//!
//! Without bpf-linker or that nightly the library still builds (so plain
//! `cargo test` runs its unit tests anywhere) with an empty object, and says
//! so; the loader then refuses to attach. `cargo xtask` sets
//! `MESHDRIFT_REQUIRE_EBPF=1`, which makes a missing tool an error instead.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

const REQUIRE_ENV: &str = "MESHDRIFT_REQUIRE_EBPF";

fn main() -> anyhow::Result<()> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("agent has no parent directory"))?
        .join("agent-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    println!("cargo:rerun-if-env-changed={REQUIRE_ENV}");
    let toolchain = pinned_toolchain(&toolchain_file)?;
    let object =
        PathBuf::from(env::var("OUT_DIR").context("OUT_DIR not set")?).join("meshdrift-probes");

    match missing_tool(&toolchain) {
        Some(missing) if env::var_os(REQUIRE_ENV).is_some() => {
            bail!(
                "cannot build the eBPF programs: {}; `cargo xtask setup` installs it",
                missing.what
            )
        }
        Some(missing) => {
            println!(
                "cargo:warning=building meshdrift without its eBPF programs ({}); \
                 `run` and `observe` will refuse to start. `cargo xtask setup` installs what is missing.",
                missing.what
            );
            // Where the tool will appear once installed: the build runs again then.
            println!("cargo:rerun-if-changed={}", missing.appears_at.display());
            println!("cargo:rerun-if-changed={}", ebpf_dir.display());
            fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
            return Ok(());
        }
        None => {}
    }
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("agent-ebpf path is not UTF-8"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "meshdrift-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    // With AYA_BUILD_SKIP no object exists; an empty one keeps the crate
    // compiling and the loader reports the problem at run time instead.
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}

/// The `channel = "..."` of the eBPF crate's rust-toolchain.toml.
fn pinned_toolchain(file: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_owned())
        .find(|value| !value.is_empty())
        .ok_or_else(|| anyhow!("{} names no channel", file.display()))
}

/// A tool the eBPF build needs and this machine lacks.
struct Missing {
    what: String,
    /// A file that exists once the tool is installed.
    appears_at: PathBuf,
}

/// What the eBPF build needs and this machine lacks, if anything.
fn missing_tool(toolchain: &str) -> Option<Missing> {
    let home = PathBuf::from(env::var_os("HOME").unwrap_or_default());
    let on_path = env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.is_none() {
        let cargo_home =
            env::var_os("CARGO_HOME").map_or_else(|| home.join(".cargo"), PathBuf::from);
        return Some(Missing {
            what: "bpf-linker is not installed".to_owned(),
            appears_at: cargo_home.join("bin/bpf-linker"),
        });
    }
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let core_sources = "lib/rustlib/src/rust/library/core/Cargo.toml";
    let Some(sysroot) = sysroot else {
        let rustup_home =
            env::var_os("RUSTUP_HOME").map_or_else(|| home.join(".rustup"), PathBuf::from);
        let host = env::var("HOST").unwrap_or_default();
        return Some(Missing {
            what: format!("the {toolchain} toolchain is not installed"),
            appears_at: rustup_home
                .join("toolchains")
                .join(format!("{toolchain}-{host}"))
                .join(core_sources),
        });
    };
    // -Z build-std=core compiles core from the toolchain's sources.
    let core = sysroot.join(core_sources);
    if !core.is_file() {
        return Some(Missing {
            what: format!("the {toolchain} toolchain has no rust-src component"),
            appears_at: core,
        });
    }
    None
}
