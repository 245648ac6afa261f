//! Writes imgbuild's man pages and shell completions from its clap
//! definitions, for `scripts/package-deb.sh`:
//!
//!     cargo run --release -p imgbuild --example gen-docs -- OUT
//!
//! `OUT/man/imgbuild.1`, one page per subcommand (`imgbuild-env-new.1`, ...),
//! and `OUT/completions/{imgbuild.bash,_imgbuild,imgbuild.fish}`.
//! An example, not part of the binary: clap_mangen and clap_complete stay
//! out of the imgbuild executable.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args_os().nth(1).expect("usage: gen-docs OUT_DIR"));
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    let cmd = imgbuild::cli::Cli::command();
    write_pages(&cmd, "imgbuild", &man)?;
    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = imgbuild::cli::Cli::command();
        clap_complete::generate_to(shell, &mut cmd, "imgbuild", &comp)?;
    }
    Ok(())
}

/// The page of `cmd` (named `name`) and of each of its visible subcommands.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> std::io::Result<()> {
    // clap's names are &'static str without its `string` feature; this
    // program runs once and exits.
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let cmd = cmd.clone().name(name).bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(dir.join(format!("{name}.1")), buf)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(())
}
