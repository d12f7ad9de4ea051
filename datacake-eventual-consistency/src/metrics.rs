//! What the store reports through the [`metrics`] facade (listed in the crate's README,
//! "Metrics"). Each event is counted in one place: a [`Counter`] bumps the store's own
//! statistic and the facade counter together. Labels take only the consistency level's
//! fixed name; nothing a peer sends becomes a label value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use datacake_node::Consistency;

/// Mutations written through this node's handles.
pub(crate) const WRITES: &str = "datacake_store_writes_total";
/// Mutations received from peers' fan-out and applied.
pub(crate) const REPLICATED: &str = "datacake_store_replicated_total";
/// Repair rounds completed.
pub(crate) const REPAIR_ROUNDS: &str = "datacake_store_repair_rounds_total";
/// Keys taken from peers by repair.
pub(crate) const KEYS_REPAIRED: &str = "datacake_store_keys_repaired_total";
/// Bytes of repair replies received from peers.
pub(crate) const REPAIR_BYTES: &str = "datacake_store_repair_received_bytes_total";
/// Failed replication batches and repair rounds.
pub(crate) const REPLICATION_FAILURES: &str = "datacake_store_replication_failures_total";
/// Writes that did not meet their consistency level in time.
pub(crate) const CONSISTENCY_FAILURES: &str = "datacake_store_consistency_failures_total";
/// Remote timestamps refused for being too far ahead of the wall clock.
pub(crate) const CLOCK_SKEW_REJECTIONS: &str = "datacake_store_clock_skew_rejections_total";
/// Writes refused because this node's clock ran ahead of most live peers' (the clock fence).
pub(crate) const CLOCK_FENCED: &str = "datacake_store_clock_fenced_writes_total";
/// Stale versions repaired after reads at a consistency level.
pub(crate) const READ_REPAIRS: &str = "datacake_store_read_repairs_total";
/// Tombstones purged.
pub(crate) const TOMBSTONES_PURGED: &str = "datacake_store_tombstones_purged_total";
/// Copies forgotten because a peer had purged past them.
pub(crate) const OBSOLETE_FORGOTTEN: &str = "datacake_store_obsolete_forgotten_total";
/// Mutations queued for peers and not yet sent (a gauge).
pub(crate) const REPLICATION_BACKLOG: &str = "datacake_store_replication_backlog";
/// From a mutation's queueing for a peer to that peer's acknowledgement of its batch: the
/// batch's oldest mutation, one sample per acknowledged batch.
pub(crate) const REPLICATION_LAG: &str = "datacake_store_replication_lag_seconds";
/// A write call's latency, by `level`.
pub(crate) const WRITE_DURATION: &str = "datacake_store_write_duration_seconds";
/// A read call's latency, by `level`.
pub(crate) const READ_DURATION: &str = "datacake_store_read_duration_seconds";

/// One of the store's counters: read by [`StoreStatistics`](crate::StoreStatistics) and
/// recorded through the facade under `metric`, by the same [`add`](Self::add).
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    metric: &'static str,
}

impl Counter {
    pub(crate) const fn new(metric: &'static str) -> Self {
        Self {
            value: AtomicU64::new(0),
            metric,
        }
    }

    /// Counts `n` events.
    pub(crate) fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.value.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!(self.metric).increment(n as u64);
    }

    /// Records the facade counter at zero (see `Counters::register`).
    pub(crate) fn register(&self) {
        metrics::counter!(self.metric).increment(0);
    }

    /// Events counted so far.
    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Records the latency of one read or write call at `level` (whatever its outcome).
pub(crate) fn record_latency(histogram: &'static str, level: Consistency, started: Instant) {
    metrics::histogram!(histogram, "level" => level.as_str())
        .record(started.elapsed().as_secs_f64());
}

/// Records how long the oldest mutation of a batch a peer just acknowledged waited since
/// it was queued for that peer.
pub(crate) fn record_replication_lag(queued_at: Instant) {
    metrics::histogram!(REPLICATION_LAG).record(queued_at.elapsed().as_secs_f64());
}

/// The replication backlog changed by `added` minus `removed` mutations.
pub(crate) fn backlog_changed(added: usize, removed: usize) {
    let gauge = metrics::gauge!(REPLICATION_BACKLOG);
    if added == removed {
        // Nothing changed; recording zero still makes the series exist.
        gauge.increment(0.0);
    } else if added > removed {
        gauge.increment((added - removed) as f64);
    } else if removed > added {
        gauge.decrement((removed - added) as f64);
    }
}
