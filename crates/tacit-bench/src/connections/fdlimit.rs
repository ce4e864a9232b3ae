//! Raising the open-file limit (RLIMIT_NOFILE) so that the connections fit: every held
//! connection is one descriptor in the clients, plus one in the server when it runs in this
//! process.

use rlimit::Resource;
use serde::Serialize;

/// Descriptors kept free for everything else: the database, the registration sockets in
/// flight, the runtime, standard streams.
pub const FD_SLACK: u64 = 1_024;
/// Where Linux keeps the ceiling for a privileged process's hard limit.
const NR_OPEN_PATH: &str = "/proc/sys/fs/nr_open";

/// The open-file limit before and after [`raise`], and what the run needs.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct FdLimit {
    /// Soft limit at start.
    pub soft_before: u64,
    /// Hard limit at start.
    pub hard_before: u64,
    /// Soft limit now (what applies).
    pub soft: u64,
    /// Hard limit now.
    pub hard: u64,
    /// Descriptors the run needs.
    pub needed: u64,
}

impl FdLimit {
    /// Whether the run fits under the soft limit now in force.
    pub fn enough(&self) -> bool {
        self.soft >= self.needed
    }
}

/// Descriptors `count` held connections need: one per connection in the clients, one more
/// in the server when it shares this process, plus [`FD_SLACK`].
pub fn fds_needed(count: usize, server_in_process: bool) -> u64 {
    let per_connection = if server_in_process { 2 } else { 1 };
    (count as u64)
        .saturating_mul(per_connection)
        .saturating_add(FD_SLACK)
}

/// How many held connections fit under an open-file limit of `soft` (the inverse of
/// [`fds_needed`]).
pub fn connections_fitting(soft: u64, server_in_process: bool) -> usize {
    let per_connection = if server_in_process { 2 } else { 1 };
    usize::try_from(soft.saturating_sub(FD_SLACK) / per_connection).unwrap_or(usize::MAX)
}

/// The limit to ask for: the hard limit, or more (up to `nr_open`, which only a privileged
/// process may reach) when the run needs more than the hard limit.
pub fn target_limit(needed: u64, hard: u64, nr_open: Option<u64>) -> u64 {
    match nr_open {
        Some(ceiling) if needed > hard => needed.min(ceiling).max(hard),
        _ => hard,
    }
}

/// Raises the soft limit to the hard limit, and both past it (towards `fs.nr_open`) when
/// `needed` asks for more and the process may. Never lowers a limit; a refusal leaves the
/// soft limit at the hard one.
pub fn raise(needed: u64) -> std::io::Result<FdLimit> {
    let (soft_before, hard_before) = rlimit::getrlimit(Resource::NOFILE)?;
    let nr_open = std::fs::read_to_string(NR_OPEN_PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let target = target_limit(needed, hard_before, nr_open);
    // Past the hard limit only a privileged process may go; otherwise the hard limit is as
    // far as it goes.
    let raised =
        target > hard_before && rlimit::setrlimit(Resource::NOFILE, target, target).is_ok();
    if !raised && soft_before < hard_before {
        rlimit::setrlimit(Resource::NOFILE, hard_before, hard_before)?;
    }
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    Ok(FdLimit {
        soft_before,
        hard_before,
        soft,
        hard,
        needed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_process_server_doubles_the_descriptors() {
        assert_eq!(fds_needed(10_000, false), 10_000 + FD_SLACK);
        assert_eq!(fds_needed(10_000, true), 20_000 + FD_SLACK);
        assert_eq!(fds_needed(usize::MAX, true), u64::MAX);
    }

    #[test]
    fn fitting_is_the_inverse_of_needed() {
        assert_eq!(connections_fitting(20_000, true), 9_488);
        assert_eq!(connections_fitting(20_000, false), 18_976);
        assert_eq!(connections_fitting(100, false), 0);
        for count in [1, 9_488, 18_976] {
            for in_process in [true, false] {
                let soft = fds_needed(count, in_process);
                assert_eq!(connections_fitting(soft, in_process), count);
            }
        }
    }

    #[test]
    fn asks_for_the_hard_limit_when_it_is_enough() {
        assert_eq!(target_limit(5_000, 20_000, Some(1 << 20)), 20_000);
        assert_eq!(target_limit(50_000, 20_000, None), 20_000);
    }

    #[test]
    fn asks_past_the_hard_limit_up_to_nr_open() {
        assert_eq!(target_limit(201_024, 20_000, Some(1 << 20)), 201_024);
        assert_eq!(target_limit(u64::MAX, 20_000, Some(1 << 20)), 1 << 20);
    }

    #[test]
    fn never_asks_below_the_hard_limit() {
        assert_eq!(target_limit(30_000, 20_000, Some(10_000)), 20_000);
    }
}
