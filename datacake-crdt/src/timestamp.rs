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
//!
//! Both steps come down to one rule on the packed value: the next clock is the larger of
//! "the last clock (or, on receive, the remote stamp) plus one" and "the wall clock with
//! counter 0". So when the 65,536 counter values of the clock's millisecond are used up, the
//! next stamp is the next *logical* millisecond with counter 0, whether or not the wall clock
//! has reached it: the clock never waits and never wraps. It runs ahead of the wall clock
//! only as far as a merged remote stamp put it (at most the maximum drift) plus one
//! millisecond per 65,536 stamps issued faster than the wall clock advances, and the wall
//! clock takes over again as soon as it passes the clock. The one step that can fail for
//! exhaustion is the one past the last representable stamp, `(MAX_MILLIS, 65535)`, in the
//! year 10889.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::TimestampError;
use crate::wall_clock::wall_clock_millis;

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
    /// Never waits. If all 65,536 counter values of the clock's millisecond are used, the
    /// stamp is the next millisecond with counter 0, ahead of the wall clock if need be (see
    /// [`next_send`]). Fails, leaving the clock unchanged, only past the last representable
    /// stamp ([`TimestampError::CounterExhausted`] at [`MAX_MILLIS`]); it never wraps.
    pub fn send(&mut self) -> Result<Self, TimestampError> {
        let packed = next_send_now(self.pack())?;
        *self = Self::from_packed(packed, self.node);
        Ok(*self)
    }

    /// [`send`](Self::send) with the wall clock given as `wall_millis` (milliseconds since the
    /// UNIX epoch), for deterministic tests and for callers with their own clock. On error the
    /// clock is unchanged.
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
    /// [`TimestampError::CounterExhausted`] past the last representable stamp, as for
    /// [`send`](Self::send). Never waits.
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
    /// `wall_millis`. On error the clock is unchanged.
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
/// The result is `max(last_packed + 1, wall_millis << 16)`: strictly greater than
/// `last_packed` and at least the wall clock. If the wall clock is past the last millisecond
/// the counter restarts at 0; otherwise the counter is incremented, and when it is exhausted
/// the result is the next millisecond with counter 0, `(last_millis + 1) << 16`, even if the
/// wall clock has not reached it. Nothing waits and nothing wraps.
///
/// Fails only with [`TimestampError::CounterExhausted`] when `last_packed` is the last
/// representable clock, `(MAX_MILLIS, 65535)` (year 10889: unreachable unless the wall clock
/// or a trusted remote stamp is that far off).
///
/// ```
/// use datacake_crdt::{next_send, HLCTimestamp};
///
/// // The counter of millisecond 10 is used up while the wall clock still reads 6.
/// let last = HLCTimestamp::new(10, u16::MAX, 1).pack();
/// let next = HLCTimestamp::from_packed(next_send(last, 6).unwrap(), 1);
/// assert_eq!((next.millis(), next.counter()), (11, 0));
/// ```
pub fn next_send(last_packed: u64, wall_millis: u64) -> Result<u64, TimestampError> {
    let wall_packed = wall_millis.min(MAX_MILLIS) << COUNTER_BITS;
    let next = last_packed
        .checked_add(1)
        .ok_or(TimestampError::CounterExhausted { millis: MAX_MILLIS })?;
    Ok(next.max(wall_packed))
}

/// [`next_send`] against the real wall clock ([`wall_clock_millis`]). Never waits.
pub fn next_send_now(last_packed: u64) -> Result<u64, TimestampError> {
    next_send(last_packed, wall_clock_millis())
}

/// The receive step of the clock on a packed value: merges `remote` into `last_packed` (the
/// clock of node `local_node`) when the wall clock reads `wall_millis`.
///
/// The result is `max(max(last_packed, remote.pack()) + 1, wall_millis << 16)`: strictly
/// greater than both `last_packed` and `remote.pack()`, and at least `wall_millis << 16`. As
/// in [`next_send`], an exhausted counter (ours or the remote's) moves the result to the next
/// millisecond with counter 0, ahead of the wall clock if need be; nothing waits.
///
/// Errors, checked in this order (the clock is not advanced):
/// [`TimestampError::DuplicateNode`] if `remote.node() == local_node` and
/// `remote.pack() > last_packed` (we never issued that stamp);
/// [`TimestampError::ClockDrift`] if `remote.millis() > wall_millis + max_drift`;
/// [`TimestampError::CounterExhausted`] if the larger of the two is the last representable
/// clock, `(MAX_MILLIS, 65535)`.
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
    let next = last_packed
        .max(remote_packed)
        .checked_add(1)
        .ok_or(TimestampError::CounterExhausted { millis: MAX_MILLIS })?;
    Ok(next.max(wall << COUNTER_BITS))
}

/// [`next_recv`] against the real wall clock ([`wall_clock_millis`]). Never waits.
pub fn next_recv_now(
    last_packed: u64,
    local_node: u32,
    remote: &HLCTimestamp,
    max_drift: Duration,
) -> Result<u64, TimestampError> {
    next_recv(
        last_packed,
        local_node,
        remote,
        wall_clock_millis(),
        max_drift,
    )
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
