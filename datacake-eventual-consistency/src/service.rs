//! The store's RPC service: replication batches, digest exchange, bucket listing, reads (and
//! repair fetches), member removal; the hand-off's handler is in [`handoff`](crate::handoff).
//!
//! Every input is bounded: ids per request, buckets per request, and every reply is cut by
//! bytes under the message budget. Every timestamp that arrives is checked against the
//! local clock's drift bound; a stamp too far ahead is refused and counted, and not applied
//! from this message (the crate docs' "Clock skew" says when it is applied later).

use std::collections::HashMap;
use std::net::SocketAddr;

use datacake_crdt::HLCTimestamp;
use datacake_rpc::{Handler, Request, RpcService, ServiceRegistry, Status};
use tracing::warn;

use crate::anti_entropy::Repairer;
use crate::config::{ENTRY_OVERHEAD, MAX_KEYS_PER_REQUEST};
use crate::digest::{BucketEntry, DIGEST_BUCKETS, MAX_DIGEST_BITS};
use crate::keyspace::SCAN_STEP_ENTRIES;
use crate::messages::{
    Ack, BucketReply, BucketRequest, ClockProbe, DigestReply, DigestRequest, HandOff, ReadReply,
    ReadRequest, Refusal, Refused, RemoveMember, ReplicateAck, ReplicateBatch, WireDigest,
    WireEntry, WireMutation,
};
use crate::read::{dedup, read_versions};
use crate::replica::{Change, Counters};
use crate::storage::{Key, Storage};
use crate::watermark;

/// The name the service is registered under.
pub(crate) const SERVICE_NAME: &str = "datacake-eventual-consistency";

/// Serves a node's replica to its peers.
pub(crate) struct StoreService<S> {
    /// The replica, members, node and settings the handlers serve from (the repair task's:
    /// a hand-off runs one of its rounds).
    pub(crate) store: Repairer<S>,
    /// Held by the [`HandOff`] being served: one at a time.
    pub(crate) hand_off_turn: tokio::sync::Semaphore,
}

impl<S> std::fmt::Debug for StoreService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService").finish_non_exhaustive()
    }
}

impl<S: Storage> StoreService<S> {
    /// Folds the caller's clock into ours; a clock beyond the drift bound refuses the call.
    pub(crate) fn register(&self, remote: HLCTimestamp, from: SocketAddr) -> Result<(), Status> {
        self.store
            .node
            .clock()
            .register_ts(remote)
            .map(|_| ())
            .map_err(|e| {
                Counters::add(&self.store.replica.counters.clock_skew_rejected, 1);
                warn!(peer = %from, error = %e, "refused a call whose clock is out of bounds");
                Status::invalid_payload(format!("clock: {e}"))
            })
    }

    pub(crate) fn now(&self) -> HLCTimestamp {
        self.store.node.clock().get_time()
    }
}

impl<S: Storage> RpcService for StoreService<S> {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<ReplicateBatch>();
        registry.add_handler::<DigestRequest>();
        registry.add_handler::<BucketRequest>();
        registry.add_handler::<ReadRequest>();
        registry.add_handler::<RemoveMember>();
        registry.add_handler::<HandOff>();
        registry.add_handler::<ClockProbe>();
    }
}

/// This node's clock, for a peer's clock fence: taken from anyone (it tells nothing else),
/// whatever their clock.
#[async_trait::async_trait]
impl<S: Storage> Handler<ClockProbe> for StoreService<S> {
    type Reply = Ack;

    fn path() -> &'static str {
        "clock"
    }

    async fn on_message(&self, _request: Request<ClockProbe>) -> Result<Ack, Status> {
        Ok(Ack { clock: self.now() })
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<ReplicateBatch> for StoreService<S> {
    type Reply = ReplicateAck;

    fn path() -> &'static str {
        "replicate"
    }

    async fn on_message(&self, request: Request<ReplicateBatch>) -> Result<ReplicateAck, Status> {
        let from = request.remote_addr();
        let batch = request.into_inner().deserialize_view()?;
        self.register(batch.clock, from)?;
        let mut refused = Vec::new();
        let mut index = 0u32;
        let mut skewed = 0;
        let ceiling = self.store.node.clock().drift_ceiling();
        for group in batch.keyspaces {
            let first = index;
            index += group.mutations.len() as u32;
            if self.store.replica.slot_or_create(&group.keyspace).is_err() {
                refused.extend((first..index).map(|index| Refused {
                    index,
                    reason: Refusal::Keyspace,
                }));
                continue;
            }
            let mut changes = Vec::with_capacity(group.mutations.len());
            let mut positions = Vec::with_capacity(group.mutations.len());
            for (i, mutation) in group.mutations.into_iter().enumerate() {
                if mutation.timestamp.millis() > ceiling {
                    skewed += 1;
                    refused.push(Refused {
                        index: first + i as u32,
                        reason: Refusal::ClockSkew,
                    });
                    continue;
                }
                changes.push(Change::from(mutation));
                positions.push(first + i as u32);
            }
            let newest = changes.iter().map(|c| c.mutation.timestamp()).max();
            let puts: Vec<(u32, Key, HLCTimestamp)> = changes
                .iter()
                .zip(&positions)
                .filter(|(c, _)| c.data.is_some())
                .map(|(c, at)| (*at, c.mutation.key(), c.mutation.timestamp()))
                .collect();
            match self.store.replica.apply(&group.keyspace, changes).await {
                Ok(applied) => {
                    Counters::add(&self.store.replica.counters.replicated, applied.len());
                    // A put the purge watermark dropped is not stored: the writer must not
                    // count this node as holding it.
                    refused.extend(
                        self.store
                            .replica
                            .purged_of(&group.keyspace, &puts)
                            .into_iter()
                            .map(|index| Refused {
                                index,
                                reason: Refusal::Purged,
                            }),
                    );
                }
                Err(error) => {
                    let error = datacake_rpc::error_chain(&error);
                    warn!(keyspace = %group.keyspace, %error, "replicated write failed");
                    return Err(Status::internal(format!("storage: {error}")));
                }
            }
            // Later local writes of these ids must be stamped after them.
            if let Some(newest) = newest {
                let _ = self.store.node.clock().advance_past(newest);
            }
        }
        if skewed > 0 {
            Counters::add(&self.store.replica.counters.clock_skew_rejected, skewed);
            warn!(peer = %from, mutations = skewed, "refused replicated writes stamped beyond the clock drift bound");
        }
        Ok(ReplicateAck {
            clock: self.now(),
            refused,
        })
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<DigestRequest> for StoreService<S> {
    type Reply = DigestReply;

    fn path() -> &'static str {
        "digest"
    }

    async fn on_message(&self, request: Request<DigestRequest>) -> Result<DigestReply, Status> {
        let from = request.remote_addr();
        let request = request.into_inner().deserialize_view()?;
        self.register(request.clock, from)?;
        // Taken before the digests: everything below it is in them.
        let clock = self.now();
        let floor = self.store.replica.floor().map_or(clock, |f| f.min(clock));
        let (after, until) = (request.after.as_deref(), request.until.as_deref());
        let in_range =
            |name: &str| after.is_none_or(|a| name > a) && until.is_none_or(|u| name <= u);
        let theirs: HashMap<String, u64> = request
            .totals
            .into_iter()
            .filter(|(name, _)| in_range(name) && !watermark::is_reserved(name))
            .collect();
        let mut digests: Vec<WireDigest> = Vec::new();
        for (name, slot) in self.store.replica.slots_in(after, until) {
            let (total, bits, buckets, mark) = slot.with_state(|s| {
                let d = s.digest();
                (
                    d.total(),
                    d.bits(),
                    d.buckets().to_vec(),
                    s.purge_watermark(),
                )
            });
            if theirs.get(&name).copied().unwrap_or(0) != total {
                digests.push(WireDigest {
                    keyspace: name,
                    bits,
                    buckets,
                    watermark: mark,
                });
            }
        }
        // Keyspaces the requester holds and we lack differ too (ours is empty).
        for (name, total) in &theirs {
            if *total != 0 && self.store.replica.slot(name).is_none() {
                digests.push(WireDigest {
                    keyspace: name.clone(),
                    bits: 0,
                    buckets: Vec::new(),
                    watermark: None,
                });
            }
        }
        digests.sort_unstable_by(|a, b| a.keyspace.cmp(&b.keyspace));
        let budget = self.store.config.message_budget();
        let mut bytes = 0;
        let mut kept = 0;
        for digest in &digests {
            let cost = ENTRY_OVERHEAD + digest.keyspace.len() + digest.buckets.len() * 8;
            if kept > 0 && bytes + cost > budget {
                break;
            }
            bytes += cost;
            kept += 1;
        }
        let resume_after = (kept < digests.len()).then(|| digests[kept - 1].keyspace.clone());
        digests.truncate(kept);
        Ok(DigestReply {
            clock,
            floor,
            digests,
            resume_after,
        })
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<BucketRequest> for StoreService<S> {
    type Reply = BucketReply;

    fn path() -> &'static str {
        "buckets"
    }

    async fn on_message(&self, request: Request<BucketRequest>) -> Result<BucketReply, Status> {
        let request = request.into_inner().deserialize_view()?;
        let bits = request.bits;
        let buckets = request.buckets;
        let ascending = buckets.windows(2).all(|w| w[0] < w[1]);
        if bits > MAX_DIGEST_BITS
            || buckets.len() > DIGEST_BUCKETS
            || !ascending
            || buckets.last().is_some_and(|b| *b >= 1 << bits)
        {
            return Err(Status::invalid_payload(
                "buckets must be ascending, below 2^bits, bits at most 12",
            ));
        }
        if watermark::is_reserved(&request.keyspace) {
            return Ok(BucketReply {
                entries: Vec::new(),
                complete: buckets.len() as u32,
            });
        }
        // A bucket is always read and sent whole: one far coarser than this node's digest
        // (the resolution its digest replies name) would be most of the keyspace at once.
        let finest = self.store.replica.digest_bits(&request.keyspace);
        if bits.saturating_add(RESOLUTION_SLACK) < finest {
            return Err(Status::invalid_payload(format!(
                "buckets at {bits} bits are too coarse for keyspace {}: its digest has {finest}",
                request.keyspace
            )));
        }
        let budget = self.store.config.message_budget();
        let (entries, whole) = self
            .store
            .replica
            .bucket_entries(&request.keyspace, bits, &buckets, reply_entries(budget))
            .await;
        let (entries, complete) = whole_buckets(&entries, bits, &buckets[..whole], budget);
        Ok(BucketReply { entries, complete })
    }
}

/// How many bits coarser than this node's digest a bucket request may be: its keyspace may
/// have grown fourfold (and the digest's resolution with it) since the peer read the digest.
const RESOLUTION_SLACK: u8 = 2;

/// The most entries one bucket reply collects (plus the rest of the bucket it is in): the
/// peer asks again for the buckets left. Larger replies would save round trips of a large
/// repair, but each holds its entries in memory on both sides and takes longer to scan.
pub(crate) const MAX_BUCKET_REPLY_ENTRIES: usize = 4 * SCAN_STEP_ENTRIES;

/// The entries a bucket reply within `budget` bytes collects at most.
fn reply_entries(budget: usize) -> usize {
    (budget / ENTRY_OVERHEAD).min(MAX_BUCKET_REPLY_ENTRIES)
}

/// The entries of the first requested buckets that fit in `budget` bytes, whole buckets only
/// (at least one, so a caller always progresses), and how many buckets that is. `entries`
/// are sorted by bucket, then id, as [`KeyspaceState::bucket_entries`] returns them; a
/// scan that stopped early (more than `budget / ENTRY_OVERHEAD` entries) passes only the
/// buckets it read whole, and the result is the same as from a full scan.
///
/// [`KeyspaceState::bucket_entries`]: crate::keyspace::KeyspaceState::bucket_entries
fn whole_buckets(
    entries: &[BucketEntry],
    bits: u8,
    buckets: &[u32],
    budget: usize,
) -> (Vec<WireEntry>, u32) {
    let mut out = Vec::new();
    let mut complete = 0;
    let mut next = entries.iter().peekable();
    for bucket in buckets {
        let mut of_bucket = Vec::new();
        while let Some(e) = next.next_if(|e| e.bucket_at(bits) == *bucket) {
            of_bucket.push(WireEntry {
                key: e.key,
                timestamp: e.timestamp,
                tombstone: e.tombstone,
            });
        }
        if complete > 0 && (out.len() + of_bucket.len()) * ENTRY_OVERHEAD > budget {
            break;
        }
        out.extend(of_bucket);
        complete += 1;
    }
    (out, complete)
}

#[async_trait::async_trait]
impl<S: Storage> Handler<ReadRequest> for StoreService<S> {
    type Reply = ReadReply;

    fn path() -> &'static str {
        "read"
    }

    async fn on_message(&self, request: Request<ReadRequest>) -> Result<ReadReply, Status> {
        let from = request.remote_addr();
        let request = request.into_inner().deserialize_view()?;
        self.register(request.clock, from)?;
        if request.keys.len() > MAX_KEYS_PER_REQUEST {
            return Err(Status::invalid_payload(format!(
                "at most {MAX_KEYS_PER_REQUEST} ids per read"
            )));
        }
        let served_all = request.keys.len() as u32;
        if self.store.replica.check_name(&request.keyspace).is_err() {
            return Ok(ReadReply {
                clock: self.now(),
                entries: Vec::new(),
                served: served_all,
            });
        }
        // A repeated id is served once; `served` counts the request's own ids.
        let unique = dedup(request.keys.iter().copied());
        let budget = self.store.config.message_budget();
        let (versions, served_unique) =
            read_versions(&self.store.replica, &request.keyspace, &unique, budget)
                .await
                .map_err(|e| Status::internal(format!("storage: {e}")))?;
        let served = if served_unique == unique.len() {
            served_all
        } else {
            // The first request position whose id was not served.
            let done: std::collections::HashSet<u64> =
                unique[..served_unique].iter().copied().collect();
            request
                .keys
                .iter()
                .position(|k| !done.contains(k))
                .unwrap_or(request.keys.len()) as u32
        };
        Ok(ReadReply {
            clock: self.now(),
            entries: versions.iter().map(WireMutation::from).collect(),
            served,
        })
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<RemoveMember> for StoreService<S> {
    type Reply = Ack;

    fn path() -> &'static str {
        "remove-member"
    }

    async fn on_message(&self, request: Request<RemoveMember>) -> Result<Ack, Status> {
        let from = request.remote_addr();
        let request = request.into_inner().deserialize_view()?;
        self.register(request.clock, from)?;
        // Until calls are authenticated (mutual TLS), a removal is taken only from an address
        // that a live member gossips: not from anyone who can reach the port.
        let live = self.store.node.live_members();
        if !live.iter().any(|m| m.public_addr.ip() == from.ip()) {
            return Err(Status::invalid_payload("member removal from a non-member"));
        }
        let node_id = request.node_id;
        if live.iter().any(|m| m.node_id == node_id) {
            return Err(Status::invalid_payload(format!("node {node_id} is live")));
        }
        let removed = self
            .store
            .replica
            .remove_member(&self.store.members, node_id)
            .await
            .map_err(|e| Status::internal(format!("storage: {e}")))?;
        if removed {
            tracing::info!(node_id, peer = %from, "member removed at a peer's request");
        }
        Ok(Ack { clock: self.now() })
    }
}

#[cfg(test)]
mod tests {
    use datacake_crdt::HLCTimestamp;

    use super::*;
    use crate::keyspace::{scan_in_steps, KeyspaceState, Mutation};

    /// The reply to a bucket request as the handler builds it (the replica's scan, in steps
    /// of `step` entries, then whole buckets within the budget).
    fn reply(
        ks: &KeyspaceState,
        bits: u8,
        buckets: &[u32],
        budget: usize,
        step: usize,
    ) -> (Vec<WireEntry>, u32) {
        let (entries, whole) = block_on(scan_in_steps(
            buckets,
            reply_entries(budget),
            step,
            |rest, step| ks.bucket_entries_unsorted(bits, rest, step),
        ));
        whole_buckets(&entries, bits, &buckets[..whole], budget)
    }

    /// Runs `future` (a scan, which yields between its steps) to its end.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(future)
    }

    proptest::proptest! {
        #[test]
        fn a_scan_in_steps_that_stops_early_gives_the_reply_of_a_full_scan(
            writes in proptest::collection::vec((0..5_000u64, proptest::bool::weighted(0.2)), 0..4_000),
            wanted in proptest::collection::btree_set(0..64u32, 0..64),
            bits in 0..=6u8,
            entries_budget in 1..3_000usize,
            step in 0..200usize,
        ) {
            let mut ks = KeyspaceState::new();
            for (i, (key, delete)) in writes.iter().enumerate() {
                let timestamp = HLCTimestamp::new(i as u64 + 1, 0, 1);
                ks.apply(if *delete {
                    Mutation::Delete { key: *key, timestamp }
                } else {
                    Mutation::Put { key: *key, timestamp }
                });
            }
            let buckets: Vec<u32> = wanted.into_iter().filter(|b| *b < 1 << bits).collect();
            // The whole keyspace, filtered: what a bucket scan must find.
            let mut expected: Vec<BucketEntry> = ks
                .entries()
                .filter(|e| buckets.binary_search(&e.bucket_at(bits)).is_ok())
                .collect();
            expected.sort_unstable_by_key(|e| (e.bucket_at(bits), e.key));
            proptest::prop_assert_eq!(&ks.bucket_entries(bits, &buckets), &expected);

            let budget = entries_budget * ENTRY_OVERHEAD;
            let full = whole_buckets(&expected, bits, &buckets, budget);
            proptest::prop_assert_eq!(&reply(&ks, bits, &buckets, budget, step), &full);
            let one_step = reply(&ks, bits, &buckets, budget, usize::MAX);
            proptest::prop_assert_eq!(&one_step, &full);
            // The scan stops one bucket after the budget is passed.
            let (scanned, _) = block_on(scan_in_steps(&buckets, entries_budget, step, |rest, step| {
                ks.bucket_entries_unsorted(bits, rest, step)
            }));
            let largest = (0..1u32 << bits)
                .map(|b| expected.iter().filter(|e| e.bucket_at(bits) == b).count())
                .max()
                .unwrap_or(0);
            proptest::prop_assert!(scanned.len() <= entries_budget + 1 + largest);
        }
    }

    #[test]
    fn a_bucket_reply_takes_whole_buckets_within_the_budget() {
        let mut ks = KeyspaceState::new();
        for key in 0..2_000 {
            ks.apply(Mutation::Put {
                key,
                timestamp: HLCTimestamp::new(1, 0, 1),
            });
        }
        let bits = 4;
        let all: Vec<u32> = (0..16).collect();
        let entries = ks.bucket_entries(bits, &all);
        assert_eq!(entries.len(), 2_000);
        let (taken, complete) = whole_buckets(&entries, bits, &all, usize::MAX);
        assert_eq!((taken.len(), complete), (2_000, 16));

        // About three buckets' worth of bytes: whole buckets only, in order.
        let budget = 3 * 125 * ENTRY_OVERHEAD;
        let (taken, complete) = whole_buckets(&entries, bits, &all, budget);
        assert!((1..16).contains(&complete), "{complete}");
        let in_taken: usize = entries
            .iter()
            .filter(|e| e.bucket_at(bits) < complete)
            .count();
        assert_eq!(
            taken.len(),
            in_taken,
            "exactly the first {complete} buckets"
        );
        assert!(taken.len() * ENTRY_OVERHEAD <= budget);

        // A budget smaller than one bucket still takes one, so the caller moves on.
        let (taken, complete) = whole_buckets(&entries, bits, &all, 1);
        assert_eq!(complete, 1);
        assert!(!taken.is_empty());
    }
}
