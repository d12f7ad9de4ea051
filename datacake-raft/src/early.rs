//! Early copies: a leader with a durable log sends each batch of entries it appends to its
//! voters before its own flush, so their fsyncs overlap its own.
//!
//! openraft 0.9's core waits for the leader's log to report an append flushed before it
//! replicates the entries, so without these copies a commit costs two fsyncs one after the
//! other: the leader's, then a follower's. A follower's log takes a copy only if it is
//! exactly what the leader's append message will bring (see
//! [`SqliteLogStore::write_early`](crate::sqlite_log::SqliteLogStore::write_early)) and writes
//! it at once; when the append message arrives, the entries are durable already (or about to
//! be), and the follower answers without a commit of its own. Nothing about Raft changes: the
//! follower still acknowledges entries only through openraft, after they are durable, and
//! the leader still counts itself only after its own flush. A copy is best effort: one that
//! is lost, late or refused only means the append message does the write, as before.

use std::time::Duration;

use datacake_node::{DatacakeHandle, ExtensionTasks};
use datacake_rpc::RpcClient;
use openraft::raft::AppendEntriesRequest;
use tokio::sync::mpsc;
use tracing::debug;

use crate::codec;
use crate::network::{channel_to, resolve, EarlyPacket, Packet, RaftService};
use crate::types::{Entry, LogId, Raft, RaftNodeId, TypeConfig, Vote};

/// Copies waiting to be sent; more are dropped (a copy is an optimisation, never owed).
const QUEUE: usize = 16;

/// A batch of entries the leader of `vote` appends after `prev`.
#[derive(Debug)]
pub(crate) struct EarlyCopy {
    pub(crate) vote: Vote,
    pub(crate) prev: Option<LogId>,
    pub(crate) entries: Vec<Entry>,
}

impl EarlyCopy {
    /// A copy of `entries`, appended after `prev` by node `me` under `vote`, if `me` is
    /// their leader: the vote is committed and names `me`, and every entry is of its term.
    pub(crate) fn of(
        me: RaftNodeId,
        vote: Option<Vote>,
        prev: Option<LogId>,
        entries: &[Entry],
    ) -> Option<Self> {
        let vote = vote?;
        let leads = vote.is_committed()
            && vote.leader_id().voted_for() == Some(me)
            && !entries.is_empty()
            && entries
                .iter()
                .all(|e| e.log_id.leader_id.term == vote.leader_id().term);
        leads.then(|| Self {
            vote,
            prev,
            entries: entries.to_vec(),
        })
    }
}

/// Hands a leader's copies to the task that sends them ([`start`]).
#[derive(Debug, Clone)]
pub(crate) struct EarlyCopies {
    me: RaftNodeId,
    queue: mpsc::Sender<EarlyCopy>,
}

impl EarlyCopies {
    /// This node's Raft id.
    pub(crate) fn me(&self) -> RaftNodeId {
        self.me
    }

    /// Queues `copy` for sending; drops it if the queue is full.
    pub(crate) fn send(&self, copy: EarlyCopy) {
        let _ = self.queue.try_send(copy);
    }
}

/// Starts the task (one of `tasks`, so it stops with Raft) that sends this node's early
/// copies to the other voters of `raft`'s membership, each call bounded by `timeout`.
pub(crate) fn start(
    raft: Raft,
    node: DatacakeHandle,
    timeout: Duration,
    tasks: &ExtensionTasks,
) -> EarlyCopies {
    let (queue, copies) = mpsc::channel(QUEUE);
    let me = RaftNodeId::from(node.me().node_id);
    tasks.spawn(send_copies(raft, node, copies, timeout));
    EarlyCopies { me, queue }
}

async fn send_copies(
    raft: Raft,
    node: DatacakeHandle,
    mut copies: mpsc::Receiver<EarlyCopy>,
    timeout: Duration,
) {
    let me = RaftNodeId::from(node.me().node_id);
    let metrics = raft.metrics();
    while let Some(copy) = copies.recv().await {
        let voters: Vec<(RaftNodeId, Option<String>)> = {
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            membership
                .voter_ids()
                .filter(|id| *id != me)
                .map(|id| (id, membership.get_node(&id).map(|n| n.addr.clone())))
                .collect()
        };
        if voters.is_empty() {
            continue;
        }
        let message = AppendEntriesRequest::<TypeConfig> {
            vote: copy.vote,
            prev_log_id: copy.prev,
            entries: copy.entries,
            leader_commit: None,
        };
        let payload = match codec::encode(&message) {
            Ok(payload) => payload,
            Err(error) => {
                debug!(%error, "an early copy could not be encoded");
                continue;
            }
        };
        for (id, recorded) in voters {
            let Some(addr) = resolve(&node, id, recorded.as_deref()) else {
                continue;
            };
            let mut client = RpcClient::<RaftService>::new(channel_to(node.network(), id, addr));
            client.set_timeout(timeout);
            let packet = EarlyPacket::new(node.generation(), payload.clone());
            // Not awaited here: a slow voter must not hold back the next copy to the others.
            tokio::spawn(async move {
                if let Err(status) = client.send(&packet).await {
                    debug!(target_node = id, %addr, error = %status, "early copy not delivered");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use openraft::storage::RaftLogStorage;
    use openraft::EntryPayload;

    use super::EarlyCopy;
    use crate::proposer::Batch;
    use crate::sqlite_log::SqliteLogStore;
    use crate::sqlite_log_tests::{append_flushed, db, entry, log_id, recv_n, rows_on_disk};
    use crate::types::{Entry, Vote};
    use test_helper::TempDir;

    /// A log of entries 1 to 3 (term 1) under node 1's committed vote for term 1.
    async fn log_of_three(dir: &TempDir) -> SqliteLogStore {
        let mut store = SqliteLogStore::open(&db(dir)).expect("open");
        store
            .save_vote(&Vote::new_committed(1, 1))
            .await
            .expect("vote");
        append_flushed(&store, 1..=3);
        store
    }

    /// Waits until the store has made `n` commits that wrote something.
    fn wait_for_commits(store: &SqliteLogStore, n: u64) {
        let until = Instant::now() + Duration::from_secs(30);
        while store.commits().0 < n {
            assert!(
                Instant::now() < until,
                "{} of {n} commits",
                store.commits().0
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Appends `entries` and waits until the log reports them flushed.
    fn append(store: &SqliteLogStore, entries: Vec<Entry>) {
        let (flushed, flushes) = mpsc::channel();
        store
            .append_with(entries, move |outcome| {
                let _ = flushed.send(outcome.is_ok());
            })
            .expect("append");
        assert_eq!(recv_n(&flushes, 1), [true], "flushed");
    }

    /// The last log id after a restart, and the indexes of the rows on disk.
    async fn reopened(dir: &TempDir) -> (Option<crate::types::LogId>, Vec<u64>) {
        let mut store = SqliteLogStore::open(&db(dir)).expect("reopen");
        let last = store.get_log_state().await.expect("state").last_log_id;
        let rows = rows_on_disk(&db(dir));
        (last, rows)
    }

    /// Asserts that the log ends at entry 5, before and after a restart, with rows 1 to 5 on
    /// disk.
    async fn ends_at_five(mut store: SqliteLogStore, dir: &TempDir) {
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        drop(store);
        assert_eq!(reopened(dir).await, (Some(log_id(1, 5)), (1..=5).collect()));
    }

    #[tokio::test]
    async fn an_append_of_entries_taken_early_costs_no_commit_of_its_own() {
        let dir = TempDir::new("early-taken");
        let mut store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        let early = vec![entry(1, 4), entry(1, 5)];
        let before = store.commits().0;
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), early.clone())
            .expect("early"));
        wait_for_commits(&store, before + 1);
        // Not part of the log openraft sees until its append brings them.
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 3)));

        append(&store, early);
        assert_eq!(store.commits().0, before + 1, "the append wrote again");
        ends_at_five(store, &dir).await;
    }

    #[tokio::test]
    async fn an_append_of_part_of_the_entries_taken_early_keeps_the_rest_waiting() {
        let dir = TempDir::new("early-part");
        let mut store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        let early = vec![entry(1, 4), entry(1, 5)];
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), early)
            .expect("early"));
        append(&store, vec![entry(1, 4)]);
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 4)));
        let before = store.commits().0;
        append(&store, vec![entry(1, 5)]);
        assert_eq!(store.commits().0, before, "the append wrote again");
        // A copy continues the entries taken early, not the log openraft sees.
        assert!(!store
            .write_early(&vote, Some(log_id(1, 4)), vec![entry(1, 5)])
            .expect("early"));
    }

    #[tokio::test]
    async fn an_append_longer_than_the_entries_taken_early_writes_only_the_rest() {
        let dir = TempDir::new("early-longer");
        let store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        let (commits, _, entries) = store.commits();
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), vec![entry(1, 4)])
            .expect("early"));
        wait_for_commits(&store, commits + 1);
        let (_, _, entries_before) = store.commits();
        assert_eq!(entries_before, entries + 1);

        append(&store, vec![entry(1, 4), entry(1, 5)]);
        assert_eq!(store.commits().2, entries_before + 1, "rows written again");
        ends_at_five(store, &dir).await;
    }

    #[tokio::test]
    async fn only_entries_that_continue_the_log_under_its_committed_vote_are_taken() {
        let dir = TempDir::new("early-refused");
        let store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        let after = Some(log_id(1, 3));
        let refused: [(&str, Vote, _, Vec<Entry>); 7] = [
            (
                "an uncommitted vote",
                Vote::new(1, 1),
                after,
                vec![entry(1, 4)],
            ),
            (
                "another vote",
                Vote::new_committed(2, 2),
                after,
                vec![entry(2, 4)],
            ),
            ("a gap", vote, Some(log_id(1, 4)), vec![entry(1, 5)]),
            (
                "an earlier end",
                vote,
                Some(log_id(1, 2)),
                vec![entry(1, 3)],
            ),
            ("another term's entry", vote, after, vec![entry(0, 4)]),
            (
                "entries out of order",
                vote,
                after,
                vec![entry(1, 4), entry(1, 6)],
            ),
            ("no entries", vote, after, vec![]),
        ];
        for (case, vote, prev, entries) in refused {
            assert!(
                !store.write_early(&vote, prev, entries).expect("early"),
                "taken: {case}"
            );
        }
        let too_many: Vec<Entry> = (4..4 + 65).map(|i| entry(1, i)).collect();
        assert!(!store.write_early(&vote, after, too_many).expect("early"));
        // Nothing was queued: the next append is the only write.
        append_flushed(&store, 4..=4);
        assert_eq!(rows_on_disk(&db(&dir)), (1..=4).collect::<Vec<_>>());
    }

    /// The entry at `index` of term 1, with a payload other than [`entry`]'s.
    fn other_entry(index: u64) -> Entry {
        Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(Batch::default()),
        }
    }

    #[tokio::test]
    async fn entries_taken_early_that_the_append_does_not_bring_leave_no_rows() {
        let dir = TempDir::new("early-other");
        let store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), vec![entry(1, 4), entry(1, 5)])
            .expect("early"));
        append(&store, vec![other_entry(4)]);
        drop(store);
        // Row 5 would follow an entry 4 it was never appended after.
        assert_eq!(
            reopened(&dir).await,
            (Some(log_id(1, 4)), (1..=4).collect())
        );
        let conn = rusqlite::Connection::open(db(&dir)).expect("connection");
        let bytes: Vec<u8> = conn
            .query_row("SELECT entry FROM raft_log WHERE idx = 4", [], |r| r.get(0))
            .expect("row 4");
        let stored: Entry = crate::codec::decode(&bytes).expect("decode");
        assert_eq!(stored, other_entry(4));
    }

    #[tokio::test]
    async fn entries_taken_early_go_when_the_vote_changes_or_the_log_is_truncated() {
        let dir = TempDir::new("early-vote");
        let mut store = log_of_three(&dir).await;
        let vote = Vote::new_committed(1, 1);
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), vec![entry(1, 4), entry(1, 5)])
            .expect("early"));
        // A new leader's vote is on disk without the old leader's entries after the log.
        store
            .save_vote(&Vote::new_committed(2, 2))
            .await
            .expect("vote");
        assert_eq!(rows_on_disk(&db(&dir)), (1..=3).collect::<Vec<_>>());

        let vote = Vote::new_committed(2, 2);
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), vec![entry(2, 4)])
            .expect("early"));
        store.truncate(log_id(1, 3)).await.expect("truncate");
        append_flushed(&store, 3..=3);
        assert_eq!(rows_on_disk(&db(&dir)), (1..=3).collect::<Vec<_>>());

        // A purge past the log's end (a follower that installed a snapshot) takes them too.
        assert!(store
            .write_early(&vote, Some(log_id(1, 3)), vec![entry(2, 4), entry(2, 5)])
            .expect("early"));
        store.purge(log_id(2, 4)).await.expect("purge");
        // Saving the same vote again makes everything queued before it durable.
        store.save_vote(&vote).await.expect("vote");
        assert_eq!(rows_on_disk(&db(&dir)), Vec::<u64>::new());
        drop(store);
        assert_eq!(reopened(&dir).await.0, Some(log_id(2, 4)));
    }

    #[test]
    fn only_a_leader_copies_its_own_entries() {
        let leader = Vote::new_committed(3, 7);
        let of = |me, vote, entries: &[Entry]| EarlyCopy::of(me, vote, None, entries).is_some();
        assert!(of(7, Some(leader), &[entry(3, 0)]));
        assert!(!of(8, Some(leader), &[entry(3, 0)]), "another node's vote");
        assert!(
            !of(7, Some(Vote::new(3, 7)), &[entry(3, 0)]),
            "not yet leader"
        );
        assert!(
            !of(7, Some(leader), &[entry(2, 0)]),
            "an older term's entry"
        );
        assert!(!of(7, Some(leader), &[]), "nothing to copy");
        assert!(!of(7, None, &[entry(3, 0)]), "no vote");
    }
}
