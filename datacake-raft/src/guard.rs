//! What the Raft RPC handlers refuse before a message reaches openraft.
//!
//! Anyone who can reach a node's RPC port can send it Raft messages, and openraft 0.9 trusts
//! them in two ways that take a node down with one message:
//!
//! - **Snapshot offsets.** openraft buffers a received snapshot in our `Cursor<Vec<u8>>` and
//!   seeks to each chunk's offset before writing it (`Streaming::receive` in its
//!   `network/snapshot_transport.rs`); a chunk at offset 2^40 grows the buffer to 1 TiB and the
//!   allocation failure aborts the process. [`SnapshotReceipt`] admits a chunk only at the
//!   offset where the previous one ended, and only while the snapshot stays within the
//!   configured maximum size.
//! - **Terms.** A vote, append or snapshot message whose vote carries a higher term makes the
//!   node adopt that term; at `u64::MAX` its next election computes `term + 1` and openraft's
//!   core panics (`Engine::elect`), in release builds it wraps to 0 and the node never wins
//!   again. [`check_term`] refuses implausible terms.
//!
//! These checks keep a single message from crashing a node. They do not make the port safe to
//! expose: whoever can send Raft messages can still force elections and disrupt the cluster.
//! Keep the RPC port on a trusted network (or behind authentication).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use datacake_rpc::Status;
use parking_lot::Mutex;

/// The highest term any message may carry.
///
/// Far below `u64::MAX`, so that no node can ever reach `u64::MAX` by electing itself after
/// accepting a term at the ceiling: at one election per millisecond, the 2^63 terms between
/// the ceiling and overflow last about 290 million years.
pub(crate) const MAX_TERM: u64 = u64::MAX / 2;

/// How far above this node's current term a received term may be.
///
/// Without this bound, one message at [`MAX_TERM`] exhausts the term space at once and leaves a
/// cluster that can no longer elect (every term above the ceiling is refused). With it, a
/// sender must raise the term 2^31 times, one accepted message at a time, to get there.
///
/// It cannot hurt liveness: terms grow by one per election round, so an honest node is never
/// 2^32 terms ahead of a peer (a partitioned candidate retrying every 100 ms takes more than
/// 13 years to get that far ahead). Even then, the node ahead learns nothing from being
/// refused but the peer learns its term from the responses to its own vote and append
/// requests (responses are only checked against [`MAX_TERM`]), after which the node ahead is
/// within the bound again.
pub(crate) const MAX_TERM_JUMP: u64 = 1 << 32;

/// The largest snapshot chunk this crate sends and accepts (openraft's default chunk size).
pub(crate) const SNAPSHOT_CHUNK: u64 = 3 << 20;

/// How often a refused peer is warned about at most.
const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// How many peers the warning limiter remembers before it forgets the quiet ones.
const WARN_PEERS: usize = 1024;

/// Why a Raft RPC was refused before openraft saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The message's term is above [`MAX_TERM`], or more than [`MAX_TERM_JUMP`] above this
    /// node's current term.
    #[error("term {term} is implausible (current term {current}, at most {limit} accepted)")]
    ImplausibleTerm {
        /// The term of the message's vote.
        term: u64,
        /// This node's current term (0 where it does not matter: a response).
        current: u64,
        /// The highest term accepted now.
        limit: u64,
    },
    /// A snapshot chunk does not start where the received part of its snapshot ends. Sent
    /// back as openraft's `SnapshotMismatch`, so the leader restarts the snapshot from 0.
    #[error("snapshot {snapshot_id}: chunk at offset {got}, expected offset {expected}")]
    SnapshotOffset {
        /// The snapshot the chunk belongs to.
        snapshot_id: String,
        /// Where the next chunk must start: the bytes received so far (0 for a new snapshot).
        expected: u64,
        /// Where the chunk starts.
        got: u64,
    },
    /// The chunk would take the snapshot beyond the configured maximum size.
    #[error("snapshot would grow to {size} bytes, more than the maximum of {limit}")]
    SnapshotTooLarge {
        /// The snapshot's size with this chunk (saturated at `u64::MAX`).
        size: u64,
        /// The maximum ([`RaftConfig::with_max_snapshot_size`](crate::RaftConfig::with_max_snapshot_size)).
        limit: u64,
    },
    /// The sender is an incarnation of its node id that the cluster has replaced by a restart
    /// (see `RaftService::check_incarnation`).
    #[error("node {node} of generation {generation} was started again at {newer}")]
    Replaced {
        /// The sender's node id.
        node: u32,
        /// The sender's incarnation, as its message says.
        generation: u64,
        /// Where the newer incarnation runs.
        newer: std::net::SocketAddr,
    },
    /// The chunk's data is larger than any chunk this crate sends ([`SNAPSHOT_CHUNK`]).
    #[error("snapshot chunk of {len} bytes, more than the maximum of {limit}")]
    ChunkTooLarge {
        /// The chunk's length.
        len: u64,
        /// The maximum.
        limit: u64,
    },
}

impl Refusal {
    /// The `Status` code of [`Refusal::ImplausibleTerm`].
    pub(crate) const IMPLAUSIBLE_TERM: u16 = 0x5201;
    /// The `Status` code of [`Refusal::SnapshotOffset`] (when not sent as openraft's
    /// `SnapshotMismatch`).
    pub(crate) const SNAPSHOT_OFFSET: u16 = 0x5202;
    /// The `Status` code of [`Refusal::SnapshotTooLarge`].
    pub(crate) const SNAPSHOT_TOO_LARGE: u16 = 0x5203;
    /// The `Status` code of [`Refusal::ChunkTooLarge`].
    pub(crate) const CHUNK_TOO_LARGE: u16 = 0x5204;
    /// The `Status` code of [`Refusal::Replaced`].
    pub(crate) const REPLACED: u16 = 0x5205;

    /// The code the refusal travels under.
    pub(crate) fn code(&self) -> u16 {
        match self {
            Self::ImplausibleTerm { .. } => Self::IMPLAUSIBLE_TERM,
            Self::SnapshotOffset { .. } => Self::SNAPSHOT_OFFSET,
            Self::SnapshotTooLarge { .. } => Self::SNAPSHOT_TOO_LARGE,
            Self::ChunkTooLarge { .. } => Self::CHUNK_TOO_LARGE,
            Self::Replaced { .. } => Self::REPLACED,
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        Status::custom(refusal.code(), refusal.to_string())
    }
}

/// Admits `term` carried by a request to a node whose current term is `current`: at most
/// [`MAX_TERM_JUMP`] above it and never above [`MAX_TERM`].
pub(crate) fn check_term(term: u64, current: u64) -> Result<(), Refusal> {
    let limit = current.saturating_add(MAX_TERM_JUMP).min(MAX_TERM);
    if term <= limit {
        Ok(())
    } else {
        Err(Refusal::ImplausibleTerm {
            term,
            current,
            limit,
        })
    }
}

/// Admits `term` carried by a response from a peer this node called: never above
/// [`MAX_TERM`].
pub(crate) fn check_response_term(term: u64) -> Result<(), Refusal> {
    if term <= MAX_TERM {
        Ok(())
    } else {
        Err(Refusal::ImplausibleTerm {
            term,
            current: 0,
            limit: MAX_TERM,
        })
    }
}

/// How much of which snapshot this node has received: mirrors the stream openraft keeps, so
/// that a chunk is only handed on at the offset where openraft's buffer ends.
#[derive(Debug, Default)]
pub(crate) struct SnapshotReceipt {
    /// The snapshot being received and its bytes so far.
    current: Option<(String, u64)>,
}

impl SnapshotReceipt {
    /// Admits a chunk of `len` bytes at `offset` of snapshot `snapshot_id`: it must start where
    /// the received part ends (at 0 for a new snapshot, or to start this one over), be at most
    /// [`SNAPSHOT_CHUNK`] long, and keep the snapshot within `max_size` bytes. Returns where
    /// the chunk ends.
    pub(crate) fn admit(
        &self,
        snapshot_id: &str,
        offset: u64,
        len: usize,
        max_size: u64,
    ) -> Result<u64, Refusal> {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if len > SNAPSHOT_CHUNK {
            return Err(Refusal::ChunkTooLarge {
                len,
                limit: SNAPSHOT_CHUNK,
            });
        }
        let expected = match &self.current {
            Some((id, received)) if id == snapshot_id && offset != 0 => *received,
            _ => 0,
        };
        if offset != expected {
            return Err(Refusal::SnapshotOffset {
                snapshot_id: snapshot_id.to_string(),
                expected,
                got: offset,
            });
        }
        let end = offset.saturating_add(len);
        if end > max_size {
            return Err(Refusal::SnapshotTooLarge {
                size: end,
                limit: max_size,
            });
        }
        Ok(end)
    }

    /// Records what openraft made of an admitted chunk of `snapshot_id` ending at `end`:
    /// `accepted` if it was written to the snapshot's buffer, `done` if it was the last one.
    pub(crate) fn record(&mut self, snapshot_id: &str, end: u64, accepted: bool, done: bool) {
        if done {
            // openraft hands the finished (or abandoned) buffer on and forgets it.
            self.current = None;
        } else if accepted {
            self.current = Some((snapshot_id.to_string(), end));
        }
    }
}

/// Rate-limits warnings about refused messages to one per peer per [`WARN_INTERVAL`].
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    /// Per peer: when it was last warned about, and how many refusals went unmentioned since.
    peers: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl WarnLimiter {
    /// Counts a refusal of `peer`'s message; returns `Some(suppressed)` if it should be logged
    /// now, with the number of refusals not logged since the last warning.
    pub(crate) fn admit(&self, peer: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        if peers.len() >= WARN_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, (last, _)| now.duration_since(*last) < WARN_INTERVAL);
            if peers.len() >= WARN_PEERS {
                peers.clear();
            }
        }
        match peers.get_mut(&peer) {
            Some((last, suppressed)) if now.duration_since(*last) < WARN_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                peers.insert(peer, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_up_to_the_jump_and_the_ceiling_are_admitted() {
        assert_eq!(check_term(5, 5), Ok(()));
        assert_eq!(check_term(0, 5), Ok(()));
        assert_eq!(check_term(5 + MAX_TERM_JUMP, 5), Ok(()));
        assert!(check_term(6 + MAX_TERM_JUMP, 5).is_err());
        assert!(check_term(u64::MAX, 5).is_err());
        // Near the ceiling the ceiling wins; the current term itself may be anything.
        assert_eq!(check_term(MAX_TERM, MAX_TERM - 1), Ok(()));
        assert!(check_term(MAX_TERM + 1, MAX_TERM).is_err());
        assert!(check_term(u64::MAX, u64::MAX).is_err());
        assert_eq!(check_response_term(MAX_TERM), Ok(()));
        assert!(check_response_term(u64::MAX).is_err());
    }

    #[test]
    fn chunks_are_admitted_only_where_the_received_part_ends() {
        let mut receipt = SnapshotReceipt::default();
        let max = 1 << 20;
        // A snapshot starts at 0.
        assert!(matches!(
            receipt.admit("a", 10, 5, max),
            Err(Refusal::SnapshotOffset {
                expected: 0,
                got: 10,
                ..
            })
        ));
        assert_eq!(receipt.admit("a", 0, 5, max), Ok(5));
        receipt.record("a", 5, true, false);
        // The next chunk continues it; neither a gap nor a repeat is admitted.
        assert!(matches!(
            receipt.admit("a", 1 << 40, 5, max),
            Err(Refusal::SnapshotOffset { expected: 5, .. })
        ));
        assert!(matches!(
            receipt.admit("a", 3, 5, max),
            Err(Refusal::SnapshotOffset { expected: 5, .. })
        ));
        assert_eq!(receipt.admit("a", 5, 5, max), Ok(10));
        // A chunk openraft did not take (a stale vote) does not count.
        receipt.record("a", 10, false, false);
        assert_eq!(receipt.admit("a", 5, 5, max), Ok(10));
        // Starting over, or another snapshot, begins at 0.
        assert_eq!(receipt.admit("a", 0, 5, max), Ok(5));
        assert_eq!(receipt.admit("b", 0, 5, max), Ok(5));
        assert!(matches!(
            receipt.admit("b", 5, 5, max),
            Err(Refusal::SnapshotOffset { expected: 0, .. })
        ));
        // The last chunk ends the snapshot.
        receipt.record("a", 5, true, true);
        assert!(matches!(
            receipt.admit("a", 5, 5, max),
            Err(Refusal::SnapshotOffset { expected: 0, .. })
        ));
    }

    #[test]
    fn snapshots_and_chunks_are_bounded() {
        let mut receipt = SnapshotReceipt::default();
        assert_eq!(receipt.admit("a", 0, 100, 100), Ok(100));
        assert!(matches!(
            receipt.admit("a", 0, 101, 100),
            Err(Refusal::SnapshotTooLarge {
                size: 101,
                limit: 100
            })
        ));
        receipt.record("a", 100, true, false);
        assert!(matches!(
            receipt.admit("a", 100, 1, 100),
            Err(Refusal::SnapshotTooLarge {
                size: 101,
                limit: 100
            })
        ));
        let too_long = usize::try_from(SNAPSHOT_CHUNK).unwrap() + 1;
        assert!(matches!(
            receipt.admit("b", 0, too_long, u64::MAX),
            Err(Refusal::ChunkTooLarge { .. })
        ));
    }

    #[test]
    fn warnings_are_limited_per_peer() {
        let limiter = WarnLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limiter.admit(a), Some(0));
        assert_eq!(limiter.admit(a), None);
        assert_eq!(limiter.admit(a), None);
        assert_eq!(limiter.admit(b), Some(0));
        // Once the interval has passed, the next warning says how many were left out.
        limiter.peers.lock().get_mut(&a).unwrap().0 -= WARN_INTERVAL;
        assert_eq!(limiter.admit(a), Some(2));
    }
}
