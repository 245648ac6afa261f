//! Log output: `tracing` underneath, plain lines on stderr.
//!
//! `-q` shows only warnings and errors, `-v` adds debug lines (every external
//! command line), `RUST_LOG` overrides both.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbosity` is -1 (quiet), 0 or 1+ (verbose).
pub fn init(verbosity: i8) {
    let default = match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
    seeds::cmd::set_logger(|line| tracing::debug!("$ {line}"));
}
