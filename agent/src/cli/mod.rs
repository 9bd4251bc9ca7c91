//! Command-line interface: parses arguments and wires the pieces together.

use std::process::ExitCode;

use clap::{Parser, Subcommand, error::ErrorKind};

mod agent_url;
pub mod check;
mod cluster_report;
mod duration;
pub mod explain;
mod nodes_table;
pub mod observe;
pub mod output;
pub mod report;
pub mod run;
mod terminal;

/// Output formats shared by the commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Text,
    /// Aligned table.
    Table,
    /// Machine-readable JSON.
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "meshdrift",
    version,
    about = "Checks that an Istio mesh really does what its configuration declares",
    long_about = "meshdrift watches the TCP connections pods really open (eBPF, from the kernel) \
                  and compares them with the VirtualService weights and DestinationRule TLS \
                  policy the mesh declares."
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: observe the node's flows, judge them against the declared
    /// policy, serve /metrics, /report and the report page (needs root).
    Run(run::RunArgs),
    /// Stream every TCP flow the kernel sees on this node (needs root).
    Observe(observe::ObserveArgs),
    /// Show the declared expectation for one client and destination.
    Explain(explain::ExplainArgs),
    /// Report static findings on a set of Istio manifests.
    Check(check::CheckArgs),
    /// Fetch a running agent's report, or the whole cluster's verdict from
    /// Prometheus (--prometheus), and render it.
    Report(report::ReportArgs),
}

/// Parses the command line. Help and version text go to stdout through
/// [`output`], like any command's result; usage errors go to stderr as clap
/// words them. `Err` carries the status to exit with.
pub fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            Err(match output::print_styled(&err.render()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    output::warn(&format!("error: {:#}", anyhow::Error::from(err)));
                    ExitCode::from(2)
                }
            })
        }
        Err(err) => {
            // Best effort, like every diagnostic: a closed stderr loses it.
            let _ = err.print();
            Err(ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)))
        }
    }
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Observe(args) => observe::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Check(args) => check::run(args),
        Command::Report(args) => report::run(args),
    }
}
