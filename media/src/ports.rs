//! The RTP port allocator: even RTP ports with the odd RTCP port above, from a configured range.

use std::collections::BTreeSet;

use crate::error::MediaError;

/// An inclusive port range, validated to hold at least one even/odd pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    first_even: u16,
    pairs: u16,
}

impl PortRange {
    /// The pairs inside `[low, high]`; `None` if there is not even one.
    pub fn new(low: u16, high: u16) -> Option<PortRange> {
        let first_even = low.checked_add(low % 2)?;
        if first_even == 0 || high < first_even.checked_add(1)? {
            return None;
        }
        let pairs = (high - first_even).div_ceil(2);
        Some(PortRange { first_even, pairs })
    }

    /// How many legs the range can hold.
    pub fn pairs(&self) -> u16 {
        self.pairs
    }
}

/// Hands out RTP port pairs round-robin, so a just-freed port is not reused at once (late packets
/// of the old call would reach the new one).
#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    in_use: BTreeSet<u16>,
    cursor: u16,
}

impl PortAllocator {
    /// An allocator over `range` with nothing in use.
    pub fn new(range: PortRange) -> PortAllocator {
        PortAllocator {
            range,
            in_use: BTreeSet::new(),
            cursor: 0,
        }
    }

    /// Pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free even port (RTP; RTCP is the port above), or an error when none is left.
    pub fn allocate(&mut self) -> Result<u16, MediaError> {
        for _ in 0..self.range.pairs {
            let index = self.cursor;
            self.cursor = (self.cursor + 1) % self.range.pairs;
            let port = self.range.first_even + 2 * index;
            if self.in_use.insert(port) {
                return Ok(port);
            }
        }
        Err(MediaError::PortsExhausted)
    }

    /// Gives a pair back.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_range_holds_8192_legs() {
        assert_eq!(PortRange::new(16384, 32767).unwrap().pairs(), 8192);
        assert_eq!(PortRange::new(16385, 16386), None);
        assert_eq!(PortRange::new(16384, 16385).unwrap().pairs(), 1);
        assert_eq!(PortRange::new(65535, 65535), None);
    }

    #[test]
    fn exhaustion_is_an_error_and_release_frees() {
        let mut a = PortAllocator::new(PortRange::new(10000, 10005).unwrap());
        let ports: Vec<u16> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(ports, [10000, 10002, 10004]);
        assert_eq!(a.allocate(), Err(MediaError::PortsExhausted));
        a.release(10002);
        assert_eq!(a.allocate(), Ok(10002));
    }
}
