//! The original appliance's sizing guide, checked on every boot: at least
//! [`MIN_CORES`] core and [`MIN_MEMORY_MIB`] MiB of memory. A machine that
//! falls short is told so on the console and on the status page (a notice
//! in `/run/ecs-appliance/notices/sizing`); it still runs. (The guide's
//! disk size depends on the studies per month, which the machine cannot
//! know: it is not checked.)
//!
//! Cores are the kernel's online CPUs (`/sys/devices/system/cpu/online`,
//! a list of ranges), memory is `MemTotal` of `/proc/meminfo`, which counts
//! what the kernel did not reserve for itself: a machine given 3 GiB
//! reports about 2.8 GiB, so [`MEMORY_SLACK_MIB`] below the minimum still
//! counts as enough.

use std::fs;
use std::io;
use std::path::Path;

pub const MIN_CORES: u32 = 1;
pub const MIN_MEMORY_MIB: u64 = 3 * 1024;
/// What the kernel keeps of a machine's memory, at most (see the module doc).
pub const MEMORY_SLACK_MIB: u64 = 384;

/// What the machine has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub cores: u32,
    pub memory_kib: u64,
}

/// Reads the machine from sysfs (`sys`: `/sys`) and a meminfo file.
pub fn read(sys: &Path, meminfo: &Path) -> io::Result<Machine> {
    let online = fs::read_to_string(sys.join("devices/system/cpu/online"))?;
    let cores = count_cpus(online.trim())
        .ok_or_else(|| io::Error::other(format!("cpu/online is not a CPU list: {online:?}")))?;
    let info = fs::read_to_string(meminfo)?;
    let memory_kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("meminfo has no MemTotal in kB"))?;
    Ok(Machine { cores, memory_kib })
}

/// The number of CPUs in a kernel CPU list (`0-3,5,7-8`).
fn count_cpus(list: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in list.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        n = n.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (n > 0).then_some(n)
}

/// The warning for a machine below the guide, `None` when it meets it.
pub fn shortfall(m: Machine) -> Option<String> {
    let mib = m.memory_kib / 1024;
    let few_cores = m.cores < MIN_CORES;
    let little_memory = mib + MEMORY_SLACK_MIB < MIN_MEMORY_MIB;
    if !few_cores && !little_memory {
        return None;
    }
    let mut short = Vec::new();
    if few_cores {
        short.push(format!(
            "{} core(s), the guide asks for {MIN_CORES}",
            m.cores
        ));
    }
    if little_memory {
        short.push(format!(
            "{:.1} GiB of memory, the guide asks for {} GiB",
            mib as f64 / 1024.0,
            MIN_MEMORY_MIB / 1024
        ));
    }
    Some(format!(
        "this machine is below the sizing guide: {}; the appliance runs, but may be slow or run out of memory",
        short.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0-3"), Some(4));
        assert_eq!(count_cpus("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpus(""), None);
        assert_eq!(count_cpus("3-1"), None);
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn the_guide() {
        let m = |cores, mib: u64| Machine {
            cores,
            memory_kib: mib * 1024,
        };
        // 3 GiB as the kernel reports it.
        assert_eq!(shortfall(m(1, 2_860)), None);
        assert_eq!(shortfall(m(4, 16_000)), None);
        let w = shortfall(m(2, 960)).unwrap();
        assert!(
            w.contains("0.9 GiB of memory") && w.contains("3 GiB"),
            "{w}"
        );
        assert!(!w.contains("core"), "{w}");
        assert!(shortfall(m(1, 2_500)).is_some());
    }

    #[test]
    fn reads_sysfs_and_meminfo() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sys/devices/system/cpu")).unwrap();
        fs::write(d.path().join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
        fs::write(
            d.path().join("meminfo"),
            "MemTotal:         982312 kB\nMemFree:  1 kB\n",
        )
        .unwrap();
        let m = read(&d.path().join("sys"), &d.path().join("meminfo")).unwrap();
        assert_eq!(
            m,
            Machine {
                cores: 2,
                memory_kib: 982_312
            }
        );
        fs::write(d.path().join("meminfo"), "MemFree: 1 kB\n").unwrap();
        assert!(read(&d.path().join("sys"), &d.path().join("meminfo")).is_err());
    }
}
