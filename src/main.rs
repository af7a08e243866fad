//! The `ihdyn` binary: parse the command line, run, map the error to a message and exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match ihdyn::run(ihdyn::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ihdyn: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
