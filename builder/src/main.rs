//! `imgbuild`: parses the command line, runs the one command it names, and
//! maps the outcome to an exit code.

use std::process::ExitCode;

use imgbuild::cli::{Cli, Command, EnvCommand};
use imgbuild::{build, envcmd, envnew, envpkg, exit, logging, run, treecmd};

fn main() -> ExitCode {
    let args = Cli::parse_args();
    logging::init(args.verbosity());
    match dispatch(args) {
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

/// Runs the parsed command line.
fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let verbosity = cli.verbosity();
    match cli.command {
        None => build::run(&build::BuildOptions::from_args(cli.build, verbosity)?),
        Some(Command::Tree(args)) => treecmd::tree(&args, verbosity),
        Some(Command::Cache(args)) => treecmd::cache(&args),
        Some(Command::Env(EnvCommand::Check(args))) => envcmd::check(&args),
        Some(Command::Env(EnvCommand::New(args))) => envnew::run(&args),
        Some(Command::Env(EnvCommand::Package(args))) => envpkg::package(&args),
        Some(Command::Env(EnvCommand::Unpack(args))) => envpkg::unpack(&args),
        Some(Command::Seed(args)) => envcmd::seed(&args),
        Some(Command::Run(args)) => run::run(&run::RunOptions::from_args(args)),
    }
}
