//! The `ihdyn` binary: parse the command line, run, map the error to a message and exit code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Ctrl-C or SIGTERM: the running loops stop at their next step boundary and the run writes
    // what it computed (manifest status `interrupted`, exit 130); a second one exits at once.
    let _ = ctrlc::set_handler(|| {
        if ihdyn::interrupt::request() {
            eprintln!("\nihdyn: interrupted again; exiting without writing");
            std::process::exit(130);
        }
        eprintln!("\nihdyn: interrupt: stopping at the next step (Ctrl-C again to exit at once)");
    });
    match ihdyn::run(ihdyn::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ihdyn: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
