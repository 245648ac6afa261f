//! `ecs-firstboot`: finds and applies the env, grows the disk, provides the
//! volumes, hands off to `ecs-appliance.target`; `ecs-firstboot env-update`
//! (`env-update` in `PATH`) gives a running appliance a changed env. See
//! the library (`firstboot`).
//!
//! Exit codes: 0 handed off (or standby; the update done), 1 a step failed
//! (reason in /run/appliance-failed; the update refused or failed), 2 bad
//! arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use firstboot::agent::{finish, Agent};
use firstboot::cmdline::Cmdline;
use firstboot::discover::{Sources, Urls};
use firstboot::log::Log;
use firstboot::sysfs::System;
use firstboot::table::DiskFile;
use firstboot::update::{self, Request, Systemctl};
use firstboot::volumes::SystemMounter;

#[derive(Parser)]
#[command(version, about = "First-boot agent of the ECS appliance")]
struct Args {
    /// The system root to apply to; not `/` skips grow and volumes.
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    /// Ask no metadata source (HTTP services, VMware guestinfo, Azure's
    /// wire server).
    #[arg(long, global = true)]
    no_metadata: bool,
    /// Base URL of every HTTP metadata source and Azure's wire server, for
    /// tests (default: each service's own address).
    #[arg(long, value_name = "URL", global = true)]
    metadata_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Gather the env from every source in the agent's order, validate it,
    /// and only then replace /run/active-env.yml and /run/active-env.env;
    /// print the keys that changed (never values). An invalid env, or a
    /// change a running appliance cannot take (storage, standby), changes
    /// nothing and exits 1.
    EnvUpdate {
        /// Then apply it as the first boot does (host name, ssh keys, extra
        /// files, flags, the update timer) and restart the services whose
        /// configuration changed, the application last.
        #[arg(long)]
        apply: bool,
        /// With --apply: do not restart appliance.service even when its
        /// configuration changed; the caller does (appliance-update, after
        /// the package updates).
        #[arg(long, requires = "apply")]
        defer_appliance: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    seeds::cmd::set_logger(|c| eprintln!("ecs-firstboot: run {c}"));
    let real = args.root == std::path::Path::new("/");
    let mut sources = Sources::real();
    sources.root = args.root.clone();
    if args.no_metadata {
        sources = sources.without_metadata();
    } else if let Some(u) = &args.metadata_url {
        sources.urls = Urls::all(u);
    }
    if let Some(Command::EnvUpdate {
        apply,
        defer_appliance,
    }) = args.command
    {
        let req = Request {
            sources,
            apply,
            defer_appliance,
        };
        return match update::run(&req, &Systemctl) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                for line in format!("{e:#}").lines() {
                    eprintln!("env-update: {line}");
                }
                ExitCode::from(1)
            }
        };
    }
    let cmdline = Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let open = |p: &std::path::Path| DiskFile::open_device(p);
    let agent = Agent {
        root: args.root.clone(),
        sys: System::real(),
        sources,
        cmdline,
        storage: real,
        open: &open,
        mounter: &SystemMounter,
        set_running_hostname: real,
    };
    let mut log = Log::new();
    let result = agent.run(&mut log);
    ExitCode::from(finish(&args.root, &result, &mut log))
}
