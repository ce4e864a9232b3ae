//! Which loopback source address each client socket binds to, so that the connections can go
//! past one address's ephemeral port range (28,232 ports with Linux's default
//! `net.ipv4.ip_local_port_range` of 32768–60999).

use std::net::Ipv4Addr;

/// Client sockets bound to one source address; below the default ephemeral range with room
/// to spare for other programs on the machine.
pub const CONNECTIONS_PER_SOURCE_ADDRESS: usize = 20_000;
/// Source addresses available in each phase: 127.x.y.2 to 127.x.y.254 (.0, .1 and .255 are
/// left alone; 127.0.0.1 is where the servers listen).
const ADDRESSES_PER_PHASE: usize = 253;
/// The most connections (and registrations) one run can bind distinct source ports for.
pub const MAX_CONNECTIONS: usize = CONNECTIONS_PER_SOURCE_ADDRESS * ADDRESSES_PER_PHASE;

/// The two phases use disjoint source addresses, so that the ports the registration
/// connections leave in TIME_WAIT never collide with the held connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Registering accounts: 127.0.1.2 and up.
    Register,
    /// Opening the held connections: 127.0.0.2 and up.
    Connect,
}

/// The source address of the `i`-th socket of `phase`: the first
/// [`CONNECTIONS_PER_SOURCE_ADDRESS`] on .2, the next on .3, and so on. `None` past
/// [`MAX_CONNECTIONS`].
pub fn source_address(phase: Phase, i: usize) -> Option<Ipv4Addr> {
    let block = i / CONNECTIONS_PER_SOURCE_ADDRESS;
    if block >= ADDRESSES_PER_PHASE {
        return None;
    }
    let third = match phase {
        Phase::Connect => 0,
        Phase::Register => 1,
    };
    // `block` < 253, so the last octet is 2..=254.
    let last = u8::try_from(block + 2).ok()?;
    Some(Ipv4Addr::new(127, 0, third, last))
}

/// How many distinct source addresses `count` sockets of one phase use.
pub fn addresses_used(count: usize) -> usize {
    count.div_ceil(CONNECTIONS_PER_SOURCE_ADDRESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_block_binds_to_dot_two() {
        assert_eq!(
            source_address(Phase::Connect, 0),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert_eq!(
            source_address(Phase::Connect, CONNECTIONS_PER_SOURCE_ADDRESS - 1),
            Some(Ipv4Addr::new(127, 0, 0, 2))
        );
    }

    #[test]
    fn next_block_moves_to_the_next_address() {
        assert_eq!(
            source_address(Phase::Connect, CONNECTIONS_PER_SOURCE_ADDRESS),
            Some(Ipv4Addr::new(127, 0, 0, 3))
        );
        assert_eq!(
            source_address(Phase::Connect, 100_000),
            Some(Ipv4Addr::new(127, 0, 0, 7))
        );
    }

    #[test]
    fn phases_never_share_an_address() {
        for i in [0, 1, 19_999, 20_000, 100_000, MAX_CONNECTIONS - 1] {
            assert_ne!(
                source_address(Phase::Connect, i),
                source_address(Phase::Register, i)
            );
            assert!(source_address(Phase::Register, i).is_some_and(|a| a.is_loopback()));
        }
    }

    #[test]
    fn never_binds_to_the_server_address_or_broadcast() {
        for i in (0..MAX_CONNECTIONS).step_by(CONNECTIONS_PER_SOURCE_ADDRESS) {
            for phase in [Phase::Connect, Phase::Register] {
                let a = source_address(phase, i).expect("in range");
                assert!((2..=254).contains(&a.octets()[3]), "{a}");
            }
        }
    }

    #[test]
    fn past_the_last_address_there_is_none() {
        assert_eq!(source_address(Phase::Connect, MAX_CONNECTIONS), None);
        assert_eq!(source_address(Phase::Register, usize::MAX), None);
    }

    #[test]
    fn counts_addresses() {
        assert_eq!(addresses_used(0), 0);
        assert_eq!(addresses_used(1), 1);
        assert_eq!(addresses_used(20_000), 1);
        assert_eq!(addresses_used(100_000), 5);
        assert_eq!(addresses_used(100_001), 6);
    }
}
