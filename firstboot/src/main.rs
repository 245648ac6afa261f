//! `ecs-firstboot`: finds and applies the env, grows the disk, provides the
//! volumes, hands off to `ecs-appliance.target`. See the library (`firstboot`).
//!
//! Exit codes: 0 handed off (or standby), 1 a step failed (reason in
//! /run/appliance-failed), 2 bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use firstboot::agent::{finish, Agent};
use firstboot::cmdline::Cmdline;
use firstboot::discover::{Sources, Urls};
use firstboot::log::Log;
use firstboot::sysfs::System;
use firstboot::table::DiskFile;
use firstboot::volumes::SystemMounter;

#[derive(Parser)]
#[command(version, about = "First-boot agent of the ECS appliance")]
struct Args {
    /// The system root to apply to; not `/` skips grow and volumes.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Ask no metadata source (HTTP services, VMware guestinfo, Azure's
    /// wire server).
    #[arg(long)]
    no_metadata: bool,
    /// Base URL of every HTTP metadata source and Azure's wire server, for
    /// tests (default: each service's own address).
    #[arg(long, value_name = "URL")]
    metadata_url: Option<String>,
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
