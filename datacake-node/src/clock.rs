//! The node's hybrid logical clock: one `AtomicU64`, advanced by compare-and-swap.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use datacake_crdt::{
    next_recv_now, next_send_now, wall_clock_millis, HLCTimestamp, TimestampError,
    DEFAULT_MAX_DRIFT,
};

use crate::membership::NodeId;

/// The node's hybrid logical clock.
///
/// Every stamp it issues is strictly greater than every stamp it issued or registered before,
/// across threads. The state is one packed `(millis, counter)` word updated by compare-and-swap,
/// so issuing a stamp is a few atomic operations: no lock, no actor round-trip. The step logic
/// is `datacake-crdt`'s ([`next_send_now`], [`next_recv_now`]).
///
/// ```
/// use datacake_node::Clock;
/// use datacake_crdt::HLCTimestamp;
///
/// let clock = Clock::new(1);
/// let a = clock.get_time();
/// let remote = HLCTimestamp::new(a.millis() + 10, 3, 2);
/// let b = clock.register_ts(remote).unwrap();
/// assert!(b > remote && b > a);
/// assert!(clock.get_time() > b);
/// ```
pub struct Clock {
    node_id: NodeId,
    packed: AtomicU64,
    max_drift: Duration,
}

impl Clock {
    /// A clock for `node_id`, starting at the wall clock, accepting remote stamps up to
    /// [`DEFAULT_MAX_DRIFT`] ahead of the wall clock.
    pub fn new(node_id: NodeId) -> Self {
        Self::with_max_drift(node_id, DEFAULT_MAX_DRIFT)
    }

    /// A clock that accepts remote stamps up to `max_drift` ahead of the wall clock.
    pub fn with_max_drift(node_id: NodeId, max_drift: Duration) -> Self {
        Self {
            node_id,
            packed: AtomicU64::new(HLCTimestamp::new(wall_clock_millis(), 0, node_id).pack()),
            max_drift,
        }
    }

    /// The node id stamped into every timestamp.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Issues a new timestamp, greater than any issued or registered before.
    ///
    /// In the (practically unreachable) case where all 65,536 counter values of a millisecond
    /// are used while the clock runs ahead of the wall clock (after registering a remote stamp
    /// from the future), this waits, yielding the thread, until the wall clock catches up; it
    /// never wraps and never panics.
    pub fn get_time(&self) -> HLCTimestamp {
        let mut last = self.packed.load(Ordering::Acquire);
        loop {
            let next = match next_send_now(last) {
                Ok(next) => next,
                Err(_) => {
                    std::thread::yield_now();
                    last = self.packed.load(Ordering::Acquire);
                    continue;
                }
            };
            match self
                .packed
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return HLCTimestamp::from_packed(next, self.node_id),
                Err(current) => last = current,
            }
        }
    }

    /// Folds a remote timestamp into the clock and returns a new local timestamp greater than
    /// both `remote` and everything issued before.
    ///
    /// Fails, leaving the clock unchanged, if `remote` is further ahead of the wall clock than
    /// the maximum drift ([`TimestampError::ClockDrift`]), or claims this node's id with a time
    /// it never issued ([`TimestampError::DuplicateNode`]).
    pub fn register_ts(&self, remote: HLCTimestamp) -> Result<HLCTimestamp, TimestampError> {
        let mut last = self.packed.load(Ordering::Acquire);
        loop {
            let next = next_recv_now(last, self.node_id, &remote, self.max_drift)?;
            match self
                .packed
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(HLCTimestamp::from_packed(next, self.node_id)),
                Err(current) => last = current,
            }
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("node_id", &self.node_id)
            .field(
                "last",
                &HLCTimestamp::from_packed(self.packed.load(Ordering::Relaxed), self.node_id),
            )
            .field("max_drift", &self.max_drift)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn stamps_strictly_increase_across_threads() {
        let clock = Arc::new(Clock::new(3));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let clock = clock.clone();
                std::thread::spawn(move || {
                    let mut stamps = Vec::with_capacity(20_000);
                    for _ in 0..20_000 {
                        stamps.push(clock.get_time());
                    }
                    stamps
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            let stamps = h.join().unwrap();
            assert!(
                stamps.windows(2).all(|w| w[0] < w[1]),
                "per-thread order broken"
            );
            all.extend(stamps);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "two threads got the same stamp");
    }

    #[test]
    fn remote_stamps_from_the_future_are_refused_beyond_drift() {
        let clock = Clock::with_max_drift(1, Duration::from_millis(100));
        let before = clock.get_time();
        let far = HLCTimestamp::new(before.millis() + 60_000, 0, 2);
        assert!(matches!(
            clock.register_ts(far),
            Err(TimestampError::ClockDrift { .. })
        ));
        assert!(clock.get_time() > before);
        assert!(clock.get_time().millis() < far.millis());
    }

    #[test]
    fn own_id_from_the_future_is_a_duplicate() {
        let clock = Clock::new(1);
        let now = clock.get_time();
        let fake = HLCTimestamp::new(now.millis() + 1, 0, 1);
        assert_eq!(
            clock.register_ts(fake),
            Err(TimestampError::DuplicateNode { node: 1 })
        );
    }
}
