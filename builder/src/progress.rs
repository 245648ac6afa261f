//! What a user sees while slow steps run.
//!
//! On a terminal (and without `-q`/`-v`), each step shows a spinner with its
//! elapsed time and the latest line the tool printed. Otherwise each step logs
//! a start and an end line; with `-v` every line of tool output is logged at
//! debug level. `tracing` carries every line, so `RUST_LOG` filters apply.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// How steps are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Spinners,
    Plain,
}

/// The progress display of one build.
#[derive(Debug, Clone)]
pub struct Progress {
    mode: Mode,
}

impl Progress {
    /// Spinners when stderr is a terminal and `verbosity` is 0; plain log
    /// lines otherwise (`-q` = -1 hides them through the log filter).
    pub fn new(verbosity: i8) -> Progress {
        let tty =
            std::io::stderr().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb");
        Progress {
            mode: if tty && verbosity == 0 {
                Mode::Spinners
            } else {
                Mode::Plain
            },
        }
    }

    /// Plain log lines only (tests, libraries).
    pub fn plain() -> Progress {
        Progress { mode: Mode::Plain }
    }

    /// Starts a step; `what` reads like `10-boot: apt-get install`.
    pub fn step(&self, what: impl Into<String>) -> Step {
        let what = what.into();
        let bar = match self.mode {
            Mode::Spinners => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {prefix}: {wide_msg}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(what.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
            Mode::Plain => {
                tracing::info!("{what} ...");
                None
            }
        };
        Step {
            what,
            start: Instant::now(),
            bar,
        }
    }

    /// Logs a line without tearing an active spinner.
    pub fn info(&self, line: &str) {
        tracing::info!("{line}");
    }
}

/// Runs one named step of a build and, when it succeeds, logs what it
/// made with its duration: `{summary} in 1.2s` (seconds, as the benchmarks
/// read them). The build and the disk assembly time and log every step
/// through this one helper (mkosi's `complete_step`); a failing step logs
/// nothing, its error is reported by the caller.
pub fn complete_step<T>(
    f: impl FnOnce() -> anyhow::Result<T>,
    summary: impl FnOnce(&T) -> String,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let out = f()?;
    tracing::info!("{} in {:.2}s", summary(&out), start.elapsed().as_secs_f64());
    Ok(out)
}

/// One running step; call [`Step::done`] when it succeeded. Dropping it
/// without `done` (an error) clears its spinner and logs nothing: the error
/// itself is reported by the caller.
#[derive(Debug)]
pub struct Step {
    what: String,
    start: Instant,
    bar: Option<ProgressBar>,
}

impl Step {
    /// A line of the tool's output: shown beside the spinner, or logged at
    /// debug level.
    pub fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(line.trim().to_string()),
            None => tracing::debug!("  {}: {}", self.what, line.trim_end()),
        }
    }

    /// Logs a line while the step runs, above the spinner.
    pub fn info(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| tracing::info!("{line}")),
            None => tracing::info!("{line}"),
        }
    }

    /// Ends the step successfully, logging its duration.
    pub fn done(self) -> Duration {
        self.done_with("done")
    }

    /// Ends the step successfully with a short note, e.g. `hit`.
    pub fn done_with(mut self, note: &str) -> Duration {
        let took = self.start.elapsed();
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        tracing::info!("{}: {note} in {}", self.what, fmt_duration(took));
        took
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// `1.2s`, `2m03s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(1234)), "1.2s");
        assert_eq!(fmt_duration(Duration::from_secs(123)), "2m03s");
    }

    #[test]
    fn complete_step_passes_results_and_errors_through() {
        assert_eq!(complete_step(|| Ok(7), |n| format!("n={n}")).unwrap(), 7);
        let e = complete_step(
            || -> anyhow::Result<()> { anyhow::bail!("no") },
            |_| "x".into(),
        );
        assert_eq!(e.unwrap_err().to_string(), "no");
    }

    #[test]
    fn plain_steps_run() {
        let p = Progress::plain();
        let s = p.step("x: y");
        s.line("output");
        assert!(s.done() < Duration::from_secs(5));
    }
}
