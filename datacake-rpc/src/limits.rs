//! What a server holds on behalf of its peers, and how much of it: byte budgets for request
//! bodies being collected ([`Budget`], charged through a [`Charge`]) and the counters behind
//! [`Server::statistics`](crate::Server::statistics).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::Status;

/// A number of bytes that may be held at once, optionally nested in a larger one (a
/// connection's budget inside the server's): a charge must fit both.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
    /// What the budget is for, in messages ("this connection", "the server").
    what: &'static str,
    parent: Option<Arc<Budget>>,
}

impl Budget {
    pub(crate) fn new(limit: usize, what: &'static str, parent: Option<Arc<Budget>>) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            what,
            parent,
        }
    }

    /// Bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from this budget and its parent, or from neither.
    fn try_take(&self, bytes: usize) -> Result<(), Status> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map_err(|used| {
                Status::resource_exhausted(format!(
                    "request bodies buffered by {} would exceed {} bytes ({used} held, {bytes} more asked)",
                    self.what, self.limit
                ))
            })?;
        if let Some(parent) = &self.parent {
            if let Err(status) = parent.try_take(bytes) {
                self.used.fetch_sub(bytes, Ordering::AcqRel);
                return Err(status);
            }
        }
        Ok(())
    }

    /// Takes `bytes` even past the limit (for the few bytes an allocator rounds up).
    fn force_take(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
        if let Some(parent) = &self.parent {
            parent.force_take(bytes);
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(parent) = &self.parent {
            parent.give_back(bytes);
        }
    }
}

/// Bytes held against a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Raises the charge to `total` bytes, failing with
    /// [`ResourceExhausted`](crate::ErrorCode::ResourceExhausted) if the budget (or its
    /// parent) cannot hold them.
    pub(crate) fn grow_to(&mut self, total: usize) -> Result<(), Status> {
        if total > self.bytes {
            self.budget.try_take(total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }

    /// Raises the charge to `total` bytes whatever the budget says.
    pub(crate) fn force_to(&mut self, total: usize) {
        if total > self.bytes {
            self.budget.force_take(total - self.bytes);
            self.bytes = total;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(self.bytes);
        }
    }
}

/// The server's counters; read through [`ServerStatistics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) handshakes_cut: AtomicU64,
    pub(crate) connections_closed_idle: AtomicU64,
    pub(crate) bodies_timed_out: AtomicU64,
    pub(crate) bodies_over_budget: AtomicU64,
    pub(crate) payloads_too_deep: AtomicU64,
    pub(crate) methods_refused: AtomicU64,
    pub(crate) replies_queued_bytes: AtomicU64,
    pub(crate) replies_stalled: AtomicU64,
    /// Shared with each connection's driver, which counts its pauses here.
    pub(crate) reads_paused: Arc<AtomicU64>,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Adds `n` to a gauge of [`Counters`] and takes it off again when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    counters: Arc<Counters>,
    gauge: fn(&Counters) -> &AtomicU64,
    n: u64,
}

impl Held {
    pub(crate) fn new(counters: Arc<Counters>, gauge: fn(&Counters) -> &AtomicU64, n: u64) -> Self {
        gauge(&counters).fetch_add(n, Ordering::Relaxed);
        Self { counters, gauge, n }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.gauge)(&self.counters).fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// What a [`Server`](crate::Server) has refused or closed since it started, and what it holds
/// now; see [`Server::statistics`](crate::Server::statistics).
///
/// Counters only grow; the three gauges (`connections_open`, `buffered_bytes`,
/// `reply_bytes_queued`) go up and down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStatistics {
    /// Connections open now (gauge).
    pub connections_open: u64,
    /// Connections closed at once because `max_connections` were open and none of them was
    /// still handshaking.
    pub connections_refused: u64,
    /// Connections closed before their handshake finished, to make room for a newer one
    /// ([`MAX_HANDSHAKING`](crate::MAX_HANDSHAKING) handshaking at once, or every place
    /// taken).
    pub handshakes_cut: u64,
    /// Connections closed (GOAWAY) after `idle_timeout` without an open stream.
    pub connections_closed_idle: u64,
    /// Request bodies that did not arrive completely within `body_timeout`.
    pub bodies_timed_out: u64,
    /// Request bodies refused because collecting them would exceed the connection's or the
    /// server's buffer budget.
    pub bodies_over_budget: u64,
    /// Request bodies refused because their archive nests deeper than `max_depth`.
    pub payloads_too_deep: u64,
    /// Requests refused for a method other than `POST`.
    pub methods_refused: u64,
    /// Bytes of request bodies being collected or held by handlers now (gauge).
    pub buffered_bytes: u64,
    /// Bytes of whole replies waiting for the peer's flow-control window now (gauge).
    pub reply_bytes_queued: u64,
    /// Replies dropped (the stream reset) after the peer's window stayed shut for
    /// `idle_timeout`.
    pub replies_stalled: u64,
    /// Times a connection stopped reading because 1 MiB of its replies waited to be written
    /// (its client sends requests without reading the replies, or reads them slower than
    /// it sends); it reads again once they went out.
    pub reads_paused: u64,
}

impl ServerStatistics {
    pub(crate) fn read(counters: &Counters, buffered: &Budget) -> Self {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Self {
            connections_open: get(&counters.connections_open),
            connections_refused: get(&counters.connections_refused),
            handshakes_cut: get(&counters.handshakes_cut),
            connections_closed_idle: get(&counters.connections_closed_idle),
            bodies_timed_out: get(&counters.bodies_timed_out),
            bodies_over_budget: get(&counters.bodies_over_budget),
            payloads_too_deep: get(&counters.payloads_too_deep),
            methods_refused: get(&counters.methods_refused),
            buffered_bytes: buffered.used() as u64,
            reply_bytes_queued: get(&counters.replies_queued_bytes),
            replies_stalled: get(&counters.replies_stalled),
            reads_paused: get(&counters.reads_paused),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn a_charge_fits_both_budgets_or_takes_nothing() {
        let server = Arc::new(Budget::new(100, "the server", None));
        let a = Arc::new(Budget::new(60, "connection a", Some(server.clone())));
        let b = Arc::new(Budget::new(60, "connection b", Some(server.clone())));
        let mut on_a = Charge::new(a.clone());
        on_a.grow_to(60).unwrap();
        let err = on_a.grow_to(61).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ResourceExhausted);
        let mut on_b = Charge::new(b.clone());
        // b has room, the server does not.
        let err = on_b.grow_to(41).unwrap_err();
        assert!(err.message().contains("the server"), "{err}");
        assert_eq!((a.used(), b.used(), server.used()), (60, 0, 60));
        on_b.grow_to(40).unwrap();
        assert_eq!(server.used(), 100);
        drop(on_a);
        assert_eq!((a.used(), b.used(), server.used()), (0, 40, 40));
        drop(on_b);
        assert_eq!(server.used(), 0);
    }
}
