//! The clock fence: a node whose wall clock runs ahead of most of its live peers' clocks by
//! more than the drift bound takes no writes.
//!
//! Peers refuse a stamp more than the drift bound ahead of their own clock, but the writer
//! keeps it (a write acknowledged at `None`, or one that failed its level): once the peers'
//! clocks came within the bound, repair would spread it, and it would win over everything
//! the cluster wrote to that id meanwhile. So at the start of each repair round a node asks
//! the peer for its clock ([`ClockProbe`](crate::messages::ClockProbe), which no peer
//! refuses for skew), and refuses writes, before stamping anything, while more than half of
//! its live peers' clocks lie behind its own wall clock by more than the drift bound: their
//! replicas would refuse its stamps.
//!
//! A reading is an upper bound of the peer's clock: the clock it sent, plus the round trip
//! of the probe (it was read somewhere within it), plus the time since the reply arrived. A
//! hybrid logical clock never runs behind its wall clock, so this bounds the peer's wall
//! clock too: when our wall clock is beyond it by more than the drift bound, the peer
//! refuses our stamps for certain, however slow the network. A slow probe only loosens the
//! bound (the fence errs towards taking writes). A reading counts for [`FRESH`]; a peer
//! without one does not count as behind. Half or fewer of the peers behind does not fence
//! this node: one peer whose clock runs slow does not stop the others' writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datacake_node::NodeId;
use parking_lot::RwLock;
use tokio::time::Instant;

/// How long a peer's clock reading is used after it arrived. A node takes one at the start
/// of each repair round with the peer (each second by default).
pub(crate) const FRESH: Duration = Duration::from_secs(30);

/// The latest clock reading of each peer.
#[derive(Debug, Default)]
pub(crate) struct ClockFence {
    seen: RwLock<HashMap<NodeId, Reading>>,
    /// Whether the last check fenced the node (to log the changes, not every write).
    fenced: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    /// The most the peer's clock can have read at `at`, in milliseconds since the UNIX
    /// epoch.
    millis: u64,
    /// When the reading arrived, on this process's monotonic clock.
    at: Instant,
}

/// Why the fence refuses writes: this node's wall clock is ahead of `behind` of its `live`
/// live peers' clocks by more than the drift bound, by at least `by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ahead {
    pub(crate) behind: usize,
    pub(crate) live: usize,
    pub(crate) by: Duration,
}

impl ClockFence {
    /// Records the clock `millis` that member `peer` answered a probe with, which took
    /// `round_trip` and was answered now (and drops the readings no longer fresh, so only
    /// recent members' stay).
    pub(crate) fn observe(&self, peer: NodeId, millis: u64, round_trip: Duration) {
        let at = Instant::now();
        let reading = Reading {
            millis: millis.saturating_add(as_millis(round_trip)),
            at,
        };
        let mut seen = self.seen.write();
        seen.retain(|_, r| at.duration_since(r.at) <= FRESH);
        seen.insert(peer, reading);
    }

    /// Records whether the node is fenced now; true if that changed since the last call.
    pub(crate) fn changed(&self, fenced: bool) -> bool {
        self.fenced.swap(fenced, Ordering::Relaxed) != fenced
    }

    /// `Err` if more than half of `live_peers` have a reading, within [`FRESH`], that is,
    /// aged to now, more than `max_drift` behind `wall_millis()` (this node's wall clock,
    /// read only if there is a reading);
    /// `by` is the least such lead among them.
    pub(crate) fn check(
        &self,
        live_peers: impl IntoIterator<Item = NodeId>,
        wall_millis: impl FnOnce() -> u64,
        max_drift: Duration,
    ) -> Result<(), Ahead> {
        let seen = self.seen.read();
        if seen.is_empty() {
            return Ok(());
        }
        let wall_millis = wall_millis();
        let now = Instant::now();
        let (mut live, mut behind, mut least) = (0, 0, u64::MAX);
        for peer in live_peers {
            live += 1;
            let Some(reading) = seen.get(&peer) else {
                continue;
            };
            let age = now.duration_since(reading.at);
            if age > FRESH {
                continue;
            }
            let allowed = as_millis(age + max_drift);
            let bound = reading.millis.saturating_add(allowed);
            if let Some(lead) = wall_millis.checked_sub(bound).filter(|lead| *lead > 0) {
                behind += 1;
                least = least.min(lead);
            }
        }
        if behind * 2 <= live {
            return Ok(());
        }
        Err(Ahead {
            behind,
            live,
            by: max_drift + Duration::from_millis(least),
        })
    }
}

fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRIFT: Duration = Duration::from_secs(5);
    const WALL: u64 = 1_000_000_000;
    const NO_TIME: Duration = Duration::ZERO;
    /// A reading as far behind `WALL` as the fence tolerates, plus `extra_ms`.
    fn behind(extra_ms: u64) -> u64 {
        WALL - as_millis(DRIFT) - extra_ms
    }

    #[tokio::test(start_paused = true)]
    async fn most_live_peers_behind_beyond_the_bound_fence_the_node() {
        let fence = ClockFence::default();
        assert_eq!(fence.check([], || WALL, DRIFT), Ok(()), "no peer, no fence");
        fence.observe(2, behind(1), NO_TIME);
        fence.observe(3, behind(10_000), NO_TIME);
        fence.observe(4, WALL, NO_TIME);
        assert_eq!(
            fence.check([2, 3, 4], || WALL, DRIFT),
            Err(Ahead {
                behind: 2,
                live: 3,
                by: DRIFT + Duration::from_millis(1),
            })
        );
        // Half is not most: one slow peer of two does not fence the node.
        assert_eq!(fence.check([2, 4], || WALL, DRIFT), Ok(()));
        // Within the bound is not behind.
        fence.observe(2, behind(0), NO_TIME);
        assert_eq!(fence.check([2, 3, 4], || WALL, DRIFT), Ok(()));
        // A peer without a reading counts as not behind.
        assert_eq!(fence.check([3, 5, 6], || WALL, DRIFT), Ok(()));
    }

    /// The probe's round trip widens the bound: a peer whose clock was read somewhere
    /// within a slow round trip may be that much further on.
    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_loosens_the_bound() {
        let fence = ClockFence::default();
        fence.observe(2, behind(3_000), Duration::from_millis(2_999));
        assert!(fence.check([2], || WALL, DRIFT).is_err());
        fence.observe(2, behind(3_000), Duration::from_millis(3_000));
        assert!(fence.check([2], || WALL, DRIFT).is_ok());
    }

    /// Readings age on the monotonic clock, so a wall clock that jumps ahead after a
    /// reading (NTP stepping it, a restored snapshot) is fenced at the next write, before
    /// any new probe.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_jump_after_a_reading_is_fenced_at_once() {
        let fence = ClockFence::default();
        fence.observe(2, WALL, NO_TIME);
        fence.observe(3, WALL, NO_TIME);
        assert!(fence.check([2, 3], || WALL, DRIFT).is_ok(), "in step");
        let jumped = WALL + as_millis(DRIFT) + 1;
        assert_eq!(
            fence.check([2, 3], || jumped, DRIFT),
            Err(Ahead {
                behind: 2,
                live: 2,
                by: DRIFT + Duration::from_millis(1),
            })
        );
    }

    /// A reading ages with the monotonic clock (the peer's clock went on meanwhile), and
    /// past `FRESH` it no longer counts.
    #[tokio::test(start_paused = true)]
    async fn readings_age_and_go_stale() {
        let fence = ClockFence::default();
        fence.observe(2, behind(3_000), NO_TIME);
        assert!(fence.check([2], || WALL, DRIFT).is_err());
        tokio::time::advance(Duration::from_millis(4_000)).await;
        assert!(
            fence.check([2], || WALL + 4_000, DRIFT).is_err(),
            "both clocks went on"
        );
        assert!(
            fence.check([2], || WALL, DRIFT).is_ok(),
            "the peer's clock went on, ours stood still"
        );
        tokio::time::advance(FRESH).await;
        assert!(fence
            .check([2], || WALL + 10 * as_millis(FRESH), DRIFT)
            .is_ok());
    }
}
