//! The `meshdrift` command: parses the command line and hands it to the library.

// The binary is a thin shell over the library, which uses the dependencies.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use meshdrift::cli;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli::init_tracing(cli.verbose);
    match cli::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            cli::output::warn(&format!("error: {err:#}"));
            ExitCode::from(2)
        }
    }
}
