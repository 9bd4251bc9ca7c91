//! `cargo xtask`: the project's own tasks (setup, demo, test, fuzz, bench, lab).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cluster;
mod cmd;
mod demo;
mod fuzz;
mod lab;
mod manifests;
mod repeat;
mod setup;
mod test;
mod upstream;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "meshdrift's development tasks",
    bin_name = "cargo xtask"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Check and install every prerequisite (needs root): LLVM 22, bpf-linker,
    /// the eBPF crate's pinned nightly with rust-src, and the Debian packages the lab uses.
    Setup,
    /// Run the demo: the lab with the frontend v1/v2 example, real traffic through
    /// HAProxy, and what the agent observed per subset.
    Demo(demo::DemoArgs),
    /// Run every test: lint (Rust, and the shipped manifests with helm lint,
    /// kubernetes-validate and checkov), unit, property, the privileged
    /// end-to-end suite, and each fuzz target for a few seconds.
    Test(test::TestArgs),
    /// Measure what meshdrift costs against the no-agent limit, and how far
    /// its HTTP/2 estimates are from the truth; rewrites BENCHMARKS.md (needs root).
    Bench(bench::BenchArgs),
    /// Run the fuzz targets (cargo-fuzz, libFuzzer) for longer: one, or all in turn.
    Fuzz(fuzz::FuzzArgs),
    /// Build or tear down a lab by hand.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// A real Kubernetes control plane in a lab, left running: `cluster up
    /// --dir DIR`, then `cluster down --dir DIR`.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Demo(args) => setup::run().and_then(|()| demo::run(&args)),
        Task::Test(args) => setup::run().and_then(|()| test::run(&args)),
        Task::Bench(args) => setup::run().and_then(|()| bench::run(&args)),
        Task::Fuzz(args) => setup::fuzz_prerequisites().and_then(|()| fuzz::run(&args)),
        Task::Lab(command) => lab::run(command),
        Task::Cluster(command @ cluster::ClusterCommand::Up { .. }) => {
            setup::run().and_then(|()| cluster::run(command))
        }
        Task::Cluster(command) => cluster::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
