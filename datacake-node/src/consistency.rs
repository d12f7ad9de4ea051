//! Consistency levels and the errors of not meeting them.

use std::fmt;
use std::time::Duration;

/// How many replicas (other than this node) an operation must reach.
///
/// The counts are of *other* live nodes: the local node always takes part in an operation
/// itself, so for example [`Consistency::Quorum`] in a cluster of three asks for one peer
/// (local node + one peer = a majority of three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Consistency {
    /// Only the local node: no peer is selected.
    None,
    /// One peer.
    One,
    /// Two peers.
    Two,
    /// Three peers.
    Three,
    /// A majority of the whole live cluster, counting the local node.
    Quorum,
    /// A majority of the local data centre, counting the local node.
    LocalQuorum,
    /// A majority of every data centre (the local one counting the local node).
    EachQuorum,
    /// Every live peer.
    All,
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::None => "none",
            Self::One => "one",
            Self::Two => "two",
            Self::Three => "three",
            Self::Quorum => "quorum",
            Self::LocalQuorum => "local-quorum",
            Self::EachQuorum => "each-quorum",
            Self::All => "all",
        };
        f.write_str(name)
    }
}

/// The majority of `n` nodes: `n / 2 + 1` (0 for an empty set).
pub(crate) fn majority(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n / 2 + 1
    }
}

/// A consistency level could not be met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    /// Fewer live peers than the level needs.
    #[error("not enough live nodes: {required} required, {live} available")]
    NotEnoughNodes {
        /// Live peers (nodes other than the local one) that were available.
        live: usize,
        /// Peers the level required.
        required: usize,
    },
    /// Enough peers were asked, but too few answered in time.
    #[error("consistency not met: {responses} of {required} responses within {timeout:?}")]
    ConsistencyFailure {
        /// Successful responses received.
        responses: usize,
        /// Responses the level required.
        required: usize,
        /// The deadline that passed.
        timeout: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_of_small_clusters() {
        assert_eq!([0, 1, 2, 3, 4, 5, 6].map(majority), [0, 1, 2, 2, 3, 3, 4]);
    }
}
