//! What the service, the handle and the background tasks share: the state, the node, the
//! statistics, and the one path that talks to a peer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use datacake_crdt::HLCTimestamp;
use datacake_node::{ClusterMember, DatacakeHandle};
use datacake_rpc::{RpcClient, Status};
use parking_lot::Mutex;
use tracing::warn;

use crate::error::CounterError;
use crate::messages::{check_entries, Entry, Fetch, Merge};
use crate::service::CounterService;
use crate::state::{Counters, Refused};

/// A snapshot of what the extension did on this node, from
/// [`CounterHandle::statistics`](crate::CounterHandle::statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterStatistics {
    /// Merges sent that a peer acknowledged.
    pub merges_sent: u64,
    /// Merges received from peers and applied.
    pub merges_received: u64,
    /// Calls to peers that failed or timed out.
    pub peer_failures: u64,
    /// Newcomers that were sent this node's whole state.
    pub catch_ups: u64,
    /// Remote clock stamps refused because they were too far ahead of the wall clock.
    pub clock_rejections: u64,
    /// Messages from peers refused by the extension's own checks: too many entries, a bad
    /// counter name, or no room left. (Bytes that are no valid archive never reach the
    /// extension: `datacake-rpc` refuses them and counts them in its metrics.)
    pub messages_refused: u64,
    /// The extension's background tasks still running on this node.
    pub running_tasks: usize,
}

#[derive(Debug, Default)]
struct Stats {
    merges_sent: AtomicU64,
    merges_received: AtomicU64,
    peer_failures: AtomicU64,
    catch_ups: AtomicU64,
    clock_rejections: AtomicU64,
    messages_refused: AtomicU64,
    running_tasks: AtomicUsize,
}

/// The shared core. It holds no handle's shared state, so the RPC service (owned by the
/// node's server) can keep it without keeping the handles' shared state alive: that is what
/// lets the last [`CounterHandle`](crate::CounterHandle) drop and remove the service.
#[derive(Debug)]
pub(crate) struct Replica {
    pub(crate) node: DatacakeHandle,
    pub(crate) counters: Mutex<Counters>,
    pub(crate) max_entries: usize,
    pub(crate) rpc_timeout: Duration,
    stats: Stats,
}

/// Counts a running background task for as long as it lives: the count falls when the task
/// ends *or is cancelled* (the node drops a cancelled task's future, and with it this guard).
#[derive(Debug)]
pub(crate) struct TaskGuard<'a>(&'a Replica);

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        self.0.stats.running_tasks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which statistic to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    MergeReceived,
    CatchUp,
    ClockRejected,
    MessageRefused,
}

impl Replica {
    pub(crate) fn new(node: DatacakeHandle, max_entries: usize, rpc_timeout: Duration) -> Self {
        Self {
            node,
            counters: Mutex::new(Counters::default()),
            max_entries,
            rpc_timeout,
            stats: Stats::default(),
        }
    }

    /// Marks a background task as running until the guard drops.
    pub(crate) fn task_started(&self) -> TaskGuard<'_> {
        self.stats.running_tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self)
    }

    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::MergeReceived => &self.stats.merges_received,
            Event::CatchUp => &self.stats.catch_ups,
            Event::ClockRejected => &self.stats.clock_rejections,
            Event::MessageRefused => &self.stats.messages_refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn statistics(&self) -> CounterStatistics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterStatistics {
            merges_sent: get(&self.stats.merges_sent),
            merges_received: get(&self.stats.merges_received),
            peer_failures: get(&self.stats.peer_failures),
            catch_ups: get(&self.stats.catch_ups),
            clock_rejections: get(&self.stats.clock_rejections),
            messages_refused: get(&self.stats.messages_refused),
            running_tasks: self.stats.running_tasks.load(Ordering::SeqCst),
        }
    }

    /// Merges entries into the state. The only refusal is [`Refused::Full`] (a merge takes
    /// maxima, it never adds).
    pub(crate) fn merge(&self, entries: Vec<Entry>) -> Result<usize, Refused> {
        self.counters.lock().merge(entries, self.max_entries)
    }

    /// Folds a peer's clock stamp into ours. A stamp further ahead of our wall clock than the
    /// clock's drift bound is refused (and counted) rather than dragging our clock, and every
    /// stamp we issue after it, into the future.
    pub(crate) fn register_clock(
        &self,
        remote: HLCTimestamp,
        from: SocketAddr,
    ) -> Result<(), Status> {
        match self.node.clock().register_ts(remote) {
            Ok(_) => Ok(()),
            Err(error) => {
                self.record(Event::ClockRejected);
                warn!(peer = %from, %error, "refused a counter message: clock out of bounds");
                Err(Status::invalid_payload(format!("clock: {error}")))
            }
        }
    }

    fn client(&self, peer: &ClusterMember) -> RpcClient<CounterService> {
        RpcClient::new(
            self.node
                .network()
                .get_or_connect_node(peer.node_id, peer.public_addr),
        )
    }

    /// Runs one call to `peer` under the deadline, naming the peer in any failure.
    async fn call<T>(
        &self,
        peer: &ClusterMember,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, CounterError> {
        // One deadline around the whole call, connecting included, so that a peer that
        // accepts the call and never answers fails the operation instead of hanging it.
        let result = match tokio::time::timeout(self.rpc_timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => CounterError::PeerFailed {
                node_id: peer.node_id,
                addr: peer.public_addr,
                status,
            },
            Err(_) => CounterError::PeerTimedOut {
                node_id: peer.node_id,
                addr: peer.public_addr,
                timeout: self.rpc_timeout,
            },
        };
        self.stats.peer_failures.fetch_add(1, Ordering::Relaxed);
        Err(result)
    }

    /// Pushes `entries` to `peer` (stamped with our clock) and waits for its acknowledgement.
    pub(crate) async fn push(
        &self,
        peer: &ClusterMember,
        entries: Vec<Entry>,
    ) -> Result<(), CounterError> {
        let message = Merge {
            from: self.node.me().node_id,
            clock: self.node.clock().get_time(),
            entries,
        };
        let client = self.client(peer);
        let ack = self
            .call(peer, async {
                let reply = client.send(&message).await?.into_inner();
                Ok(reply.clock.to_native())
            })
            .await?;
        // The peer applied the merge whatever its clock says: a bad stamp is only counted.
        let _ = self.register_clock(ack, peer.public_addr);
        self.stats.merges_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Asks `peer` for its entries of counter `name` and merges them in.
    pub(crate) async fn fetch(&self, peer: &ClusterMember, name: &str) -> Result<(), CounterError> {
        let message = Fetch {
            from: self.node.me().node_id,
            clock: self.node.clock().get_time(),
            name: name.to_owned(),
        };
        let client = self.client(peer);
        let (clock, entries) = self
            .call(peer, async {
                let reply = client.send(&message).await?.into_inner();
                // A reply is network input too: bounded, and only of the counter asked for.
                check_entries(&reply.entries)?;
                if reply.entries.iter().any(|e| e.name != name) {
                    return Err(Status::invalid_payload("reply holds another counter"));
                }
                Ok((reply.clock.to_native(), reply.deserialize_view()?.entries))
            })
            .await?;
        let _ = self.register_clock(clock, peer.public_addr);
        self.merge(entries).map_err(|_| CounterError::Full {
            max: self.max_entries,
        })?;
        Ok(())
    }
}
