//! The `meshdrift` command: parses the command line and hands it to the library.

// The binary is a thin shell over the library, which uses the dependencies.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = meshdrift::cli::Cli::parse();
    meshdrift::cli::init_tracing(cli.verbose);
    match meshdrift::cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
