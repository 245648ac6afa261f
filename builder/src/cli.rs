//! Command-line interface: argument definitions and dispatch, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::envcmd;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a build step or tool failed (the message names the step and the tool's output)
  2  bad input: the env, a recipe, an argument or an output path";

/// Builds the ECS appliance disk image and its cidata seed from layered recipes.
///
/// The main use is `imgbuild --env env.yml -o ecs.qcow2`. It writes the image,
/// the seed ISO that carries env.yml next to it (ecs.seed.iso), SHA256SUMS and
/// a manifest. Subcommands check an env, write a seed alone, or manage the
/// layer cache.
#[derive(Debug, Parser)]
#[command(
    name = "imgbuild",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub build: BuildArgs,

    /// Show only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Show more detail, including every external command that runs.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

impl Cli {
    /// -1 for `-q`, 1 for `-v`, 0 otherwise.
    pub fn verbosity(&self) -> i8 {
        match (self.quiet, self.verbose) {
            (true, _) => -1,
            (_, true) => 1,
            _ => 0,
        }
    }
}

/// Arguments of the main command: build an image.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The appliance's env.yml (validated before anything slow starts).
    #[arg(long, value_name = "FILE", required = true)]
    pub env: Option<PathBuf>,

    /// The image to write; its suffix picks the format (.raw, .img, .qcow2, .vmdk).
    #[arg(short, long, value_name = "IMAGE", required = true)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an env.yml, or print its flattened form.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Write a cidata seed ISO that carries an env.yml (cloud-init NoCloud compatible).
    Seed(SeedArgs),
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Validate an env.yml and report every problem with its line and key.
    #[command(after_help = EXIT_CODES)]
    Check(EnvCheckArgs),
}

#[derive(Debug, Args)]
pub struct EnvCheckArgs {
    /// The env.yml to check.
    pub env: PathBuf,

    /// Print the flattened env (`export NAME=value` lines, as the appliance's
    /// units source them) on stdout. It contains the env's secrets.
    #[arg(long)]
    pub flatten: bool,

    /// With --flatten: the trees to print, comma separated, or `.` for all.
    #[arg(long, default_value = "ecs,appliance", requires = "flatten")]
    pub trees: String,

    /// With --flatten: the prefix of every line.
    #[arg(long, default_value = "export ", requires = "flatten")]
    pub prefix: String,
}

#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES)]
pub struct SeedArgs {
    /// The env.yml to carry as the seed's user-data (copied byte for byte).
    #[arg(long, value_name = "FILE")]
    pub env: PathBuf,

    /// The seed ISO to write (mode 0600: it holds the env's secrets).
    #[arg(short, long, value_name = "ISO")]
    pub output: PathBuf,

    /// A cloud-init network-config file to add to the seed.
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,

    /// The instance-id in meta-data (default: derived from a hash of the env).
    #[arg(long, value_name = "ID")]
    pub instance_id: Option<String>,

    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Env(EnvCommand::Check(args))) => envcmd::check(&args),
        Some(Command::Seed(args)) => envcmd::seed(&args),
        None => anyhow::bail!(
            "building an image is not implemented yet: see issues 3 and 4 (use `imgbuild seed` for the seed alone)"
        ),
    }
}
