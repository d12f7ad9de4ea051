//! The errors of this crate: one enum for the clock, one for the set.

use std::num::ParseIntError;
use std::time::Duration;

/// Why a timestamp could not be issued, merged, built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// A remote timestamp is further ahead of our wall clock than the maximum drift allows.
    ///
    /// The remote is not merged: folding it in would drag our clock into the future.
    #[error(
        "clock drift: remote time {remote_millis} ms is more than {max_drift:?} ahead of the \
         wall clock ({wall_millis} ms)"
    )]
    ClockDrift {
        /// The remote timestamp's physical time, in milliseconds since the UNIX epoch.
        remote_millis: u64,
        /// Our wall clock when the remote arrived, in milliseconds since the UNIX epoch.
        wall_millis: u64,
        /// The largest lead over the wall clock that is accepted.
        max_drift: Duration,
    },
    /// A remote timestamp carries our own node id with a time later than any we ever issued:
    /// two nodes are running with the same id.
    #[error("duplicate node id {node}: a remote stamp claims our id with a time we never issued")]
    DuplicateNode {
        /// The node id both nodes claim.
        node: u32,
    },
    /// The clock is at the last representable stamp, `(MAX_MILLIS, 65535)` in the year 10889,
    /// so no greater one exists.
    ///
    /// An exhausted counter in any earlier millisecond is not an error: the clock moves on to
    /// the next (logical) millisecond. So this is reachable only if the wall clock, or a
    /// remote stamp accepted under a huge maximum drift, is thousands of years off.
    #[error(
        "clock exhausted: no timestamp after counter 65535 of {millis} ms, the last \
         representable millisecond"
    )]
    CounterExhausted {
        /// The millisecond whose counter is exhausted: always
        /// [`MAX_MILLIS`](crate::MAX_MILLIS).
        millis: u64,
    },
    /// A physical time does not fit the 48 bits a timestamp keeps (it is past year 10889).
    #[error("physical time {millis} ms does not fit in 48 bits")]
    MillisOutOfRange {
        /// The rejected time, in milliseconds since the UNIX epoch.
        millis: u64,
    },
    /// A string is not of the form `millis-counter-node`.
    #[error("invalid timestamp {input:?}: expected `millis-counter-node`")]
    InvalidFormat {
        /// The rejected input.
        input: String,
    },
    /// One field of a `millis-counter-node` string is not a number of the right width.
    #[error("invalid timestamp field `{field}`")]
    InvalidField {
        /// Which field: `"millis"`, `"counter"` or `"node"`.
        field: &'static str,
        /// Why the number did not parse.
        #[source]
        cause: ParseIntError,
    },
}

/// Why an [`OrSWotSet`](crate::OrSWotSet) operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetError {
    /// A `*_with_source` call named a source the set does not have.
    #[error("source index {index} is out of range: the set has {sources} sources")]
    SourceOutOfRange {
        /// The index given.
        index: usize,
        /// How many sources the set has (its `SOURCES` parameter).
        sources: usize,
    },
    /// Bytes given to `from_bytes` are not a valid archived set.
    #[cfg(feature = "rkyv")]
    #[error("invalid set bytes: {reason}")]
    InvalidBytes {
        /// What is wrong with them.
        reason: String,
    },
    /// Serialising the set failed.
    #[cfg(feature = "rkyv")]
    #[error("could not serialise the set: {reason}")]
    Serialize {
        /// What went wrong.
        reason: String,
    },
}
