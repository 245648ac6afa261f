use std::process::ExitCode;

use clap::Parser;
use imgbuild::{cli, exit, logging};

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    logging::init(args.verbosity());
    match cli::run(args) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            // One line for bad input; the full chain (contexts, tool output) otherwise.
            eprintln!("imgbuild: error: {err:#}");
            ExitCode::from(exit::code_for(&err))
        }
    }
}
