//! The one helper through which both programs run external commands.
//!
//! Every command is logged (program and arguments) before it runs, its stderr
//! is captured, and a failure becomes an error that carries the command line,
//! the exit status and the tail of stderr, so a user sees what failed and why
//! without re-running anything. Arguments that may hold secrets must never be
//! passed on a command line: feed them on stdin or through a file instead.

use std::ffi::OsStr;
use std::fmt;
use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};

/// How many trailing lines of a failed command's output go into its error.
pub const ERROR_TAIL_LINES: usize = 20;

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program could not be started at all (usually: not installed).
    #[error("running {cmdline}: cannot start {program}: {source}")]
    Spawn {
        cmdline: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The program ran and exited unsuccessfully.
    #[error("running {cmdline}: {status}{}", tail_suffix(.tail))]
    Failed {
        cmdline: String,
        status: ExitStatus,
        /// Last lines of stderr (or stdout when stderr was empty).
        tail: String,
    },
    /// [`run_quiet`]: the program ran longer than allowed and was killed.
    #[error("running {cmdline}: no answer within {secs:.1} s; killed")]
    TimedOut { cmdline: String, secs: f64 },
    /// [`run_quiet`]: the program printed more than allowed.
    #[error("running {cmdline}: output larger than {limit} bytes; killed")]
    TooLarge { cmdline: String, limit: usize },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{tail}")
    }
}

/// The output of a successful command.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A command line shown in logs and errors: arguments with spaces are quoted.
pub fn display_cmdline(cmd: &Command) -> String {
    let mut parts = vec![quote(cmd.get_program())];
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The last `n` lines of `bytes`, as text.
pub fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` to completion, capturing stdout and stderr; `stdin` (if any) is
/// written to the command's standard input.
pub fn run_with_input(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<Output, CmdError> {
    let cmdline = display_cmdline(cmd);
    tracing_log(&cmdline);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        cmdline: cmdline.clone(),
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading all its input is judged by its
        // exit status below, not by the broken pipe.
        let _ = pipe.write_all(input);
    }
    let out = child.wait_with_output().map_err(|source| CmdError::Spawn {
        cmdline: cmdline.clone(),
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if out.status.success() {
        Ok(Output {
            stdout: out.stdout,
            stderr: out.stderr,
        })
    } else {
        let source = if out.stderr.iter().all(u8::is_ascii_whitespace) {
            &out.stdout
        } else {
            &out.stderr
        };
        Err(CmdError::Failed {
            cmdline,
            status: out.status,
            tail: tail_lines(source, ERROR_TAIL_LINES),
        })
    }
}

/// Runs `cmd` to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Result<Output, CmdError> {
    run_with_input(cmd, None)
}

/// Runs `cmd` to completion, passing every line it prints (stdout and stderr
/// merged, in arrival order) to `on_line` as it arrives, for progress displays.
///
/// On failure the error carries the last [`ERROR_TAIL_LINES`] lines of the
/// merged output, so a failing script or package manager shows what it said.
pub fn run_streaming(cmd: &mut Command, on_line: &mut dyn FnMut(&str)) -> Result<(), CmdError> {
    use std::collections::VecDeque;
    use std::io::{BufRead, BufReader, Read};

    let cmdline = display_cmdline(cmd);
    tracing_log(&cmdline);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        cmdline: cmdline.clone(),
        program: program.clone(),
        source,
    })?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    fn pump(pipe: impl Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            // Progress output (apt, dpkg) uses \r to redraw a line: treat it as a break.
            while let Ok(n) = reader.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                for part in String::from_utf8_lossy(&buf).split(['\n', '\r']) {
                    if !part.trim().is_empty() && tx.send(part.to_string()).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        pump(out, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, tx.clone());
    }
    drop(tx);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(ERROR_TAIL_LINES + 1);
    for line in rx {
        on_line(&line);
        if tail.len() == ERROR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let cmdline2 = cmdline.clone();
    let status = child.wait().map_err(|source| CmdError::Spawn {
        cmdline: cmdline2,
        program,
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(CmdError::Failed {
            cmdline,
            status,
            tail: Vec::from(tail).join("\n"),
        })
    }
}

/// Runs `cmd` for output that may be a secret: stdout is read up to
/// `limit` bytes (more kills the program), stderr is discarded, and the
/// program is killed after `timeout`. Unlike [`run`], no error carries any
/// of the program's output.
pub fn run_quiet(
    cmd: &mut Command,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<(ExitStatus, Vec<u8>), CmdError> {
    use std::io::Read;
    let cmdline = display_cmdline(cmd);
    tracing_log(&cmdline);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|source| CmdError::Spawn {
        cmdline: cmdline.clone(),
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    let mut out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let r = (&mut out).take(limit as u64 + 1).read_to_end(&mut buf);
        let _ = tx.send(r.map(|_| buf));
    });
    let got = rx.recv_timeout(timeout);
    let kill = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
    };
    match got {
        Ok(Ok(buf)) if buf.len() > limit => {
            kill(&mut child);
            Err(CmdError::TooLarge { cmdline, limit })
        }
        Ok(Ok(buf)) => {
            // stdout is closed: the program is exiting.
            let status = child.wait().map_err(|source| CmdError::Spawn {
                cmdline: cmdline.clone(),
                program: cmd.get_program().to_string_lossy().into_owned(),
                source,
            })?;
            Ok((status, buf))
        }
        Ok(Err(source)) => {
            kill(&mut child);
            Err(CmdError::Spawn {
                cmdline,
                program: cmd.get_program().to_string_lossy().into_owned(),
                source,
            })
        }
        Err(_) => {
            kill(&mut child);
            Err(CmdError::TimedOut {
                cmdline,
                secs: timeout.as_secs_f64(),
            })
        }
    }
}

/// Builds a [`Command`] from a program and arguments: `command("sgdisk", ["-v", path])`.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn tracing_log(cmdline: &str) {
    // The crate stays free of a logging framework; programs that use
    // `tracing` install a hook with `set_logger`.
    if let Some(hook) = LOGGER.get() {
        hook(cmdline);
    }
}

static LOGGER: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// Sets the function that logs each command line before it runs (once per process).
pub fn set_logger(f: fn(&str)) {
    let _ = LOGGER.set(f);
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_quiet_bounds_output_and_time_and_never_shows_output() {
        use std::time::{Duration, Instant};
        let secs = Duration::from_secs(5);
        let (st, out) = run_quiet(
            &mut command("sh", ["-c", "echo SECRET; echo ERR-SECRET >&2"]),
            64,
            secs,
        )
        .unwrap();
        assert!(st.success());
        assert_eq!(out, b"SECRET\n");
        let (st, _) =
            run_quiet(&mut command("sh", ["-c", "echo SECRET; exit 1"]), 64, secs).unwrap();
        assert_eq!(st.code(), Some(1));
        let e = run_quiet(&mut command("sh", ["-c", "yes SECRET"]), 4096, secs).unwrap_err();
        assert!(matches!(e, CmdError::TooLarge { limit: 4096, .. }), "{e}");
        assert!(!e.to_string().contains("SECRET\n"), "{e}");
        let t = Instant::now();
        let e = run_quiet(
            &mut command("sh", ["-c", "echo SECRET; exec sleep 30"]),
            64,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(
            e.to_string(),
            "running sh -c 'echo SECRET; exec sleep 30': no answer within 0.3 s; killed"
        );
    }

    #[test]
    fn success_captures_stdout() {
        let out = run(&mut command("sh", ["-c", "echo hello"])).unwrap();
        assert_eq!(out.text(), "hello\n");
    }

    #[test]
    fn failure_carries_cmdline_status_and_tail() {
        let err = run(&mut command(
            "sh",
            [
                "-c",
                "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
            ],
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("running sh -c 'for i in"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("line30") && msg.contains("line11"), "{msg}");
        assert!(!msg.contains("line10\n"), "only the last 20 lines: {msg}");
    }

    #[test]
    fn missing_program_names_it() {
        let err = run(&mut command("no-such-program-xyz", ["a"])).unwrap_err();
        assert!(matches!(err, CmdError::Spawn { .. }));
        assert!(err.to_string().contains("cannot start no-such-program-xyz"));
    }

    #[test]
    fn streaming_passes_lines_and_keeps_tail() {
        let mut seen = Vec::new();
        let err = run_streaming(
            &mut command(
                "sh",
                [
                    "-c",
                    "echo out1; echo err1 >&2; for i in $(seq 1 25); do echo l$i; done; exit 4",
                ],
            ),
            &mut |l| seen.push(l.to_string()),
        )
        .unwrap_err();
        assert!(seen.contains(&"out1".to_string()) && seen.contains(&"err1".to_string()));
        assert_eq!(seen.len(), 27);
        let msg = err.to_string();
        assert!(
            msg.contains("exit status: 4") && msg.contains("l25") && msg.contains("l6\n"),
            "{msg}"
        );
        assert!(!msg.contains("\nl5\n"), "{msg}");
        run_streaming(&mut command("true", [] as [&str; 0]), &mut |_| {}).unwrap();
    }

    #[test]
    fn stdin_is_fed() {
        let out = run_with_input(&mut command("cat", [] as [&str; 0]), Some(b"abc")).unwrap();
        assert_eq!(out.stdout, b"abc");
    }
}
