//! The periodic anti-entropy task: pulls from every live peer what it holds newer, learns
//! from the same exchange which deletes the peer has confirmed, and purges the tombstones
//! every member has confirmed.
//!
//! Per peer and round: send the totals of our keyspace digests (in pages); the peer answers
//! with the digests of the keyspaces that differ (cut by bytes; we continue where it
//! stopped), each with its purge watermark; for each, ask for the entries of the differing
//! buckets only (whole buckets, cut by bytes), plan with [`plan_repair`](crate::repair::plan_repair),
//! apply tombstones directly and fetch only the documents we lack (in pages, each reply
//! applied before the next is asked for); then forget our copies the peer has purged past.
//!
//! # Scheduling
//! Each peer has its own rounds: at every repair interval, a round starts with each live
//! peer whose previous round has ended, and rounds with different peers run side by side,
//! so a slow peer delays only its own. A round lasts at most the repair round timeout
//! ([`with_repair_round_timeout`](crate::EventuallyConsistentStoreExtension::with_repair_round_timeout));
//! one cut off keeps what it applied and confirms nothing. At most [`KEYSPACES_IN_PARALLEL`]
//! keyspaces are repaired at once over all rounds (periodic and hand-off), each holding at
//! most one reply of fetched documents, so the memory repair takes does not grow with the
//! number of peers.
//!
//! # Tombstone purge
//! A tombstone goes only once every member the cluster knows of, live or down, has
//! **confirmed** it, and a member confirms nothing by saying so: this node learns it from
//! its own pull from the member (at the member's gossiped address). After a complete round
//! with peer X, this node knows that X holds every local tombstone older than
//! `min(X's floor, the oldest local tombstone X showed it lacks)`: buckets whose digests
//! matched hold the same entries, and in the others X's entries were compared one by one.
//! X's *floor* bounds what X may still commit (its writes in flight); below it, everything X
//! holds was in the digests, so this node also holds all of X's writes below it, and raising
//! the purge watermark there cannot refuse a write X still has to send.
//!
//! A member that is down holds purges back, with its last confirmation, until it is removed
//! ([`EventuallyConsistentStore::remove_member`](crate::EventuallyConsistentStore::remove_member))
//! or has been down for longer than the tombstone grace on both the wall clock and this
//! process's monotonic clock ([`Members::purge_holders`](crate::members::Members::purge_holders)).
//! If it returns after the cluster
//! purged past what it saw, it does not resurrect anything: pulling from any peer, it finds
//! its copies the peer lacks at or below the peer's purge watermark and forgets them
//! ([`RepairPlan::obsolete`](crate::repair::RepairPlan::obsolete)); peers refuse them meanwhile,
//! being older than their watermark.

use std::collections::HashMap;
use std::sync::Arc;

use datacake_crdt::HLCTimestamp;
use datacake_node::{ClusterMember, DatacakeHandle, NodeId};
use datacake_rpc::{DataView, Message, Response, RpcClient, Status};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::clock_fence::ClockFence;
use crate::config::StoreConfig;
use crate::digest::{BucketEntry, MAX_DIGEST_BITS};
use crate::error::StoreError;
use crate::keyspace::Mutation;
use crate::members::Members;
use crate::messages::{BucketRequest, ClockProbe, DigestRequest, WireDigest};
use crate::read::Fetch;
use crate::replica::{Change, Counters, Replica, TombstoneWatch};
use crate::service::StoreService;
use crate::storage::Storage;

/// Tombstones are purged every this many repair intervals (a purge is linear in the number
/// of tombstones and writes each purged keyspace's watermark to the storage).
const PURGE_EVERY_ROUNDS: u64 = 10;
/// Most buckets whose entries are asked for in one request, and most documents in one
/// fetch: besides the byte bounds, repair works in steps of this size (planned, fetched and
/// applied in turn), which keeps each step's maps small (measured: 100,000 keys catch up in
/// about two thirds of the time it takes in one step).
const BUCKETS_PER_REQUEST: usize = 512;
/// Keyspaces repaired at the same time, over every round of a store (the keyspaces of one
/// digest reply, and those of rounds with other peers, take turns).
const KEYSPACES_IN_PARALLEL: usize = 16;
/// Most ids asked for in one fetch request. Each reply (at most one message) is applied
/// before the next request.
const FETCH_PAGE: usize = 1024;

/// What the repair task works with.
pub(crate) struct Repairer<S> {
    pub(crate) replica: Arc<Replica<S>>,
    pub(crate) members: Arc<Members>,
    pub(crate) node: DatacakeHandle,
    pub(crate) config: StoreConfig,
    /// A turn to repair one keyspace: [`KEYSPACES_IN_PARALLEL`], shared by every round
    /// (clones share them).
    keyspace_turns: Arc<Semaphore>,
    /// The peers' clocks, read at the start of each round (shared with the write path,
    /// which it fences).
    pub(crate) clock_fence: Arc<ClockFence>,
}

impl<S> Clone for Repairer<S> {
    fn clone(&self) -> Self {
        Self {
            replica: self.replica.clone(),
            members: self.members.clone(),
            node: self.node.clone(),
            config: self.config,
            keyspace_turns: self.keyspace_turns.clone(),
            clock_fence: self.clock_fence.clone(),
        }
    }
}

/// The outcome of one complete round with a peer.
#[derive(Debug)]
pub(crate) struct Round {
    pub(crate) repaired: usize,
    /// What the round confirmed.
    confirmed: Confirmed,
}

/// The peer holds every local tombstone older than `at`, except those taken from peers after
/// the round began: older than `at`, they were never compared with it (see
/// [`TombstoneWatch`]).
#[derive(Debug, Clone)]
pub(crate) struct Confirmed {
    at: HLCTimestamp,
    late: Arc<TombstoneWatch>,
}

impl Confirmed {
    /// What the peer holds now: every local tombstone older than this.
    fn holds_below(&self) -> HLCTimestamp {
        self.late.oldest().map_or(self.at, |late| late.min(self.at))
    }
}

/// The rounds under way, one per peer at most, each in a task of its own (aborted when this
/// is dropped, with the repair task).
struct Rounds<S: Storage> {
    tasks: JoinSet<Result<Round, StoreError<S::Error>>>,
    peers: HashMap<tokio::task::Id, ClusterMember>,
}

impl<S: Storage> Default for Rounds<S> {
    fn default() -> Self {
        Self {
            tasks: JoinSet::new(),
            peers: HashMap::new(),
        }
    }
}

impl<S: Storage> Rounds<S> {
    /// Starts a round with `peer` unless one is under way.
    fn start(&mut self, repairer: &Repairer<S>, peer: ClusterMember) {
        if self.peers.values().any(|p| p.node_id == peer.node_id) {
            return;
        }
        let (repairer, member) = (repairer.clone(), peer.clone());
        let task = self
            .tasks
            .spawn(async move { repairer.counted_round(&member).await });
        self.peers.insert(task.id(), peer);
    }

    /// The next round to end, with its peer; `None` while none is under way. A round whose
    /// task panicked is logged and left out.
    async fn next(&mut self) -> Option<(ClusterMember, Result<Round, StoreError<S::Error>>)> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, outcome)) => {
                    if let Some(peer) = self.peers.remove(&id) {
                        return Some((peer, outcome));
                    }
                }
                Err(error) => {
                    warn!(%error, "a repair round ended without an outcome");
                    self.peers.remove(&error.id());
                }
            }
        }
    }
}

impl<S: Storage> Repairer<S> {
    /// The repair task's state over `replica`.
    pub(crate) fn new(
        replica: Arc<Replica<S>>,
        members: Arc<Members>,
        node: DatacakeHandle,
        config: StoreConfig,
    ) -> Self {
        Self {
            replica,
            members,
            node,
            config,
            keyspace_turns: Arc::new(Semaphore::new(KEYSPACES_IN_PARALLEL)),
            clock_fence: Arc::default(),
        }
    }

    /// Runs repair rounds until cancelled: every repair interval, one with each live peer
    /// whose previous round has ended (each in a task of its own, so rounds with different
    /// peers run side by side); and every [`PURGE_EVERY_ROUNDS`] intervals, purges the
    /// tombstones every member has confirmed in its last complete round.
    pub(crate) async fn run(self) {
        let mut ticker = tokio::time::interval(self.config.repair_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut confirmed: HashMap<NodeId, Confirmed> = HashMap::new();
        let mut rounds = Rounds::default();
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let live = self.node.live_members();
                    self.record_members(&live).await;
                    let me = self.node.me().node_id;
                    for peer in live.into_iter().filter(|p| p.node_id != me) {
                        rounds.start(&self, peer);
                    }
                    ticks += 1;
                    if ticks.is_multiple_of(PURGE_EVERY_ROUNDS) {
                        self.purge(&confirmed).await;
                    }
                }
                Some((peer, outcome)) = rounds.next() => match outcome {
                    Ok(round) => {
                        confirmed.insert(peer.node_id, round.confirmed);
                    }
                    Err(error) => {
                        let error = datacake_rpc::error_chain(&error);
                        debug!(peer = %peer.public_addr, node_id = peer.node_id, %error, "repair round failed");
                    }
                },
            }
        }
    }

    /// One complete round with `peer` ([`repair_from`](Self::repair_from)) within the repair
    /// round timeout, counted in the store's statistics as a round run or a failure (its
    /// keys are counted as they are applied, by [`apply`](Self::apply)). A round cut off by
    /// the timeout keeps what it applied and confirms nothing
    /// ([`StoreError::RepairTimedOut`]).
    pub(crate) async fn counted_round(
        &self,
        peer: &ClusterMember,
    ) -> Result<Round, StoreError<S::Error>> {
        let deadline = self.config.repair_round_timeout;
        let result = tokio::time::timeout(deadline, self.repair_from(peer))
            .await
            .unwrap_or(Err(StoreError::RepairTimedOut {
                peer: peer.public_addr,
                after: deadline,
            }));
        let counters = &self.replica.counters;
        match &result {
            Ok(_) => Counters::add(&counters.repairs_run, 1),
            Err(_) => Counters::add(&counters.failures, 1),
        }
        result
    }

    /// Brings the member record up to date with the live view, persisting what changed.
    /// A record that fails to persist is retried at the next call (the repair interval's).
    pub(crate) async fn record_members(&self, live: &[ClusterMember]) {
        let _turn = self.members.recording.lock().await;
        for known in self.members.observe(live, self.node.clock().wall_millis()) {
            if let Err(error) = self.replica.persist_member(&known).await {
                self.members.unsaved(known.member.node_id);
                warn!(node_id = known.member.node_id, %error, "cannot persist a member record; retried at the next repair round");
            }
        }
    }

    /// Purges the tombstones every member that holds purges back has confirmed.
    async fn purge(&self, confirmed: &HashMap<NodeId, Confirmed>) {
        let holders = self
            .members
            .purge_holders(self.config.tombstone_grace, self.node.clock().wall_millis());
        let mut confirmations = Vec::with_capacity(holders.len());
        for holder in &holders {
            match confirmed.get(holder) {
                Some(confirmed) => confirmations.push(confirmed),
                // A member that has not confirmed anything yet holds every purge back.
                None => return,
            }
        }
        let now = self.node.clock().get_time();
        let cutoff = || {
            confirmations
                .iter()
                .map(|c| c.holds_below())
                .fold(now, HLCTimestamp::min)
        };
        match self.replica.purge_tombstones(cutoff).await {
            Ok(0) => {}
            Ok(purged) => debug!(purged, "purged tombstones every member confirmed"),
            Err(error) => {
                Counters::add(&self.replica.counters.failures, 1);
                warn!(error = %datacake_rpc::error_chain(&error), "tombstone purge failed");
            }
        }
    }

    fn client(&self, peer: &ClusterMember) -> RpcClient<StoreService<S>> {
        let mut client = RpcClient::new(
            self.node
                .network()
                .get_or_connect_node(peer.node_id, peer.public_addr),
        );
        client.set_timeout(self.config.rpc_timeout);
        client
    }

    /// Counts a reply's archived bytes as repair traffic and deserialises it.
    fn received<T: Message>(&self, reply: Response<DataView<T>>) -> Result<T, Status> {
        Counters::add(&self.replica.counters.repair_bytes, reply.as_bytes().len());
        reply.into_inner().deserialize_view()
    }

    /// Folds a peer's clock into ours; a clock beyond the drift bound fails the round.
    fn register(&self, clock: HLCTimestamp, peer: &ClusterMember) -> Result<(), Status> {
        self.node.clock().register_ts(clock).map(|_| ()).map_err(|e| {
            Counters::add(&self.replica.counters.clock_skew_rejected, 1);
            warn!(peer = %peer.public_addr, error = %e, "peer clock out of bounds; repair skipped");
            Status::invalid_payload(format!("peer clock: {e}"))
        })
    }

    /// Asks `peer` for its clock, for the [`ClockFence`]: a request no peer refuses for our
    /// clock, timed by its round trip. A failure leaves the peer's last reading.
    async fn probe_clock(&self, client: &RpcClient<StoreService<S>>, peer: &ClusterMember) {
        let sent = tokio::time::Instant::now();
        let reply = client
            .send(&ClockProbe {})
            .await
            .and_then(|r| r.into_inner().deserialize_view());
        match reply {
            Ok(ack) => {
                let clock = ack.clock.millis();
                self.clock_fence
                    .observe(peer.node_id, clock, sent.elapsed());
            }
            Err(error) => debug!(peer = %peer.public_addr, %error, "clock probe failed"),
        }
    }

    /// One complete repair round with `peer`.
    pub(crate) async fn repair_from(
        &self,
        peer: &ClusterMember,
    ) -> Result<Round, StoreError<S::Error>> {
        let transport = |source: Status| StoreError::Transport {
            peer: peer.public_addr,
            source,
        };
        let client = self.client(peer);
        self.probe_clock(&client, peer).await;
        // Watching before the start is read: a delete taken from then on bounds what the
        // round confirms.
        let late = self.replica.watch_tombstones();
        let start = self.node.clock().get_time();
        let mut confirmed = start;
        let mut repaired = 0;
        // Our keyspaces by name (the replica keeps them sorted), sent in pages.
        let ours: Vec<(String, u64)> = self
            .replica
            .slots()
            .into_iter()
            .map(|(name, slot)| {
                let total = slot.with_state(|s| s.digest().total());
                (name, total)
            })
            .collect();
        let budget = self.config.message_budget();
        let mut after: Option<String> = None;
        loop {
            let first = after
                .as_deref()
                .map_or(0, |a| ours.partition_point(|(name, _)| name.as_str() <= a));
            let mut bytes = 0;
            let mut end = first;
            while end < ours.len() && (end == first || bytes + ours[end].0.len() + 16 <= budget) {
                bytes += ours[end].0.len() + 16;
                end += 1;
            }
            let until = (end < ours.len()).then(|| ours[end - 1].0.clone());
            let request = DigestRequest {
                clock: self.node.clock().get_time(),
                after: after.clone(),
                until: until.clone(),
                totals: ours[first..end].to_vec(),
            };
            let reply = client
                .send(&request)
                .await
                .and_then(|r| self.received(r))
                .map_err(transport)?;
            self.register(reply.clock, peer).map_err(transport)?;
            // A reply must stay in the range asked: what it leaves out counts as equal, so
            // a reply reaching outside it would confirm keyspaces that were never compared.
            let in_range = |name: &str| {
                after.as_deref().is_none_or(|a| name > a)
                    && until.as_deref().is_none_or(|u| name <= u)
            };
            let outside = reply.digests.iter().any(|d| !in_range(&d.keyspace))
                || reply.resume_after.as_deref().is_some_and(|r| !in_range(r));
            if outside {
                return Err(transport(Status::invalid_payload(
                    "digest reply outside the requested range",
                )));
            }
            confirmed = confirmed.min(reply.floor);
            // Keyspaces are independent: several at a time, so that many small ones cost
            // round trips in parallel rather than one after the other.
            let mut keyspaces = futures::stream::iter(reply.digests)
                .map(|digest| async {
                    // Never closed; without a turn (it cannot happen) the keyspace goes on.
                    let _turn = self.keyspace_turns.acquire().await.ok();
                    self.repair_keyspace(&client, peer, reply.clock, digest)
                        .await
                })
                .buffer_unordered(KEYSPACES_IN_PARALLEL);
            while let Some(outcome) = keyspaces.next().await {
                let (taken, unconfirmed) = outcome?;
                repaired += taken;
                if let Some(unconfirmed) = unconfirmed {
                    confirmed = confirmed.min(unconfirmed);
                }
            }
            let next = match (reply.resume_after, until) {
                (Some(resume), _) => resume,
                (None, Some(until)) => until,
                (None, None) => break,
            };
            after = Some(next);
        }
        Ok(Round {
            repaired,
            confirmed: Confirmed {
                at: confirmed,
                late,
            },
        })
    }

    /// Repairs one keyspace from a peer's digest of it; returns how many keys were repaired
    /// and the oldest local tombstone the peer lacks.
    async fn repair_keyspace(
        &self,
        client: &RpcClient<StoreService<S>>,
        peer: &ClusterMember,
        peer_clock: HLCTimestamp,
        digest: WireDigest,
    ) -> Result<(usize, Option<HLCTimestamp>), StoreError<S::Error>> {
        let transport = |source: Status| StoreError::Transport {
            peer: peer.public_addr,
            source,
        };
        let keyspace = digest.keyspace;
        let bits = digest.bits;
        if bits > MAX_DIGEST_BITS
            || !(digest.buckets.is_empty() || digest.buckets.len() == 1 << bits)
            || self.replica.check_name(&keyspace).is_err()
        {
            warn!(peer = %peer.public_addr, %keyspace, "malformed digest from a peer; keyspace skipped");
            return Ok((0, Some(HLCTimestamp::new(0, 0, 0))));
        }
        if let Err(error) = self.replica.slot_or_create(&keyspace) {
            // This node cannot hold the keyspace (its keyspace limit): it confirms nothing.
            warn!(peer = %peer.public_addr, %keyspace, %error, "cannot take a keyspace from a peer");
            return Ok((0, Some(HLCTimestamp::new(0, 0, 0))));
        }
        // A watermark is a stamp the peer issued or took: never ahead of its clock.
        let mut watermark = digest.watermark.filter(|w| *w <= peer_clock);
        let mut unconfirmed: Option<HLCTimestamp> = None;
        let mut repaired = 0;
        let mut obsolete = Vec::new();
        let differing = self
            .replica
            .differing_buckets(&keyspace, bits, &digest.buckets);
        let mut rest = differing.as_slice();
        while !rest.is_empty() {
            let reply = client
                .send(&BucketRequest {
                    keyspace: keyspace.clone(),
                    bits,
                    buckets: rest[..rest.len().min(BUCKETS_PER_REQUEST)].to_vec(),
                })
                .await
                .and_then(|r| self.received(r))
                .map_err(transport)?;
            let complete = reply.complete as usize;
            if complete == 0 || complete > rest.len().min(BUCKETS_PER_REQUEST) {
                return Err(transport(Status::invalid_payload(format!(
                    "bucket reply completed {complete} of {} buckets",
                    rest.len()
                ))));
            }
            let mut skewed = 0;
            let ceiling = self.node.clock().drift_ceiling();
            let entries: Vec<BucketEntry> = reply
                .entries
                .into_iter()
                .filter(|e| {
                    let ok = e.timestamp.millis() <= ceiling;
                    skewed += usize::from(!ok);
                    ok
                })
                .map(|e| BucketEntry {
                    key: e.key,
                    timestamp: e.timestamp,
                    tombstone: e.tombstone,
                })
                .collect();
            if skewed > 0 {
                // Entries are missing from the comparison: neither forget nor confirm
                // anything against this peer this round.
                Counters::add(&self.replica.counters.clock_skew_rejected, skewed);
                warn!(peer = %peer.public_addr, %keyspace, entries = skewed, "peer holds entries stamped beyond the clock drift bound; ignored");
                watermark = None;
                unconfirmed = Some(HLCTimestamp::new(0, 0, 0));
            }
            let buckets = &rest[..complete];
            let plan = self
                .replica
                .plan(&keyspace, bits, buckets, &entries, watermark);
            if let Some(t) = plan.unconfirmed {
                unconfirmed = Some(unconfirmed.map_or(t, |u| u.min(t)));
            }
            obsolete.extend_from_slice(&plan.obsolete);
            if !plan.tombstones.is_empty() {
                let changes = plan
                    .tombstones
                    .iter()
                    .map(|e| Change {
                        mutation: Mutation::from(*e),
                        data: None,
                    })
                    .collect();
                repaired += self.apply(&keyspace, changes).await?;
            }
            for page in plan.fetch.chunks(FETCH_PAGE) {
                // What another round (or replication) took meanwhile is not fetched again.
                let keys = self.replica.still_winning(&keyspace, page);
                let mut fetch = Fetch::new(
                    client,
                    &self.node,
                    &self.replica,
                    &keyspace,
                    &keys,
                    FETCH_PAGE,
                );
                // Each reply is applied before the next is asked for: at most one message
                // of documents is held per keyspace.
                while let Some(versions) = fetch.next_reply().await.map_err(transport)? {
                    repaired += self.apply(&keyspace, versions).await?;
                }
            }
            rest = &rest[complete..];
        }
        if let Some(watermark) = watermark {
            // After taking what the peer holds: raising the watermark first would refuse it.
            let forgotten = self
                .replica
                .forget_obsolete(&keyspace, watermark, &obsolete)
                .await?;
            if forgotten > 0 {
                info!(peer = %peer.public_addr, %keyspace, forgotten, "forgot copies the cluster purged past (deleted while this node was away)");
            }
        }
        Ok((repaired, unconfirmed))
    }

    /// Applies repaired changes and counts them as repaired keys; moves the clock past the
    /// newest applied stamp, so later local writes are stamped after them. Returns how many
    /// applied.
    async fn apply(
        &self,
        keyspace: &str,
        changes: Vec<Change>,
    ) -> Result<usize, StoreError<S::Error>> {
        let applied = self.replica.apply(keyspace, changes).await?;
        Counters::add(&self.replica.counters.keys_repaired, applied.len());
        if let Some(newest) = applied.iter().map(|c| c.mutation.timestamp()).max() {
            let _ = self.node.clock().advance_past(newest);
        }
        Ok(applied.len())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datacake_node::{Consistency, DatacakeNode};

    use super::*;
    use crate::replica::KeyspaceLimits;
    use crate::test_utils::MemStore;
    use crate::testing::store_and_bare_peer;

    /// The repair task's state on `node` (node 2) over a fresh replica, for a test to run
    /// rounds itself.
    async fn repairer_on(
        node: &DatacakeNode,
        limits: KeyspaceLimits,
        max_message_size: usize,
    ) -> Repairer<MemStore> {
        let (replica, _) = Replica::load(MemStore::new(), limits).await.unwrap();
        Repairer::new(
            Arc::new(replica),
            Arc::new(Members::new(2, [])),
            node.handle(),
            StoreConfig {
                max_message_size,
                repair_interval: Duration::from_secs(3_600),
                ..StoreConfig::default()
            },
        )
    }

    /// A round confirms only what this node held when it began: a delete stamped before the
    /// round's start but taken from a peer after it (a batch in transit, a lagging clock) was
    /// never compared with the peer, so the purge keeps it. Before, the purge dropped it on
    /// the round's word while the peer still served the document.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_taken_after_a_round_began_is_not_purged_on_its_word() {
        let (a, store, b) = store_and_bare_peer(1 << 20).await;
        store
            .handle()
            .put("ks", 7, "v", Consistency::None)
            .await
            .unwrap();
        // (Apart in time from the round's start, so a stamp fits between them.)
        tokio::time::sleep(Duration::from_millis(20)).await;
        let limits = KeyspaceLimits {
            max_keyspaces: 16,
            max_name_len: 16,
        };
        let repairer = repairer_on(&b, limits, 1 << 20).await;
        let _ = repairer
            .members
            .observe(&[a.me().clone()], b.handle().clock().wall_millis());
        let round = repairer
            .repair_from(a.me())
            .await
            .expect("a complete round");
        let put = repairer.replica.entries_of("ks", &[7])[0].timestamp;
        let stamp = HLCTimestamp::new(put.millis() + 10, 0, 3);
        assert!(put < stamp && stamp < round.confirmed.at);
        repairer
            .replica
            .apply(
                "ks",
                vec![Change {
                    mutation: Mutation::Delete {
                        key: 7,
                        timestamp: stamp,
                    },
                    data: None,
                }],
            )
            .await
            .unwrap();
        let tombstone = |r: &Repairer<MemStore>| {
            r.replica
                .entries_of("ks", &[7])
                .first()
                .is_some_and(|e| e.tombstone)
        };
        assert!(tombstone(&repairer), "the delete applies");
        repairer.purge(&HashMap::from([(1, round.confirmed)])).await;
        assert!(
            tombstone(&repairer),
            "node 1 never saw the delete: it stays"
        );
        // Rounds without deletes do not pile up watches: only the live ones are kept.
        for _ in 0..5 {
            repairer
                .repair_from(a.me())
                .await
                .expect("a complete round");
        }
        assert!(
            repairer.replica.watches_kept() <= 1,
            "{}",
            repairer.replica.watches_kept()
        );
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }

    /// A round runs within the repair round timeout: against a peer whose reads take longer,
    /// it is cut off, counted as a failure and confirms nothing (it returns no `Round`, so
    /// the purge keeps the peer's last confirmation), while what it applied before the cut
    /// (here the peer's delete) stays. Before, nothing bounded a round but its single calls.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_past_its_deadline_is_cut_off_and_confirms_nothing() {
        use crate::test_utils::{FaultyStorage, ReadHook};

        let slow: ReadHook = Arc::new(|| Box::pin(tokio::time::sleep(Duration::from_secs(2))));
        let storage = FaultyStorage::with_read_hook(MemStore::new(), slow);
        let (a, store, b) = crate::testing::store_over_and_bare_peer(storage, 1 << 20).await;
        let handle = store.handle();
        handle.put("ks", 1, "v", Consistency::None).await.unwrap();
        handle.put("ks", 2, "v", Consistency::None).await.unwrap();
        handle.del("ks", 2, Consistency::None).await.unwrap();
        let limits = KeyspaceLimits {
            max_keyspaces: 16,
            max_name_len: 16,
        };
        let mut repairer = repairer_on(&b, limits, 1 << 20).await;
        repairer.config.repair_round_timeout = Duration::from_millis(500);
        let outcome = repairer.counted_round(a.me()).await;
        assert!(
            matches!(outcome, Err(StoreError::RepairTimedOut { .. })),
            "{outcome:?}"
        );
        let counters = &repairer.replica.counters;
        assert_eq!(
            (counters.failures.get(), counters.repairs_run.get()),
            (1, 0)
        );
        let held = repairer.replica.entries_of("ks", &[1, 2]);
        assert!(
            held.iter().any(|e| e.key == 2 && e.tombstone),
            "the delete applied before the cut stays: {held:?}"
        );
        assert!(
            held.iter().all(|e| e.key != 1),
            "the slow document was not taken"
        );
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }

    /// A keyspace large enough that each bucket request covers more entries than one step
    /// of the peer's scan (`SCAN_STEP_ENTRIES`; 60,000 keys over 4,096 buckets put about
    /// 7,300 in each request of `BUCKETS_PER_REQUEST`): the peer reads each request in
    /// steps and replies only with the buckets it read whole, and a single round still takes
    /// every document and tombstone. (A reply claiming buckets it did not read would leave
    /// them for later rounds, or, with local copies there, have them judged as the peer's
    /// gaps.) Replies cut by the message budget are covered against `KeyspaceState` by
    /// `service::tests::a_scan_in_steps_that_stops_early_gives_the_reply_of_a_full_scan`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_round_takes_a_keyspace_whose_bucket_requests_are_read_in_steps() {
        const KEYS: u64 = 60_000;
        const DELETED: u64 = 5_000;
        let (a, store, b) = store_and_bare_peer(1 << 20).await;
        let handle = store.handle();
        handle
            .put_many("ks", (0..KEYS).map(|i| (i, "v")), Consistency::None)
            .await
            .unwrap();
        handle
            .del_many("ks", 0..DELETED, Consistency::None)
            .await
            .unwrap();
        let limits = KeyspaceLimits {
            max_keyspaces: 16,
            max_name_len: 16,
        };
        let repairer = repairer_on(&b, limits, 1 << 20).await;
        let round = repairer
            .repair_from(a.me())
            .await
            .expect("a complete round");
        assert_eq!(round.repaired, KEYS as usize);
        let held = repairer.replica.metadata("ks");
        assert_eq!(held.len(), KEYS as usize);
        assert_eq!(
            held.iter().filter(|(_, _, tombstone)| *tombstone).count(),
            DELETED as usize
        );
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }

    /// What one bucket request makes a node do is bounded whatever the peer asks: a reply
    /// collects at most `MAX_BUCKET_REPLY_ENTRIES` entries (and the rest of the bucket it is
    /// in) even when the message budget would take the whole keyspace, and a resolution
    /// far coarser than the node's digest (whose buckets, each read and sent whole, would
    /// be most of the keyspace) is refused. Before, every bucket of the 40,000 keys came
    /// back in one reply, and one bucket at 0 bits was the whole keyspace.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_request_is_served_a_bounded_reply_and_not_at_a_coarse_resolution() {
        use crate::service::MAX_BUCKET_REPLY_ENTRIES;

        const KEYS: u64 = 40_000;
        const MESSAGE_SIZE: usize = 16 << 20;
        let (a, store, b) = store_and_bare_peer(MESSAGE_SIZE).await;
        store
            .handle()
            .put_many("ks", (0..KEYS).map(|i| (i, "v")), Consistency::None)
            .await
            .unwrap();
        let limits = KeyspaceLimits {
            max_keyspaces: 16,
            max_name_len: 16,
        };
        let repairer = repairer_on(&b, limits, MESSAGE_SIZE).await;
        let client = repairer.client(a.me());
        let ask = |bits: u8, buckets: Vec<u32>| {
            let request = BucketRequest {
                keyspace: "ks".into(),
                bits,
                buckets,
            };
            let client = &client;
            let repairer = &repairer;
            async move {
                client
                    .send(&request)
                    .await
                    .and_then(|r| repairer.received(r))
            }
        };
        // 40,000 keys keep the finest digest (4,096 buckets of about 10).
        let every_bucket: Vec<u32> = (0..1 << MAX_DIGEST_BITS).collect();
        let reply = ask(MAX_DIGEST_BITS, every_bucket).await.unwrap();
        let complete = reply.complete as usize;
        assert!(
            (1..1 << MAX_DIGEST_BITS).contains(&complete),
            "{complete} buckets of 4,096 in one reply"
        );
        assert!(
            reply.entries.len() <= MAX_BUCKET_REPLY_ENTRIES + 100,
            "{} entries in one reply",
            reply.entries.len()
        );
        // Two bits coarser than the digest (the keyspace may have grown since the peer read
        // it) is served; three is not.
        let reply = ask(MAX_DIGEST_BITS - 2, vec![0]).await.unwrap();
        assert_eq!(reply.complete, 1);
        for bits in [0, MAX_DIGEST_BITS - 3] {
            // (An answer prints as its number of entries.)
            let answer = ask(bits, vec![0]).await.map(|r| r.entries.len());
            assert!(
                matches!(&answer, Err(e) if e.to_string().contains("too coarse")),
                "{bits} bits: {answer:?}"
            );
        }
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }

    /// With 1 MiB messages, one round over 6,000 keyspaces of 250-byte names needs several
    /// pages each way (the requester's totals of 4,000 keyspaces, about 1.1 MB; the
    /// responder's digests, about 1.8 MB); a single round still covers every keyspace, which
    /// is what lets it confirm anything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_round_covers_every_keyspace_across_pages() {
        const KEYSPACES: usize = 6_000;
        let name = |i: usize| format!("{}{i:05}", "k".repeat(245));
        let (a, store, b) = store_and_bare_peer(1 << 20).await;
        for i in 0..KEYSPACES {
            store
                .handle()
                .put(&name(i), 1, "v", Consistency::None)
                .await
                .unwrap();
        }
        // Node 2 holds two keyspaces in three with another document, so its totals alone
        // exceed one page too.
        let limits = KeyspaceLimits {
            max_keyspaces: 10_000,
            max_name_len: 256,
        };
        let repairer = repairer_on(&b, limits, 1 << 20).await;
        let replica = &repairer.replica;
        for i in (0..KEYSPACES).filter(|i| i % 3 != 0) {
            replica
                .apply_local(
                    replica.slot_or_create(&name(i)).unwrap(),
                    vec![Change::local(2, Some(bytes::Bytes::from_static(b"mine")))],
                    b.handle(),
                )
                .await
                .unwrap();
        }
        let round = repairer
            .repair_from(a.me())
            .await
            .expect("a complete round");
        assert_eq!(round.repaired, KEYSPACES);
        for i in 0..KEYSPACES {
            let held = replica.metadata(&name(i));
            assert!(held.iter().any(|m| m.0 == 1), "keyspace {i} was taken");
        }
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }
}
