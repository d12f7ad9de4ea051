//! Hybrid logical clock (HLC) timestamps.
//!
//! A timestamp is `(millis, counter, node)`: the physical time in milliseconds since the UNIX
//! epoch (1970-01-01T00:00:00Z, 48 bits, enough until the year 10889), a 16-bit logical counter
//! that orders events within one millisecond, and the 32-bit id of the node that issued it,
//! which breaks the remaining ties. Timestamps order by those three fields in that order.
//!
//! The clock logic is written once, as pure functions over a *packed* `u64`
//! (`millis << 16 | counter`, see [`HLCTimestamp::pack`]): [`next_send`] and [`next_recv`].
//! [`HLCTimestamp::send`] and [`HLCTimestamp::recv`] call them with the real wall clock; a clock
//! kept in one `AtomicU64` calls them inside a compare-and-swap loop.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::TimestampError;
use crate::wall_clock::{system_millis, wall_clock_millis};

/// The largest physical time a timestamp holds: `2^48 - 1` milliseconds after the UNIX epoch
/// (in the year 10889).
pub const MAX_MILLIS: u64 = (1 << 48) - 1;

/// The default maximum drift: a remote timestamp may be at most this far ahead of our wall
/// clock before [`HLCTimestamp::recv`] refuses it with [`TimestampError::ClockDrift`].
pub const DEFAULT_MAX_DRIFT: Duration = Duration::from_secs(5);

const COUNTER_BITS: u32 = 16;
const COUNTER_MASK: u64 = (1 << COUNTER_BITS) - 1;

/// A hybrid logical clock timestamp: physical milliseconds, a logical counter and a node id.
///
/// Ordered by `(millis, counter, node)`. Every constructor keeps `millis <= MAX_MILLIS`, so
/// [`pack`](Self::pack) and [`as_u128`](Self::as_u128) are lossless.
///
/// The same value is also a clock: [`send`](Self::send) and [`recv`](Self::recv) advance it.
///
/// ```
/// use datacake_crdt::HLCTimestamp;
///
/// let mut clock = HLCTimestamp::new(1_000, 0, 7);
/// let a = clock.send_at(1_000).unwrap(); // the wall clock stands still...
/// let b = clock.send_at(999).unwrap(); // ...or even goes backwards
/// assert!(b > a);
/// assert_eq!((b.millis(), b.counter(), b.node()), (1_000, 2, 7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "rkyv",
    derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize),
    rkyv(
        derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash),
        compare(PartialEq, PartialOrd),
        bytecheck(verify)
    )
)]
pub struct HLCTimestamp {
    millis: u64,
    counter: u16,
    node: u32,
}

impl HLCTimestamp {
    /// A value no constructor can produce (`millis` above [`MAX_MILLIS`]), used by the key map
    /// to mark an emptied slot.
    pub(crate) const VACANT: Self = Self {
        millis: u64::MAX,
        counter: 0,
        node: 0,
    };

    /// A timestamp of `millis` milliseconds since the UNIX epoch, logical `counter` and `node`.
    ///
    /// Infallible for convenience: a `millis` above [`MAX_MILLIS`] is clamped to it. Use
    /// [`try_new`](Self::try_new) to have it refused instead.
    pub const fn new(millis: u64, counter: u16, node: u32) -> Self {
        let millis = if millis > MAX_MILLIS {
            MAX_MILLIS
        } else {
            millis
        };
        Self {
            millis,
            counter,
            node,
        }
    }

    /// Like [`new`](Self::new), but refuses a `millis` above [`MAX_MILLIS`] with
    /// [`TimestampError::MillisOutOfRange`].
    pub const fn try_new(millis: u64, counter: u16, node: u32) -> Result<Self, TimestampError> {
        if millis > MAX_MILLIS {
            return Err(TimestampError::MillisOutOfRange { millis });
        }
        Ok(Self {
            millis,
            counter,
            node,
        })
    }

    /// A timestamp at the current wall-clock millisecond with counter 0, issued by `node`.
    pub fn now(node: u32) -> Self {
        Self::new(wall_clock_millis(), 0, node)
    }

    /// Physical time in milliseconds since the UNIX epoch.
    pub const fn millis(&self) -> u64 {
        self.millis
    }

    /// The logical counter within [`millis`](Self::millis).
    pub const fn counter(&self) -> u16 {
        self.counter
    }

    /// The id of the node that issued the timestamp.
    pub const fn node(&self) -> u32 {
        self.node
    }

    /// The clock part as one `u64`: `millis << 16 | counter`. Orders like the timestamp
    /// except for the node id, which it leaves out.
    pub const fn pack(&self) -> u64 {
        (self.millis << COUNTER_BITS) | self.counter as u64
    }

    /// The inverse of [`pack`](Self::pack), with the node id given separately. Every `u64` is
    /// a valid packed clock (its top 48 bits are the millis), so this cannot fail.
    pub const fn from_packed(packed: u64, node: u32) -> Self {
        Self {
            millis: packed >> COUNTER_BITS,
            counter: (packed & COUNTER_MASK) as u16,
            node,
        }
    }

    /// All three fields in one `u128`: `millis << 48 | counter << 32 | node`. Lossless, and
    /// orders exactly like the timestamp.
    pub const fn as_u128(&self) -> u128 {
        ((self.pack() as u128) << 32) | self.node as u128
    }

    /// The inverse of [`as_u128`](Self::as_u128). Refuses values whose millis would exceed
    /// [`MAX_MILLIS`] (any of the top 32 bits set).
    pub const fn from_u128(value: u128) -> Result<Self, TimestampError> {
        let packed = value >> 32;
        if packed > u64::MAX as u128 {
            return Err(TimestampError::MillisOutOfRange {
                millis: if (value >> 48) > u64::MAX as u128 {
                    u64::MAX
                } else {
                    (value >> 48) as u64
                },
            });
        }
        Ok(Self::from_packed(packed as u64, value as u32))
    }

    /// Issues the next local timestamp against the real wall clock: strictly greater than
    /// this clock's previous value, even when the wall clock stands still or goes backwards.
    ///
    /// If all 65,536 counter values of the current millisecond are used and the wall clock is
    /// at that millisecond, waits (yielding the thread) for the next one. If the clock is ahead
    /// of the wall clock (after merging a remote stamp) and exhausted, returns
    /// [`TimestampError::CounterExhausted`] and stays unchanged; it never wraps.
    pub fn send(&mut self) -> Result<Self, TimestampError> {
        let packed = next_send_now(self.pack())?;
        *self = Self::from_packed(packed, self.node);
        Ok(*self)
    }

    /// [`send`](Self::send) with the wall clock given as `wall_millis` (milliseconds since the
    /// UNIX epoch), for deterministic tests and for callers with their own clock. Never waits:
    /// counter exhaustion is an error. On error the clock is unchanged.
    pub fn send_at(&mut self, wall_millis: u64) -> Result<Self, TimestampError> {
        let packed = next_send(self.pack(), wall_millis)?;
        *self = Self::from_packed(packed, self.node);
        Ok(*self)
    }

    /// Merges a remote timestamp into this clock with [`DEFAULT_MAX_DRIFT`] and returns the new
    /// local timestamp, which orders after both `remote` and every stamp issued before.
    ///
    /// Errors (the clock is then unchanged): [`TimestampError::ClockDrift`] if `remote` is more
    /// than the maximum drift ahead of the wall clock, [`TimestampError::DuplicateNode`] if it
    /// carries our node id with a time later than we ever issued, and
    /// [`TimestampError::CounterExhausted`] as for [`send`](Self::send).
    pub fn recv(&mut self, remote: &Self) -> Result<Self, TimestampError> {
        self.recv_with_max_drift(remote, DEFAULT_MAX_DRIFT)
    }

    /// [`recv`](Self::recv) with a chosen maximum drift.
    pub fn recv_with_max_drift(
        &mut self,
        remote: &Self,
        max_drift: Duration,
    ) -> Result<Self, TimestampError> {
        let packed = next_recv_now(self.pack(), self.node, remote, max_drift)?;
        *self = Self::from_packed(packed, self.node);
        Ok(*self)
    }

    /// [`recv_with_max_drift`](Self::recv_with_max_drift) with the wall clock given as
    /// `wall_millis`. Never waits. On error the clock is unchanged.
    pub fn recv_at(
        &mut self,
        remote: &Self,
        wall_millis: u64,
        max_drift: Duration,
    ) -> Result<Self, TimestampError> {
        let packed = next_recv(self.pack(), self.node, remote, wall_millis, max_drift)?;
        *self = Self::from_packed(packed, self.node);
        Ok(*self)
    }
}

/// The send step of the clock on a packed value (see [`HLCTimestamp::pack`]): the next packed
/// clock after `last_packed` when the wall clock reads `wall_millis`.
///
/// The result is strictly greater than `last_packed`. If the wall clock is past the last
/// millisecond the counter restarts at 0; otherwise the counter is incremented, and when it
/// is exhausted the result is [`TimestampError::CounterExhausted`] (never a wrap). A caller
/// that sees that error with `millis == wall_millis` can wait for the next millisecond and
/// retry, which is what [`next_send_now`] does.
pub fn next_send(last_packed: u64, wall_millis: u64) -> Result<u64, TimestampError> {
    let wall = wall_millis.min(MAX_MILLIS);
    let last_millis = last_packed >> COUNTER_BITS;
    if wall > last_millis {
        return Ok(wall << COUNTER_BITS);
    }
    if last_packed & COUNTER_MASK == COUNTER_MASK {
        return Err(TimestampError::CounterExhausted {
            millis: last_millis,
        });
    }
    Ok(last_packed + 1)
}

/// [`next_send`] against the real wall clock, waiting for the next millisecond when the counter
/// of the current one is exhausted.
pub fn next_send_now(last_packed: u64) -> Result<u64, TimestampError> {
    match next_send(last_packed, wall_clock_millis()) {
        Err(TimestampError::CounterExhausted { millis }) => {
            next_send(last_packed, wait_for_millis_after(millis)?)
        }
        other => other,
    }
}

/// Waits (yielding the thread) until the system clock passes `millis` and returns its reading,
/// or returns [`TimestampError::CounterExhausted`] at once if the clock is behind `millis`
/// (waiting could take arbitrarily long).
fn wait_for_millis_after(millis: u64) -> Result<u64, TimestampError> {
    loop {
        let now = system_millis();
        if now > millis {
            return Ok(now);
        }
        if now < millis {
            return Err(TimestampError::CounterExhausted { millis });
        }
        std::thread::yield_now();
    }
}

/// The receive step of the clock on a packed value: merges `remote` into `last_packed` (the
/// clock of node `local_node`) when the wall clock reads `wall_millis`.
///
/// The result is strictly greater than both `last_packed` and `remote.pack()`, and at least
/// `wall_millis << 16`. Errors, checked in this order:
/// [`TimestampError::DuplicateNode`] if `remote.node() == local_node` and
/// `remote.pack() > last_packed` (we never issued that stamp);
/// [`TimestampError::ClockDrift`] if `remote.millis() > wall_millis + max_drift`;
/// [`TimestampError::CounterExhausted`] if the counter of the resulting millisecond is used up.
pub fn next_recv(
    last_packed: u64,
    local_node: u32,
    remote: &HLCTimestamp,
    wall_millis: u64,
    max_drift: Duration,
) -> Result<u64, TimestampError> {
    let remote_packed = remote.pack();
    if remote.node == local_node && remote_packed > last_packed {
        return Err(TimestampError::DuplicateNode { node: local_node });
    }
    let wall = wall_millis.min(MAX_MILLIS);
    let drift_millis = u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX);
    if remote.millis > wall.saturating_add(drift_millis) {
        return Err(TimestampError::ClockDrift {
            remote_millis: remote.millis,
            wall_millis,
            max_drift,
        });
    }
    let last_millis = last_packed >> COUNTER_BITS;
    let millis = last_millis.max(remote.millis).max(wall);
    let base = match (millis == last_millis, millis == remote.millis) {
        (true, true) => Some(last_packed.max(remote_packed)),
        (true, false) => Some(last_packed),
        (false, true) => Some(remote_packed),
        (false, false) => None,
    };
    match base {
        None => Ok(millis << COUNTER_BITS),
        Some(p) if p & COUNTER_MASK == COUNTER_MASK => {
            Err(TimestampError::CounterExhausted { millis })
        }
        Some(p) => Ok(p + 1),
    }
}

/// [`next_recv`] against the real wall clock, waiting for the next millisecond when the counter
/// of the current one is exhausted.
pub fn next_recv_now(
    last_packed: u64,
    local_node: u32,
    remote: &HLCTimestamp,
    max_drift: Duration,
) -> Result<u64, TimestampError> {
    match next_recv(
        last_packed,
        local_node,
        remote,
        wall_clock_millis(),
        max_drift,
    ) {
        Err(TimestampError::CounterExhausted { millis }) => {
            let wall = wait_for_millis_after(millis)?;
            next_recv(last_packed, local_node, remote, wall, max_drift)
        }
        other => other,
    }
}

impl fmt::Display for HLCTimestamp {
    /// `millis-counter-node`, zero padded (15, 5 and 10 digits) so that the string order is
    /// the timestamp order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:015}-{:05}-{:010}",
            self.millis, self.counter, self.node
        )
    }
}

impl FromStr for HLCTimestamp {
    type Err = TimestampError;

    /// Parses `millis-counter-node` (decimal digits only; padding optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || TimestampError::InvalidFormat {
            input: s.to_owned(),
        };
        let mut parts = s.split('-');
        let (Some(millis), Some(counter), Some(node), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        for part in [millis, counter, node] {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
        }
        let field =
            |field: &'static str| move |cause| TimestampError::InvalidField { field, cause };
        let millis = millis.parse::<u64>().map_err(field("millis"))?;
        let counter = counter.parse::<u16>().map_err(field("counter"))?;
        let node = node.parse::<u32>().map_err(field("node"))?;
        Self::try_new(millis, counter, node)
    }
}

#[cfg(feature = "rkyv")]
impl ArchivedHLCTimestamp {
    /// The native timestamp (a copy).
    pub fn to_native(&self) -> HLCTimestamp {
        HLCTimestamp {
            millis: self.millis.to_native(),
            counter: self.counter.to_native(),
            node: self.node.to_native(),
        }
    }

    /// Physical time in milliseconds since the UNIX epoch.
    pub fn millis(&self) -> u64 {
        self.millis.to_native()
    }

    /// The logical counter.
    pub fn counter(&self) -> u16 {
        self.counter.to_native()
    }

    /// The issuing node's id.
    pub fn node(&self) -> u32 {
        self.node.to_native()
    }
}

#[cfg(feature = "rkyv")]
impl From<&ArchivedHLCTimestamp> for HLCTimestamp {
    fn from(archived: &ArchivedHLCTimestamp) -> Self {
        archived.to_native()
    }
}

// SAFETY: `verify` only refuses values; the one invariant beyond the fields' own is
// `millis <= MAX_MILLIS`, which it checks.
#[cfg(feature = "rkyv")]
unsafe impl<C> rkyv::bytecheck::Verify<C> for ArchivedHLCTimestamp
where
    C: rkyv::rancor::Fallible + ?Sized,
    C::Error: rkyv::rancor::Source,
{
    fn verify(&self, _context: &mut C) -> Result<(), C::Error> {
        let millis = self.millis.to_native();
        if millis > MAX_MILLIS {
            rkyv::rancor::fail!(TimestampError::MillisOutOfRange { millis });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
