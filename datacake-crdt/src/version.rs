//! [`Version`]: the last-writer-wins order of writes to one key, written once for the set and
//! for every store built on it.

use crate::HLCTimestamp;

/// A write of a key, ranked for last-writer-wins: its timestamp, and whether it deletes.
///
/// The newer timestamp wins. At the same timestamp a delete beats a put: a put and a delete
/// stamped alike (two nodes whose clocks collided) then end as deleted on every replica,
/// whichever arrives first, instead of depending on arrival order.
///
/// ```
/// use datacake_crdt::{HLCTimestamp, Version};
///
/// let (t1, t2) = (HLCTimestamp::new(1, 0, 1), HLCTimestamp::new(2, 0, 1));
/// assert!(Version::put(t2).beats(Version::delete(t1)), "newer wins");
/// assert!(Version::delete(t1).beats(Version::put(t1)), "a delete wins a tie");
/// assert!(!Version::put(t1).beats(Version::put(t1)), "a write does not beat itself");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// When the write happened.
    pub timestamp: HLCTimestamp,
    /// Whether the write deletes the key.
    pub delete: bool,
}

impl Version {
    /// A put at `timestamp`.
    pub const fn put(timestamp: HLCTimestamp) -> Self {
        Self {
            timestamp,
            delete: false,
        }
    }

    /// A delete at `timestamp`.
    pub const fn delete(timestamp: HLCTimestamp) -> Self {
        Self {
            timestamp,
            delete: true,
        }
    }

    /// Whether this write wins over `other`, a write of the same key (see the type docs).
    /// Never true both ways; false for equal versions.
    pub fn beats(self, other: Version) -> bool {
        self.timestamp > other.timestamp
            || (self.timestamp == other.timestamp && self.delete && !other.delete)
    }
}
