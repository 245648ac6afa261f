//! Options on the kernel command line.
//!
//! `ecs.firstboot.pause=STEP` (test only) makes the agent stop at `STEP` and
//! sleep, so a boot test can cut the power at a known point: `grow` (after
//! a partition-table write, before the filesystem is grown) or
//! `volumes` (after `mkfs` of a volume being created, before its label is
//! committed; a boot that resumes the half-made volume does not pause, so
//! the same command line can be kept for the boot after the power cut).

use std::time::Duration;

/// What the agent takes from /proc/cmdline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub pause: Option<String>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Cmdline {
        let mut c = Cmdline::default();
        for word in text.split_whitespace() {
            if let Some(step) = word.strip_prefix("ecs.firstboot.pause=") {
                c.pause = Some(step.to_string());
            }
        }
        c
    }

    /// Sleeps for an hour when asked to pause at `step` (the test harness
    /// kills the machine meanwhile).
    pub fn pause_at(&self, step: &str) {
        if self.pause.as_deref() == Some(step) {
            println!("ecs-firstboot: pausing at {step} (ecs.firstboot.pause)");
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_option() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=UUID=x ecs.firstboot.pause=volumes quiet");
        assert_eq!(c.pause.as_deref(), Some("volumes"));
        assert_eq!(Cmdline::parse("quiet").pause, None);
    }
}
