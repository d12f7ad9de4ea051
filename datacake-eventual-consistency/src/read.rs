//! Reads: a replica's own versions of some ids ([`read_versions`], which serves peers'
//! reads and repair fetches too), and reads at a consistency level ([`Shared::read`]): ask
//! the live replicas, return the newest version once the level's acknowledgements are in,
//! and repair the stale replicas that answered (read repair).

use std::collections::{HashMap, HashSet};

use datacake_node::{AckProgress, AckTally, ClusterMember, Consistency, NodeId, Requirement};
use datacake_rpc::{RpcClient, Status};
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

/// This replica's versions of the first of `keys` (a document, or a tombstone as a delete;
/// ids it holds nothing for are left out), up to `budget` bytes: returns the versions and
/// how many of `keys` they cover (at least one, so a caller always progresses).
pub(crate) async fn read_versions<S: Storage>(
    replica: &Replica<S>,
    keyspace: &str,
    keys: &[Key],
    budget: usize,
) -> Result<(Vec<Change>, usize), StoreError<S::Error>> {
    let mut versions = Vec::new();
    let mut bytes = 0;
    let mut served = 0;
    // Documents are read in chunks sized by what the previous ones weighed, so a reply of
    // big documents never reads far past its budget.
    let mut chunk = 16;
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
        let missing: Vec<Key> = ids
            .iter()
            .filter(|k| !docs.contains_key(k))
            .copied()
            .collect();
        let tombstones: HashMap<Key, HLCTimestamp> = replica
            .entries_of(keyspace, &missing)
            .into_iter()
            .filter(|e| e.tombstone)
            .map(|e| (e.key, e.timestamp))
            .collect();
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
        let average = bytes / served.max(1);
        chunk = (budget.saturating_sub(bytes) / average.max(64)).clamp(1, 1024);
    }
    Ok((versions, served))
}

/// Every version a peer holds of `keys`, asking in pages of at most `page_len` (and
/// [`MAX_KEYS_PER_REQUEST`]) ids until every id was served.
pub(crate) async fn fetch_versions<S: Storage>(
    client: &RpcClient<StoreService<S>>,
    node: &datacake_node::DatacakeHandle,
    replica: &Replica<S>,
    keyspace: &str,
    keys: &[Key],
    page_len: usize,
) -> Result<Vec<Change>, Status> {
    let mut out = Vec::new();
    let mut rest = keys;
    let page_len = page_len.clamp(1, MAX_KEYS_PER_REQUEST);
    while !rest.is_empty() {
        let page = &rest[..rest.len().min(page_len)];
        let reply = client
            .send(&ReadRequest {
                clock: node.clock().get_time(),
                keyspace: keyspace.to_owned(),
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
        rest = &rest[served..];
    }
    Ok(out)
}

/// The newest version of each key among `answers` (the local replica's and peers'), and per
/// answer the versions it lacks (read repair).
fn newest_and_stale(answers: &[(Option<NodeId>, Vec<Change>)]) -> (Vec<Change>, Vec<Vec<Change>>) {
    let mut newest: HashMap<Key, &Change> = HashMap::new();
    for (_, versions) in answers {
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
    let stale = answers
        .iter()
        .map(|(_, versions)| {
            let held: HashMap<Key, &Change> =
                versions.iter().map(|v| (v.mutation.key(), v)).collect();
            newest
                .values()
                .filter(|n| held.get(&n.mutation.key()).is_none_or(|mine| n.beats(mine)))
                .map(|n| (*n).clone())
                .collect()
        })
        .collect();
    (newest.into_values().cloned().collect(), stale)
}

impl<S: Storage> Shared<S> {
    /// Reads `keys` of `keyspace` at `level`: local for [`Consistency::None`], otherwise
    /// from the live replicas until the level's acknowledgements are in (the local replica
    /// counts as one, as for writes). Returns the newest live documents; stale replicas that
    /// answered are repaired in the background.
    pub(crate) async fn read(
        &self,
        keyspace: &str,
        keys: Vec<Key>,
        level: Consistency,
    ) -> Result<Vec<Document>, StoreError<S::Error>> {
        self.replica.check_name(keyspace)?;
        let keys = dedup(keys);
        let plan = self
            .members
            .plan(level, self.node.me(), self.node.live_members_shared());
        plan.check.clone()?;
        let Some(requirement) = &plan.requirement else {
            return self.read_local(keyspace, keys).await;
        };
        let asked = &plan.counted;
        let (local, _) = read_versions(&self.replica, keyspace, &keys, usize::MAX).await?;
        let answers = self.ask(keyspace, &keys, requirement, asked).await?;
        let mut all = vec![(None, local)];
        all.extend(answers.into_iter().map(|(id, v)| (Some(id), v)));
        let (newest, stale) = newest_and_stale(&all);
        self.repair_stale(keyspace, &all, stale, asked);
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

    /// The documents this node holds (no peer asked).
    pub(crate) async fn read_local(
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

    /// Asks every peer of `asked` for its versions of `keys`, and returns the answers once
    /// they meet `requirement`.
    async fn ask(
        &self,
        keyspace: &str,
        keys: &[Key],
        requirement: &Requirement,
        asked: &[ClusterMember],
    ) -> Result<Vec<(NodeId, Vec<Change>)>, StoreError<S::Error>> {
        let mut tally = AckTally::new(requirement, |id| asked.iter().any(|m| m.node_id == id));
        let mut calls: FuturesUnordered<_> = asked
            .iter()
            .map(|peer| {
                let mut client = RpcClient::<StoreService<S>>::new(
                    self.node.network().get_or_connect(peer.public_addr),
                );
                client.set_timeout(self.config.rpc_timeout);
                let peer = peer.clone();
                async move {
                    let versions = fetch_versions(
                        &client,
                        &self.node,
                        &self.replica,
                        keyspace,
                        keys,
                        MAX_KEYS_PER_REQUEST,
                    )
                    .await;
                    (peer, versions)
                }
            })
            .collect();
        let timeout = self.config.read_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut answers = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, calls.next()).await;
            let (peer, result) = match next {
                Ok(Some(answer)) => answer,
                Ok(None) | Err(_) => {
                    return Err(StoreError::Consistency(
                        datacake_node::ConsistencyError::ConsistencyFailure {
                            responses: tally.acknowledged(),
                            required: requirement.required(),
                            timeout,
                        },
                    ))
                }
            };
            let progress = match result {
                Ok(versions) => {
                    answers.push((peer.node_id, versions));
                    tally.ack(peer.node_id)
                }
                Err(status) => {
                    debug!(peer = %peer.public_addr, error = %status, "read from a replica failed");
                    match tally.fail(peer.node_id) {
                        AckProgress::Impossible => {
                            return Err(StoreError::ReplicaFailed {
                                level: requirement.level(),
                                acknowledged: tally.acknowledged(),
                                required: requirement.required(),
                                node_id: peer.node_id,
                                peer: peer.public_addr,
                                source: Box::new(status),
                            })
                        }
                        progress => progress,
                    }
                }
            };
            if progress == AckProgress::Met {
                return Ok(answers);
            }
        }
    }

    /// Sends every answering replica the newest versions it lacked: the local one through
    /// the write path (in a task of its own), peers through their replication queues.
    fn repair_stale(
        &self,
        keyspace: &str,
        answers: &[(Option<NodeId>, Vec<Change>)],
        stale: Vec<Vec<Change>>,
        asked: &[ClusterMember],
    ) {
        let Ok(slot) = self.replica.slot_or_create(keyspace) else {
            return;
        };
        for ((node, _), missing) in answers.iter().zip(stale) {
            if missing.is_empty() {
                continue;
            }
            Counters::add(&self.replica.counters.read_repairs, missing.len());
            match node {
                None => {
                    let replica = self.replica.clone();
                    let keyspace = keyspace.to_owned();
                    self.node.spawn_task(async move {
                        if let Err(error) = replica.apply(&keyspace, missing).await {
                            warn!(%keyspace, %error, "read repair of the local replica failed");
                        }
                    });
                }
                Some(id) => {
                    let Some(peer) = asked.iter().find(|m| m.node_id == *id) else {
                        continue;
                    };
                    let items = missing
                        .into_iter()
                        .map(|c| Outbound::new(slot.name.clone(), c, None))
                        .collect();
                    self.replicator.enqueue(peer, items);
                }
            }
        }
    }
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
        let answers = vec![
            (None, vec![put(1, 5, "old"), put(2, 9, "two")]),
            (Some(2), vec![put(1, 7, "new")]),
            (Some(3), vec![del(2, 9), put(1, 7, "new")]),
        ];
        let (mut newest, stale) = newest_and_stale(&answers);
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

    #[test]
    fn dedup_keeps_the_first_order() {
        assert_eq!(dedup([3, 1, 3, 2, 1]), vec![3, 1, 2]);
    }
}
