//! Memory figures from /proc: a process's resident set (VmRSS) and the kernel's slab memory,
//! where the socket structures of both ends of every loopback connection live (they are not
//! in any process's RSS).

use std::path::PathBuf;

/// Where the kernel's memory summary is.
const MEMINFO_PATH: &str = "/proc/meminfo";

/// Whose resident memory to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// This process.
    Current,
    /// Another process, by id.
    Pid(u32),
}

impl Process {
    fn status_path(self) -> PathBuf {
        match self {
            Process::Current => PathBuf::from("/proc/self/status"),
            Process::Pid(pid) => PathBuf::from(format!("/proc/{pid}/status")),
        }
    }
}

/// The value in KiB of the `key:` line of a /proc status or meminfo text (`VmRSS:  1234 kB`).
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        matches!(words.next(), Some("kB")).then_some(value)
    })
}

/// The resident set size of `process` in KiB; `None` if it cannot be read (no such process,
/// not Linux).
pub fn rss_kib(process: Process) -> Option<u64> {
    let text = std::fs::read_to_string(process.status_path()).ok()?;
    kib_field(&text, "VmRSS")
}

/// The kernel's slab memory in KiB (machine-wide, so other activity shows in it too).
pub fn slab_kib() -> Option<u64> {
    let text = std::fs::read_to_string(MEMINFO_PATH).ok()?;
    kib_field(&text, "Slab")
}

/// KiB per connection between two readings, `None` without both or without connections.
pub fn per_connection(before: Option<u64>, after: Option<u64>, connections: usize) -> Option<f64> {
    let (before, after) = (before?, after?);
    (connections > 0).then(|| (after as f64 - before as f64) / connections as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\ttacit\nVmPeak:\t  912344 kB\nVmRSS:\t   53120 kB\nRssAnon:\t   40000 kB\nThreads:\t3\n";

    #[test]
    fn reads_vmrss() {
        assert_eq!(kib_field(STATUS, "VmRSS"), Some(53_120));
    }

    #[test]
    fn a_prefix_of_another_key_does_not_match() {
        assert_eq!(kib_field(STATUS, "Rss"), None);
        assert_eq!(kib_field(STATUS, "VmRS"), None);
    }

    #[test]
    fn fields_without_a_kib_unit_are_not_memory() {
        assert_eq!(kib_field(STATUS, "Threads"), None);
        assert_eq!(kib_field("VmRSS: lots kB\n", "VmRSS"), None);
    }

    #[test]
    fn reads_meminfo_slab() {
        let meminfo = "MemTotal:       24000000 kB\nSlab:             812345 kB\nSReclaimable:     400000 kB\n";
        assert_eq!(kib_field(meminfo, "Slab"), Some(812_345));
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(rss_kib(Process::Current).is_some_and(|kib| kib > 0));
    }

    #[test]
    fn per_connection_divides_the_growth() {
        assert_eq!(per_connection(Some(1_000), Some(81_000), 10_000), Some(8.0));
        assert_eq!(per_connection(Some(1_000), Some(900), 100), Some(-1.0));
        assert_eq!(per_connection(None, Some(900), 100), None);
        assert_eq!(per_connection(Some(1), Some(2), 0), None);
    }
}
