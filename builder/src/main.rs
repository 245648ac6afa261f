use std::process::ExitCode;

use imgbuild::{cli, exit, logging};

fn main() -> ExitCode {
    let args = cli::Cli::parse_args();
    logging::init(args.verbosity());
    match cli::run(args) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            let code = exit::code_for(&err);
            if code == exit::BAD_INPUT {
                // Bad input: one line per problem, each one greppable.
                for line in format!("{err:#}").lines() {
                    eprintln!("imgbuild: error: {line}");
                }
            } else {
                // The full chain: what was being done, then the tool's output.
                eprintln!("imgbuild: error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}
