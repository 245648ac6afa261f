//! Step lines and the summary.
//!
//! Each step prints one line on stderr: `ecs-firstboot: step=NAME
//! found="..." did="..." took=12ms`; the unit sends stderr to the journal and
//! the console. The final summary goes to stdout (also journal + console),
//! one line tests can grep: `ecs-firstboot: ok env=cidata grow=+7.8GiB
//! data=created volatile=mounted cpu=250ms 412ms`. Nothing logged here ever holds a
//! value from the env other than the names of its source and volumes.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Collects step lines and the summary fields.
#[derive(Debug)]
pub struct Log {
    start: Instant,
    /// Summary fields in order (`env=cidata`).
    fields: Vec<(String, String)>,
    /// Every step line printed, for tests.
    pub lines: Vec<String>,
    /// The step running now (named in the failure message).
    pub current: &'static str,
    quiet: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"') {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

impl Log {
    pub fn new() -> Self {
        Log {
            start: Instant::now(),
            fields: Vec::new(),
            lines: Vec::new(),
            current: "start",
            quiet: false,
        }
    }

    /// A log that records but prints nothing (tests).
    pub fn quiet() -> Self {
        Log {
            quiet: true,
            ..Log::new()
        }
    }

    /// One step line.
    pub fn step(&mut self, step: &str, found: &str, did: &str, took: Duration) {
        let line = format!(
            "ecs-firstboot: step={step} found={} did={} took={}ms",
            quote(found),
            quote(did),
            took.as_millis()
        );
        if !self.quiet {
            eprintln!("{line}");
        }
        self.lines.push(line);
    }

    /// A note inside a step.
    pub fn note(&mut self, step: &str, text: &str) {
        let line = format!("ecs-firstboot: step={step} note={}", quote(text));
        if !self.quiet {
            eprintln!("{line}");
        }
        self.lines.push(line);
    }

    /// Sets a summary field (`env`, `grow`, `data`, `volatile`...).
    pub fn field(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.fields.push((key.to_string(), value)),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The summary line: `ecs-firstboot: STATUS k=v ... cpu=NNms NNNms`:
    /// the CPU time this process and the tools it ran used, then the wall
    /// time (the two differ when the boot's other services compete for the
    /// CPU, or when the agent waits for a disk).
    pub fn summary(&self, status: &str) -> String {
        let mut s = format!("ecs-firstboot: {status}");
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={}", quote(v));
        }
        let _ = write!(
            s,
            " cpu={}ms {}ms",
            cpu_time().as_millis(),
            self.elapsed().as_millis()
        );
        s
    }
}

/// User and system CPU time of this process and its waited-for children.
pub fn cpu_time() -> Duration {
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut u) } == 0 {
            total += tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    total
}

/// Times a step: `let t = Timer::start(); ...; log.step("grow", .., t.took())`.
pub struct Timer(Instant);

impl Timer {
    pub fn start() -> Self {
        Timer(Instant::now())
    }
    pub fn took(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_summary() {
        let mut l = Log::quiet();
        l.step(
            "grow",
            "root 2GiB of 10GiB",
            "grew +8GiB",
            Duration::from_millis(12),
        );
        l.field("env", "cidata");
        l.field("grow", "+8GiB");
        l.field("data", "created");
        assert_eq!(
            l.lines[0],
            "ecs-firstboot: step=grow found=\"root 2GiB of 10GiB\" did=\"grew +8GiB\" took=12ms"
        );
        let s = l.summary("ok");
        assert!(
            s.starts_with("ecs-firstboot: ok env=cidata grow=+8GiB data=created "),
            "{s}"
        );
        let tail: Vec<&str> = s.rsplitn(3, ' ').collect();
        assert!(
            tail[0].ends_with("ms") && tail[0][..tail[0].len() - 2].parse::<u64>().is_ok(),
            "{s}"
        );
        assert!(
            tail[1].starts_with("cpu=") && tail[1].ends_with("ms"),
            "{s}"
        );
    }

    #[test]
    fn cpu_time_counts_work() {
        let before = cpu_time();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_time() >= before + Duration::from_millis(10), "{x}");
    }
}
