//! The node's hybrid logical clock: one `AtomicU64`, advanced by compare-and-swap.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use datacake_crdt::{
    next_recv, next_send, wall_clock_millis, HLCTimestamp, TimestampError, DEFAULT_MAX_DRIFT,
};

use crate::membership::NodeId;

/// The node's hybrid logical clock.
///
/// Every stamp it issues is strictly greater than every stamp it issued or registered before,
/// across threads. The state is one packed `(millis, counter)` word updated by compare-and-swap,
/// so issuing a stamp is a few atomic operations: no lock, no actor round-trip, and never a
/// wait. The step logic is `datacake-crdt`'s ([`next_send`], [`next_recv`]): when the
/// 65,536 counter values of the clock's millisecond are used up — say after registering a
/// remote stamp from a few seconds in the future — the next stamp takes the next *logical*
/// millisecond with counter 0 instead of waiting for the wall clock to get there.
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
    wall: WallClock,
}

/// Where a [`Clock`] reads physical time: the machine's clock or turmoil's simulated one,
/// shifted by an offset (a node whose clock runs fast or slow; in a simulation the offset
/// can be stepped while the node runs, see [`Clock::step_wall_clock`]).
#[derive(Debug)]
pub(crate) struct WallClock {
    offset_millis: AtomicI64,
    simulated: bool,
}

impl WallClock {
    /// The machine's clock.
    pub(crate) fn system() -> Self {
        Self::new(0, false)
    }

    /// The machine's clock (or, with `simulated`, turmoil's) read `offset_millis` later.
    pub(crate) fn new(offset_millis: i64, simulated: bool) -> Self {
        Self {
            offset_millis: AtomicI64::new(offset_millis),
            simulated,
        }
    }

    fn millis(&self) -> u64 {
        let base = self.base_millis();
        base.saturating_add_signed(self.offset_millis.load(Ordering::Relaxed))
    }

    #[cfg(feature = "simulation")]
    fn base_millis(&self) -> u64 {
        if self.simulated {
            // Outside a turmoil host (the test thread between steps) there is no simulated
            // time to read: the machine's clock is the best fallback, and the clock's logic
            // keeps stamps increasing whichever reading it gets.
            if let Some(since_epoch) = turmoil::since_epoch() {
                return u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
            }
        }
        wall_clock_millis()
    }

    #[cfg(not(feature = "simulation"))]
    fn base_millis(&self) -> u64 {
        let _ = self.simulated;
        wall_clock_millis()
    }
}

impl Clock {
    /// A clock for `node_id`, starting at the wall clock, accepting remote stamps up to
    /// [`DEFAULT_MAX_DRIFT`] ahead of the wall clock.
    pub fn new(node_id: NodeId) -> Self {
        Self::with_max_drift(node_id, DEFAULT_MAX_DRIFT)
    }

    /// A clock that accepts remote stamps up to `max_drift` ahead of the wall clock.
    pub fn with_max_drift(node_id: NodeId, max_drift: Duration) -> Self {
        Self::reading(node_id, max_drift, WallClock::system())
    }

    /// A clock reading physical time from `wall`.
    pub(crate) fn reading(node_id: NodeId, max_drift: Duration, wall: WallClock) -> Self {
        Self {
            node_id,
            packed: AtomicU64::new(HLCTimestamp::new(wall.millis(), 0, node_id).pack()),
            max_drift,
            wall,
        }
    }

    /// Physical time as this node reads it, in milliseconds since the UNIX epoch: the wall
    /// clock the stamps are built on (shifted by the node's configured clock offset, if any;
    /// simulated time on turmoil's network). For anything a node measures against the wall
    /// clock, such as the age of a membership record.
    pub fn wall_millis(&self) -> u64 {
        self.wall.millis()
    }

    /// Steps the wall clock this clock reads to `offset_millis` from true time (simulation
    /// only: a machine's clock set while the node runs, as NTP steps it). The hybrid logical
    /// clock stays monotonic across the step: after a step back, stamps keep counting from
    /// the last one until the wall clock passes it.
    #[cfg(feature = "simulation")]
    pub fn step_wall_clock(&self, offset_millis: i64) {
        self.wall
            .offset_millis
            .store(offset_millis, Ordering::Relaxed);
    }

    /// The node id stamped into every timestamp.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Issues a new timestamp, greater than any issued or registered before. Never blocks,
    /// never waits for the wall clock, never panics. (The name is datacake 0.8's: it does not
    /// just read the time, it advances the clock, so two calls never return the same stamp.)
    ///
    /// One case cannot be honoured: once the clock holds the last representable stamp,
    /// `(MAX_MILLIS, 65535)` in the year 10889, there is no greater one. The clock then
    /// *saturates*: every call returns that same stamp (the order stays monotonic, no longer
    /// strictly increasing) and [`register_ts`](Self::register_ts) returns
    /// [`TimestampError::CounterExhausted`]. Reaching it takes a wall clock thousands of years
    /// off, or a remote stamp that far ahead accepted under a huge maximum drift.
    pub fn get_time(&self) -> HLCTimestamp {
        let wall_millis = self.wall.millis();
        let mut last = self.packed.load(Ordering::Acquire);
        loop {
            let Ok(next) = next_send(last, wall_millis) else {
                // Saturated at the last representable stamp (see above).
                return HLCTimestamp::from_packed(last, self.node_id);
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
    /// it never issued ([`TimestampError::DuplicateNode`]). Like
    /// [`get_time`](Self::get_time) it never waits; it fails with
    /// [`TimestampError::CounterExhausted`] only at the last representable stamp.
    pub fn register_ts(&self, remote: HLCTimestamp) -> Result<HLCTimestamp, TimestampError> {
        let wall_millis = self.wall.millis();
        let mut last = self.packed.load(Ordering::Acquire);
        loop {
            let next = next_recv(last, self.node_id, &remote, wall_millis, self.max_drift)?;
            match self
                .packed
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(HLCTimestamp::from_packed(next, self.node_id)),
                Err(current) => last = current,
            }
        }
    }
    /// The most a remote stamp may be ahead of the wall clock.
    pub fn max_drift(&self) -> Duration {
        self.max_drift
    }

    /// `Err(ClockDrift)` if `remote` is further ahead of the wall clock than the maximum
    /// drift: the check [`register_ts`](Self::register_ts) makes, without touching the clock.
    /// For stamps that travel inside messages (a replicated write's, a repaired entry's).
    ///
    /// ```
    /// use std::time::Duration;
    /// use datacake_crdt::HLCTimestamp;
    /// use datacake_node::Clock;
    ///
    /// let clock = Clock::with_max_drift(1, Duration::from_secs(5));
    /// let now = clock.get_time();
    /// assert!(clock.check_drift(HLCTimestamp::new(now.millis() + 1_000, 0, 2)).is_ok());
    /// assert!(clock.check_drift(HLCTimestamp::new(now.millis() + 60_000, 0, 2)).is_err());
    /// ```
    pub fn check_drift(&self, remote: HLCTimestamp) -> Result<(), TimestampError> {
        let wall_millis = self.wall.millis();
        if remote.millis() > self.ceiling_at(wall_millis) {
            return Err(TimestampError::ClockDrift {
                remote_millis: remote.millis(),
                wall_millis,
                max_drift: self.max_drift,
            });
        }
        Ok(())
    }

    /// The latest physical time (milliseconds since the UNIX epoch) a remote stamp may carry
    /// right now: the wall clock plus the maximum drift. For checking many stamps of one
    /// message against one reading of the wall clock, as [`check_drift`](Self::check_drift)
    /// does for one.
    pub fn drift_ceiling(&self) -> u64 {
        self.ceiling_at(self.wall.millis())
    }

    fn ceiling_at(&self, wall_millis: u64) -> u64 {
        let drift_millis = u64::try_from(self.max_drift.as_millis()).unwrap_or(u64::MAX);
        wall_millis.saturating_add(drift_millis)
    }

    /// Moves the clock past `stamp`, whichever node issued it, and returns a new stamp greater
    /// than it. Unlike [`register_ts`](Self::register_ts) it accepts this node's own id: for
    /// stamps the node itself wrote earlier (say, persisted by a previous run whose wall clock
    /// was ahead of today's). Refuses a stamp beyond the maximum drift like `register_ts`.
    pub fn advance_past(&self, stamp: HLCTimestamp) -> Result<HLCTimestamp, TimestampError> {
        let wall_millis = self.wall.millis();
        // `next_recv`'s duplicate-id rule guards against peers claiming our id; here the stamp
        // is known to be ours to keep, so it is presented under another id.
        let other = stamp.node().wrapping_add(1);
        let mut last = self.packed.load(Ordering::Acquire);
        loop {
            let next = next_recv(last, other, &stamp, wall_millis, self.max_drift)?;
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
            .field("wall", &self.wall)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datacake_crdt::MAX_MILLIS;

    use super::*;

    #[cfg(feature = "simulation")]
    #[test]
    fn a_stepped_wall_clock_moves_the_reading_and_stamps_stay_monotonic() {
        let clock = Clock::reading(1, DEFAULT_MAX_DRIFT, WallClock::new(10_000, false));
        let before = clock.get_time();
        let wall = clock.wall_millis();
        clock.step_wall_clock(-10_000);
        let stepped = clock.wall_millis();
        assert!(
            (19_990..=20_100).contains(&wall.saturating_sub(stepped)),
            "stepped 20 s back: {wall} -> {stepped}"
        );
        let after = clock.get_time();
        assert!(after > before, "{after:?} after {before:?}");
        assert_eq!(
            after.millis(),
            before.millis(),
            "held until the wall clock passes it"
        );
    }

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
    fn get_time_saturates_at_the_last_representable_stamp() {
        // Only a drift bound of thousands of years lets a stamp this far ahead in.
        let clock = Clock::with_max_drift(1, Duration::MAX);
        let end = HLCTimestamp::new(MAX_MILLIS, u16::MAX - 2, 2);
        assert_eq!(
            clock.register_ts(end),
            Ok(HLCTimestamp::new(MAX_MILLIS, u16::MAX - 1, 1))
        );
        let last = HLCTimestamp::new(MAX_MILLIS, u16::MAX, 1);
        assert_eq!(clock.get_time(), last);
        assert_eq!(clock.get_time(), last, "saturated, no panic, no wait");
        assert_eq!(clock.get_time(), last);
        assert_eq!(
            clock.register_ts(HLCTimestamp::new(5, 0, 2)),
            Err(TimestampError::CounterExhausted { millis: MAX_MILLIS })
        );
        assert_eq!(clock.get_time(), last);
    }

    #[test]
    fn advance_past_takes_our_own_stamps_from_an_earlier_run() {
        let clock = Clock::new(1);
        let now = clock.get_time();
        let earlier_run = HLCTimestamp::new(now.millis() + 2_000, 7, 1);
        assert!(
            clock.register_ts(earlier_run).is_err(),
            "a peer may not claim our id"
        );
        let next = clock.advance_past(earlier_run).unwrap();
        assert!(next > earlier_run && clock.get_time() > next);
        let too_far = HLCTimestamp::new(now.millis() + 60_000, 0, 1);
        assert!(matches!(
            clock.advance_past(too_far),
            Err(TimestampError::ClockDrift { .. })
        ));
    }

    #[test]
    fn an_offset_clock_stamps_ahead_and_accepts_relative_to_its_own_wall() {
        let normal = Clock::with_max_drift(1, Duration::from_millis(500));
        let fast = Clock::reading(2, Duration::from_millis(500), WallClock::new(3_000, false));
        let (a, b) = (normal.get_time(), fast.get_time());
        assert!(b.millis() >= a.millis() + 3_000, "{a} {b}");
        assert!(fast.wall_millis() >= normal.wall_millis() + 3_000);
        // Beyond the normal clock's drift bound, within the fast one's.
        assert!(normal.register_ts(b).is_err());
        assert!(fast
            .register_ts(HLCTimestamp::new(b.millis() + 100, 0, 3))
            .is_ok());
        let slow = Clock::reading(4, Duration::from_millis(500), WallClock::new(-3_000, false));
        assert!(slow.get_time().millis() + 3_000 <= normal.get_time().millis() + 50);
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
