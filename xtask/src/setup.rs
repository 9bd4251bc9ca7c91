//! `cargo xtask setup`: every prerequisite, checked and installed idempotently.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Debian packages: LLVM 22 for bpf-linker, the lab's real software (h2load
/// from nghttp2-client, iperf3 for the benchmark, nginx's stream module for
/// the inbound sidecar, iptables for Istio's and kube-proxy's nat rules,
/// util-linux's setpriv to run proxies as their user), Prometheus (server and
/// promtool), Chromium for the report page's browser test, bpftool for
/// the kernel's per-program statistics, and python3-venv for the virtual
/// environment the manifests' checks (kubernetes-validate, checkov) are
/// installed into.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "iproute2",
    "nginx",
    "libnginx-mod-stream",
    "haproxy",
    "iptables",
    "util-linux",
    "wrk",
    "curl",
    "openssl",
    "prometheus",
    "chromium",
    "iperf3",
    "nghttp2-client",
    "bpftool",
    "python3-venv",
];

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

pub fn run() -> anyhow::Result<()> {
    step("running as root", check_root)?;
    step("cgroup v2 is mounted", check_cgroup2)?;
    step("the kernel offers BPF with BTF", check_bpf)?;
    step("Debian packages", install_debian_packages)?;
    step(
        "the pinned nightly with rust-src (agent-ebpf/rust-toolchain.toml)",
        install_ebpf_toolchain,
    )?;
    step("bpf-linker built against LLVM 22", install_bpf_linker)?;
    step("cargo-fuzz for the fuzz targets", install_cargo_fuzz)?;
    step(
        "the Kubernetes control plane, etcd and Helm built from tools/ (Go)",
        || crate::cluster::prerequisites().map(drop),
    )?;
    eprintln!("[setup] all prerequisites are in place");
    Ok(())
}

/// What `cargo xtask fuzz` needs, without root: the pinned nightly and cargo-fuzz.
pub fn fuzz_prerequisites() -> anyhow::Result<()> {
    step(
        "the pinned nightly with rust-src (agent-ebpf/rust-toolchain.toml)",
        install_ebpf_toolchain,
    )?;
    step("cargo-fuzz for the fuzz targets", install_cargo_fuzz)
}

fn step(what: &str, check: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    eprintln!("[setup] {what} ...");
    check().with_context(|| format!("setup step failed: {what}"))?;
    eprintln!("[setup] {what}: ok");
    Ok(())
}

fn check_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "meshdrift's setup, demo and tests need root: they install packages, create \
             network namespaces and load eBPF programs. Run them as root (e.g. `sudo -E cargo xtask test`)."
        );
    }
    Ok(())
}

fn check_cgroup2() -> anyhow::Result<()> {
    meshdrift_host::cgroup2_root()?;
    Ok(())
}

fn check_bpf() -> anyhow::Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "the kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); meshdrift needs Linux >= 5.8 built with CONFIG_DEBUG_INFO_BTF"
        );
    }
    // An empty BPF_MAP_CREATE is invalid: EINVAL proves the syscall exists and is
    // allowed, ENOSYS or EPERM say what is missing.
    let mut attr = [0u8; 128];
    // SAFETY: the bpf syscall reads at most `attr.len()` bytes from a valid buffer.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), attr.len()) };
    if ret >= 0 {
        // SAFETY: a successful call returned a file descriptor we own.
        unsafe { libc::close(ret as i32) };
        return Ok(());
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINVAL) => Ok(()),
        Some(libc::ENOSYS) => {
            bail!("the kernel has no bpf() system call (CONFIG_BPF_SYSCALL is off)")
        }
        Some(libc::EPERM) => {
            bail!("bpf() is not permitted here (a seccomp policy or missing CAP_BPF)")
        }
        other => bail!("bpf() failed unexpectedly: errno {other:?}"),
    }
}

fn package_installed(package: &str) -> bool {
    cmd::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("install ok installed"))
}

fn install_debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|package| !package_installed(package))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("[setup] installing {}", missing.join(" "));
    cmd::run(Command::new("apt-get").arg("update").arg("-q"))?;
    cmd::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("installing Debian packages (is the Debian archive reachable?)")
}

/// `rustup toolchain install` without a name, run in `agent-ebpf/`, installs
/// the nightly its rust-toolchain.toml pins, with rust-src; it does nothing
/// when that toolchain is already there.
fn install_ebpf_toolchain() -> anyhow::Result<()> {
    cmd::run(cmd::in_ebpf_dir("rustup").args(["toolchain", "install"]))
        .context("installing the eBPF crate's pinned nightly (agent-ebpf/rust-toolchain.toml)")
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("[setup] building cargo-fuzz (about two minutes)");
    cmd::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn install_bpf_linker() -> anyhow::Result<()> {
    if cmd::succeeds(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    eprintln!("[setup] building bpf-linker against LLVM 22 (about two minutes)");
    cmd::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}
