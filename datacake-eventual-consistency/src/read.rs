//! Reads: a replica's own versions of some ids ([`read_versions`], which serves peers'
//! reads and repair fetches too), and reads at a consistency level ([`Shared::read`]): ask
//! the live replicas, return the newest version once the level's acknowledgements are in,
//! and repair the stale replicas that answered (read repair).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datacake_node::{AckProgress, AckTally, ClusterMember, Consistency, NodeId, Requirement};
use datacake_rpc::{RpcClient, Status};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, warn};

use datacake_crdt::HLCTimestamp;

use crate::config::{ENTRY_OVERHEAD, MAX_KEYS_PER_REQUEST, MUTATION_OVERHEAD};
use crate::error::StoreError;
use crate::keyspace::Mutation;
use crate::messages::ReadRequest;
use crate::replica::{Change, Counters, Replica};
use crate::replication::Outbound;
use crate::service::StoreService;
use crate::storage::{Document, Key, Storage};
use crate::store::Shared;

/// `keys` without repeats, in their first order.
pub(crate) fn dedup(keys: impl IntoIterator<Item = Key>) -> Vec<Key> {
    let mut seen = HashSet::new();
    keys.into_iter().filter(|k| seen.insert(*k)).collect()
}

/// The wire size of a version.
fn size(change: &Change) -> usize {
    match &change.data {
        Some(data) => MUTATION_OVERHEAD + data.len(),
        None => ENTRY_OVERHEAD,
    }
}

/// Most ids asked of the storage in one call while serving a read.
const MAX_CHUNK: usize = 1024;

/// This replica's versions of the first of `keys` (a document, or a tombstone as a delete;
/// ids it holds nothing for are left out), up to `budget` bytes: returns the versions and
/// how many of `keys` they cover (at least one, so a caller always progresses).
///
/// The storage is asked for as many documents at a time as the rest of the budget holds at
/// the size of the largest document read so far (starting with one, and doubling while only
/// ids without a document came back), so a read loads at most its budget and one document
/// more when the documents are of about one size. A document much larger than every one
/// before it in the read can still make its call load past the budget, by the documents of
/// that call. An unbounded read (`usize::MAX`, the local side of a read at a level) asks for
/// 1,024 ids at a time.
pub(crate) async fn read_versions<S: Storage>(
    replica: &Replica<S>,
    keyspace: &str,
    keys: &[Key],
    budget: usize,
) -> Result<(Vec<Change>, usize), StoreError<S::Error>> {
    let mut versions = Vec::new();
    let mut bytes = 0;
    let mut served = 0;
    let mut largest: Option<usize> = None;
    let mut chunk = if budget == usize::MAX { MAX_CHUNK } else { 1 };
    while served < keys.len() {
        let ids = &keys[served..keys.len().min(served + chunk)];
        // The documents first: a stored document is its own version. Only the ids without
        // one need the metadata (for their tombstones).
        let mut docs: HashMap<Key, Document> = replica
            .storage
            .multi_get(keyspace, ids.to_vec())
            .await
            .map_err(StoreError::Storage)?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
        if let Some(most) = docs
            .values()
            .map(|d| MUTATION_OVERHEAD + d.data.len())
            .max()
        {
            largest = Some(largest.map_or(most, |l| l.max(most)));
        }
        let missing: Vec<Key> = ids
            .iter()
            .filter(|k| !docs.contains_key(k))
            .copied()
            .collect();
        // Most reads find every document: they skip the metadata (and its locks) entirely.
        let tombstones: HashMap<Key, HLCTimestamp> = if missing.is_empty() {
            HashMap::new()
        } else {
            replica
                .entries_of(keyspace, &missing)
                .into_iter()
                .filter(|e| e.tombstone)
                .map(|e| (e.key, e.timestamp))
                .collect()
        };
        for id in ids {
            let version = match docs.remove(id) {
                Some(d) => Some(Change {
                    mutation: Mutation::Put {
                        key: d.id,
                        timestamp: d.last_updated,
                    },
                    data: Some(d.data),
                }),
                // A live entry whose document was deleted between the two reads is left
                // out (this replica then simply does not contribute it).
                None => tombstones.get(id).map(|timestamp| Change {
                    mutation: Mutation::Delete {
                        key: *id,
                        timestamp: *timestamp,
                    },
                    data: None,
                }),
            };
            if let Some(version) = version {
                let cost = size(&version);
                if bytes + cost > budget && served > 0 {
                    return Ok((versions, served));
                }
                bytes += cost;
                versions.push(version);
            }
            served += 1;
        }
        chunk = match largest {
            None => chunk.saturating_mul(2).min(MAX_CHUNK),
            Some(largest) => (budget.saturating_sub(bytes) / largest).clamp(1, MAX_CHUNK),
        };
    }
    Ok((versions, served))
}

/// A peer's versions of some ids, asked for in requests of at most `page_len` (and
/// [`MAX_KEYS_PER_REQUEST`]) ids and taken one reply at a time: a caller that handles each
/// reply before asking for the next ([`next_reply`](Self::next_reply)) holds at most one
/// message of the peer's documents.
pub(crate) struct Fetch<'a, S> {
    client: &'a RpcClient<StoreService<S>>,
    node: &'a datacake_node::DatacakeHandle,
    replica: &'a Replica<S>,
    keyspace: &'a str,
    rest: &'a [Key],
    page_len: usize,
}

impl<'a, S: Storage> Fetch<'a, S> {
    /// A fetch of `keys` of `keyspace` from the peer behind `client`.
    pub(crate) fn new(
        client: &'a RpcClient<StoreService<S>>,
        node: &'a datacake_node::DatacakeHandle,
        replica: &'a Replica<S>,
        keyspace: &'a str,
        keys: &'a [Key],
        page_len: usize,
    ) -> Self {
        Self {
            client,
            node,
            replica,
            keyspace,
            rest: keys,
            page_len: page_len.clamp(1, MAX_KEYS_PER_REQUEST),
        }
    }

    /// The versions of the next reply (those of ids it was asked for, stamped within the
    /// drift bound), or `None` once every id was served.
    pub(crate) async fn next_reply(&mut self) -> Result<Option<Vec<Change>>, Status> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (node, replica) = (self.node, self.replica);
        let page = &self.rest[..self.rest.len().min(self.page_len)];
        let reply = self
            .client
            .send(&ReadRequest {
                clock: node.clock().get_time(),
                keyspace: self.keyspace.to_owned(),
                keys: page.to_vec(),
            })
            .await?;
        Counters::add(&replica.counters.repair_bytes, reply.as_bytes().len());
        let reply = reply.into_inner().deserialize_view()?;
        let served = reply.served as usize;
        if served == 0 || served > page.len() {
            return Err(Status::invalid_payload(format!(
                "read reply served {served} of {} ids",
                page.len()
            )));
        }
        if node.clock().register_ts(reply.clock).is_err() {
            Counters::add(&replica.counters.clock_skew_rejected, 1);
            return Err(Status::invalid_payload("peer clock beyond the drift bound"));
        }
        let asked: HashSet<Key> = page[..served].iter().copied().collect();
        let ceiling = node.clock().drift_ceiling();
        let mut out = Vec::with_capacity(reply.entries.len());
        for version in reply.entries {
            if !asked.contains(&version.key) {
                continue;
            }
            if version.timestamp.millis() > ceiling {
                Counters::add(&replica.counters.clock_skew_rejected, 1);
                continue;
            }
            out.push(Change::from(version));
        }
        self.rest = &self.rest[served..];
        Ok(Some(out))
    }
}

/// Every version a peer holds of `keys`, asking in pages of at most `page_len` (and
/// [`MAX_KEYS_PER_REQUEST`]) ids until every id was served (all of them held at once: for
/// a read, which returns them).
pub(crate) async fn fetch_versions<S: Storage>(
    client: &RpcClient<StoreService<S>>,
    node: &datacake_node::DatacakeHandle,
    replica: &Replica<S>,
    keyspace: &str,
    keys: &[Key],
    page_len: usize,
) -> Result<Vec<Change>, Status> {
    let mut fetch = Fetch::new(client, node, replica, keyspace, keys, page_len);
    let mut out = Vec::new();
    while let Some(versions) = fetch.next_reply().await? {
        out.extend(versions);
    }
    Ok(out)
}

/// The newest version of each key among `answers` (the local replica's and peers').
fn newest<'a>(answers: impl IntoIterator<Item = &'a [Change]>) -> Vec<Change> {
    let mut newest: HashMap<Key, &Change> = HashMap::new();
    for versions in answers {
        for version in versions {
            let key = version.mutation.key();
            match newest.get(&key) {
                Some(held) if !version.beats(held) => {}
                _ => {
                    newest.insert(key, version);
                }
            }
        }
    }
    newest.into_values().cloned().collect()
}

/// The versions of `newest` that an answer holding `versions` lacks (holds older, or not at
/// all): what read repair sends it.
fn stale_in(newest: &[Change], versions: &[Change]) -> Vec<Change> {
    let held: HashMap<Key, &Change> = versions.iter().map(|v| (v.mutation.key(), v)).collect();
    newest
        .iter()
        .filter(|n| held.get(&n.mutation.key()).is_none_or(|mine| n.beats(mine)))
        .cloned()
        .collect()
}

/// How long a read waits for the replicas it asked first before it asks every other live
/// replica the level counts too (as a failed first answer does at once): far above a
/// healthy round trip, far below the read timeout.
const SPECULATE_AFTER: Duration = Duration::from_millis(20);

/// A read asks the same replicas first as the previous reads of its run of this many, then
/// the next ones: load spreads over the replicas, and back-to-back reads keep using one
/// warm connection. (Measured on this project's 2-core VM with a 3-node cluster: choosing
/// anew on every read made each read wake the other worker thread, 55-75 µs at p50 against
/// 19-28 µs with runs of reads; `benchmarks`, suite `ec`.)
const READS_PER_CHOICE: usize = 64;

/// One peer's answer to a read: its versions, or why it failed.
type Answer = (ClusterMember, Result<Vec<Change>, Status>);

/// A read's call to one peer.
type Call = BoxFuture<'static, Answer>;

/// The peers that answered a read, with their versions.
type Answers = Vec<(ClusterMember, Vec<Change>)>;

/// Polls every call of `calls` and takes out the first that is done. `Ready(None)` when
/// there is none left. A read has a handful of calls: polling each on every wake-up costs
/// less than a `FuturesUnordered` (measured on this project's 2-core VM: a lone call
/// awaited through one cost a wake-up of the other worker thread per read, and four times
/// the latency).
fn poll_answer(calls: &mut Vec<Call>, cx: &mut Context<'_>) -> Poll<Option<Answer>> {
    if calls.is_empty() {
        return Poll::Ready(None);
    }
    for i in 0..calls.len() {
        if let Poll::Ready(answer) = calls[i].as_mut().poll(cx) {
            drop(calls.swap_remove(i));
            return Poll::Ready(Some(answer));
        }
    }
    Poll::Pending
}

/// The next of `calls` to finish (see [`poll_answer`]).
async fn next_answer(calls: &mut Vec<Call>) -> Option<Answer> {
    std::future::poll_fn(|cx| poll_answer(calls, cx)).await
}

impl<S: Storage> Shared<S> {
    /// Reads `keys` of `keyspace` at `level`: local for [`Consistency::None`], otherwise
    /// from the replicas until the level's acknowledgements are in (the local replica
    /// counts as one, as for writes). Returns the newest live documents; replicas that
    /// answered with older versions (or nothing) are repaired in the background.
    ///
    /// Every read goes through here (a local read is one at [`Consistency::None`]); its
    /// latency, whatever the outcome, is recorded in `datacake_store_read_duration_seconds{level}`.
    pub(crate) async fn read(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
        level: Consistency,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        let started = std::time::Instant::now();
        let result = self.read_untimed(keyspace, keys, level).await;
        crate::metrics::record_latency(crate::metrics::READ_DURATION, level, started);
        result
    }

    async fn read_untimed(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
        level: Consistency,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.replica.check_name(keyspace)?;
        let keys = dedup(keys);
        let plan = self.plan(level, self.node.live_members_shared())?;
        let Some(requirement) = &plan.requirement else {
            return self.read_local(keyspace, keys).await;
        };
        let keys: Arc<[Key]> = keys.into();
        let local = async {
            let (versions, _) = read_versions(&self.replica, keyspace, &keys, usize::MAX).await?;
            Ok(versions)
        };
        let (local, mut answers, late) = self
            .ask(keyspace, &keys, requirement, &plan.counted, local)
            .await?;
        for (_, versions) in &mut answers {
            self.replica.drop_purged(keyspace, versions);
        }
        let newest = newest(
            std::iter::once(local.as_slice()).chain(answers.iter().map(|(_, v)| v.as_slice())),
        );
        self.repair_local(keyspace, stale_in(&newest, &local));
        for (peer, versions) in &answers {
            self.repair_peer(keyspace, peer, stale_in(&newest, versions));
        }
        self.repair_late(keyspace, late, &newest);
        Ok(newest
            .into_iter()
            .filter_map(|c| {
                let data = c.data?;
                Some(Document::new(
                    c.mutation.key(),
                    c.mutation.timestamp(),
                    data,
                ))
            })
            .collect())
    }

    /// The documents this node holds (no peer asked); [`read`](Self::read) at
    /// [`Consistency::None`].
    async fn read_local(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.replica.check_name(keyspace)?;
        self.replica
            .storage
            .multi_get(keyspace, dedup(keys))
            .await
            .map_err(StoreError::Storage)
    }

    /// A call reading `keys` from `peer`, owning what it needs (it may outlive the read).
    fn call(
        &self,
        keyspace: &str,
        keys: &Arc<[Key]>,
        peer: &ClusterMember,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let mut client = RpcClient::<StoreService<S>>::new(
            self.node
                .network()
                .get_or_connect_node(peer.node_id, peer.public_addr),
        );
        client.set_timeout(self.config.rpc_timeout);
        let (node, replica) = (self.node.clone(), self.replica.clone());
        let (keyspace, keys, peer) = (keyspace.to_owned(), keys.clone(), peer.clone());
        async move {
            let page = MAX_KEYS_PER_REQUEST;
            let versions = fetch_versions(&client, &node, &replica, &keyspace, &keys, page).await;
            (peer, versions)
        }
    }

    /// Asks the replicas of `counted` for their versions of `keys` until the answers meet
    /// `requirement`: first as few as can meet it (rotating over the replicas), then, if one
    /// of them fails or none has answered within [`SPECULATE_AFTER`], every other one too.
    /// Runs `local` (this node's own read) while the first calls are under way. Returns its
    /// versions, the answers, and the calls still under way (not cancelled: they finish in
    /// the background and their answers feed read repair).
    async fn ask(
        &self,
        keyspace: &str,
        keys: &Arc<[Key]>,
        requirement: &Requirement,
        counted: &[ClusterMember],
        local: impl Future<Output = Result<Vec<Change>, StoreError<S::Error>>>,
    ) -> Result<(Vec<Change>, Answers, Vec<Call>), StoreError<S::Error>> {
        let askable = |id: NodeId| counted.iter().any(|m| m.node_id == id);
        let mut tally = AckTally::new(requirement, askable);
        let offset = self.reads.fetch_add(1, Ordering::Relaxed) / READS_PER_CHOICE;
        let mut asked: Vec<NodeId> = requirement.first_choice(offset, askable);
        let deadline = tokio::time::Instant::now() + self.config.read_timeout;
        let mut answers = Vec::new();
        let mut calls: Vec<Call> = counted
            .iter()
            .filter(|m| asked.contains(&m.node_id))
            .map(|peer| Box::pin(self.call(keyspace, keys, peer)) as Call)
            .collect();
        // Send the requests, then read locally while they travel.
        let mut early = Vec::new();
        while let Poll::Ready(Some(answer)) =
            std::future::poll_fn(|cx| Poll::Ready(poll_answer(&mut calls, cx))).await
        {
            early.push(answer);
        }
        let local = match local.await {
            Ok(local) => local,
            Err(error) => return Err(self.give_up(calls, error)),
        };
        let mut widen = false;
        for answer in early {
            let failed = answer.1.is_err();
            match self.record(&mut tally, requirement, answer, &mut answers) {
                Ok(true) => return Ok((local, answers, calls)),
                Ok(false) => widen |= failed,
                Err(error) => return Err(self.give_up(calls, error)),
            }
        }
        if !widen {
            let speculate = SPECULATE_AFTER.min(self.config.read_timeout);
            let wave = self.first_wave(&mut calls, &mut tally, requirement, &mut answers);
            match tokio::time::timeout(speculate, wave).await {
                Ok(Ok(true)) => return Ok((local, answers, calls)),
                Ok(Err(error)) => return Err(self.give_up(calls, error)),
                // A call failed, or the speculation delay passed.
                Ok(Ok(false)) | Err(_) => {}
            }
        }
        // Every other replica the level counts, at once.
        for peer in counted {
            if !asked.contains(&peer.node_id) {
                asked.push(peer.node_id);
                calls.push(Box::pin(self.call(keyspace, keys, peer)));
            }
        }
        let rest = async {
            while let Some(answer) = next_answer(&mut calls).await {
                if self.record(&mut tally, requirement, answer, &mut answers)? {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let error = match tokio::time::timeout_at(deadline, rest).await {
            Ok(Ok(true)) => return Ok((local, answers, calls)),
            Ok(Err(error)) => error,
            Ok(Ok(false)) | Err(_) => self.read_timed_out(&tally, requirement),
        };
        Err(self.give_up(calls, error))
    }

    /// Waits on the first calls: `Ok(true)` once the level is met, `Ok(false)` as soon as
    /// one fails (without making the level impossible).
    async fn first_wave(
        &self,
        calls: &mut Vec<Call>,
        tally: &mut AckTally,
        requirement: &Requirement,
        answers: &mut Answers,
    ) -> Result<bool, StoreError<S::Error>> {
        while let Some(answer) = next_answer(calls).await {
            let failed = answer.1.is_err();
            if self.record(tally, requirement, answer, answers)? {
                return Ok(true);
            }
            if failed {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Lets `calls` finish in a task of their own (for the reason [`Self::repair_late`]
    /// gives) and returns `error`.
    fn give_up(&self, calls: Vec<Call>, error: StoreError<S::Error>) -> StoreError<S::Error> {
        if !calls.is_empty() {
            self.node.spawn_task(async move {
                futures::future::join_all(calls).await;
            });
        }
        error
    }

    /// Counts one peer's answer: `Ok(true)` once the level is met, an error once it no
    /// longer can be.
    fn record(
        &self,
        tally: &mut AckTally,
        requirement: &Requirement,
        (peer, result): Answer,
        answers: &mut Answers,
    ) -> Result<bool, StoreError<S::Error>> {
        match result {
            Ok(versions) => {
                let progress = tally.ack(peer.node_id);
                answers.push((peer, versions));
                Ok(progress == AckProgress::Met)
            }
            Err(status) => {
                debug!(peer = %peer.public_addr, error = %status, "read from a replica failed");
                if tally.fail(peer.node_id) == AckProgress::Impossible {
                    return Err(StoreError::ReplicaFailed {
                        level: requirement.level(),
                        acknowledged: tally.acknowledged(),
                        required: requirement.required(),
                        node_id: peer.node_id,
                        peer: peer.public_addr,
                        source: Box::new(status),
                    });
                }
                Ok(false)
            }
        }
    }

    fn read_timed_out(&self, tally: &AckTally, requirement: &Requirement) -> StoreError<S::Error> {
        StoreError::Consistency(datacake_node::ConsistencyError::ConsistencyFailure {
            responses: tally.acknowledged(),
            required: requirement.required(),
            timeout: self.config.read_timeout,
        })
    }

    /// Sends the local replica `missing` (the newest versions it lacked) through the write
    /// path, in a task of its own.
    fn repair_local(&self, keyspace: &str, missing: Vec<Change>) {
        if missing.is_empty() {
            return;
        }
        Counters::add(&self.replica.counters.read_repairs, missing.len());
        let replica = self.replica.clone();
        let keyspace = keyspace.to_owned();
        self.node.spawn_task(async move {
            if let Err(error) = replica.apply(&keyspace, missing).await {
                warn!(%keyspace, error = %datacake_rpc::error_chain(&error), "read repair of the local replica failed");
            }
        });
    }

    /// Sends `peer` `missing` (the newest versions it lacked) through its replication queue.
    fn repair_peer(&self, keyspace: &str, peer: &ClusterMember, missing: Vec<Change>) {
        repair_peer(&self.replica, &self.replicator, keyspace, peer, missing);
    }

    /// Lets the calls still under way finish in a task of its own, and repairs the replicas
    /// among them that answer with older versions than `newest`. Dropping them instead would
    /// cancel their HTTP/2 streams: under load, a flood of cancelled streams makes h2 close
    /// the connection (its reset-flood protection), failing every call on it.
    fn repair_late(&self, keyspace: &str, late: Vec<Call>, newest: &[Change]) {
        if late.is_empty() {
            return;
        }
        let shared = LateRepair {
            replica: self.replica.clone(),
            replicator: self.replicator.clone(),
            keyspace: keyspace.to_owned(),
            newest: newest.to_vec(),
        };
        let mut late: FuturesUnordered<Call> = late.into_iter().collect();
        self.node.spawn_task(async move {
            while let Some((peer, result)) = late.next().await {
                if let Ok(versions) = result {
                    shared.repair(&peer, &versions);
                }
            }
        });
    }
}

/// What a late answer is repaired with.
struct LateRepair<S> {
    replica: Arc<Replica<S>>,
    replicator: Arc<crate::replication::Replicator<S>>,
    keyspace: String,
    newest: Vec<Change>,
}

impl<S: Storage> LateRepair<S> {
    fn repair(&self, peer: &ClusterMember, versions: &[Change]) {
        let missing = stale_in(&self.newest, versions);
        repair_peer(
            &self.replica,
            &self.replicator,
            &self.keyspace,
            peer,
            missing,
        );
    }
}

/// Sends `peer` `missing` (the newest versions it lacked) through its replication queue,
/// counted as read repairs.
fn repair_peer<S: Storage>(
    replica: &Replica<S>,
    replicator: &crate::replication::Replicator<S>,
    keyspace: &str,
    peer: &ClusterMember,
    missing: Vec<Change>,
) {
    let Some(slot) = replica.slot(keyspace) else {
        return;
    };
    if missing.is_empty() {
        return;
    }
    Counters::add(&replica.counters.read_repairs, missing.len());
    let queued_at = std::time::Instant::now();
    let items = missing
        .into_iter()
        .map(|c| Outbound::new(slot.name.clone(), c, None, queued_at))
        .collect();
    replicator.enqueue(peer, items);
}

#[cfg(test)]
mod tests {
    use datacake_crdt::HLCTimestamp;

    use super::*;
    use crate::keyspace::Mutation;

    fn put(key: Key, millis: u64, data: &'static str) -> Change {
        Change {
            mutation: Mutation::Put {
                key,
                timestamp: HLCTimestamp::new(millis, 0, 1),
            },
            data: Some(bytes::Bytes::from_static(data.as_bytes())),
        }
    }

    fn del(key: Key, millis: u64) -> Change {
        Change {
            mutation: Mutation::Delete {
                key,
                timestamp: HLCTimestamp::new(millis, 0, 1),
            },
            data: None,
        }
    }

    #[test]
    fn the_newest_version_wins_and_stale_answers_are_repaired() {
        let answers = [
            vec![put(1, 5, "old"), put(2, 9, "two")],
            vec![put(1, 7, "new")],
            vec![del(2, 9), put(1, 7, "new")],
        ];
        let mut newest = newest(answers.iter().map(Vec::as_slice));
        let stale: Vec<Vec<Change>> = answers.iter().map(|a| stale_in(&newest, a)).collect();
        newest.sort_by_key(|c| c.mutation.key());
        assert_eq!(newest[0].data.as_deref(), Some(&b"new"[..]));
        assert!(newest[1].mutation.is_delete(), "a delete wins a tie");
        let keys = |v: &Vec<Change>| {
            let mut k: Vec<Key> = v.iter().map(|c| c.mutation.key()).collect();
            k.sort();
            k
        };
        assert_eq!(keys(&stale[0]), vec![1, 2], "the local copy lacks both");
        assert_eq!(keys(&stale[1]), vec![2], "node 2 lacks the delete");
        assert!(stale[2].is_empty());
    }

    /// Sixteen documents each larger than a sixteenth of the budget, asked for in one
    /// request: the peer loads about as many as the reply can hold (at most the budget and
    /// one document), not all sixteen to serve a few. (Before, its first storage call took
    /// sixteen ids whatever their size, and the next request loaded the unserved ones
    /// again.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_of_large_documents_loads_at_most_its_budget_and_one_document() {
        use datacake_node::Consistency;

        use crate::config::StoreConfig;
        use crate::test_utils::{FaultyStorage, MemStore};

        const MESSAGE: usize = 1 << 20;
        let budget = StoreConfig {
            max_message_size: MESSAGE,
            ..StoreConfig::default()
        }
        .message_budget();
        let document = budget / 16 + (budget / 16) / 2;
        let storage = FaultyStorage::new(MemStore::new());
        let (a, store, b) =
            crate::testing::store_over_and_bare_peer(storage.clone(), MESSAGE).await;
        for id in 0..16 {
            store
                .handle()
                .put("ks", id, vec![id as u8; document], Consistency::None)
                .await
                .unwrap();
        }
        let client = RpcClient::<StoreService<FaultyStorage<MemStore>>>::new(
            b.network().get_or_connect_node(1, a.me().public_addr),
        );
        let before = storage.bytes_read();
        let reply = client
            .send(&ReadRequest {
                clock: b.clock().get_time(),
                keyspace: "ks".to_owned(),
                keys: (0..16).collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .deserialize_view()
            .unwrap();
        let loaded = (storage.bytes_read() - before) as usize;
        assert!(
            (1..16).contains(&reply.served),
            "a reply of part of them: {}",
            reply.served
        );
        assert!(
            loaded <= budget + document,
            "loaded {loaded} bytes to serve {} documents of {document} bytes (budget {budget})",
            reply.served
        );
        drop(store);
        b.shutdown().await;
        a.shutdown().await;
    }

    #[test]
    fn dedup_keeps_the_first_order() {
        assert_eq!(dedup([3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }
}
