//! The commit index every node knows: openraft 0.9 hands it to each node's log store
//! (`save_committed`, on the leader and on followers alike, before it applies what it
//! commits) but publishes it in no metric. [`Observed`] wraps a log store and keeps the last
//! value in a [`CommitIndex`] that [`RaftStatus`](crate::RaftStatus) reads.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};

use crate::types::{Entry, LogId, StorageResult, TypeConfig, Vote};

/// The highest log index this node knows to be committed (shared, lock-free).
#[derive(Debug, Default)]
pub(crate) struct CommitIndex(
    /// The index plus one; 0 while nothing is known to be committed.
    AtomicU64,
);

impl CommitIndex {
    /// The index, if any entry is known to be committed.
    pub(crate) fn get(&self) -> Option<u64> {
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, committed: Option<LogId>) {
        let value = committed.map_or(0, |id| id.index.saturating_add(1));
        self.0.store(value, Ordering::Release);
    }
}

/// A log store that records in a [`CommitIndex`] what openraft tells it is committed (and,
/// at start, what it read back); everything else goes to the store unchanged.
pub(crate) struct Observed<L> {
    store: L,
    commit: Arc<CommitIndex>,
}

impl<L> Observed<L> {
    pub(crate) fn new(store: L, commit: Arc<CommitIndex>) -> Self {
        Self { store, commit }
    }
}

impl<L: RaftLogReader<TypeConfig>> RaftLogReader<TypeConfig> for Observed<L> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        self.store.try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> StorageResult<Vec<Entry>> {
        self.store.limited_get_log_entries(start, end).await
    }
}

impl<L: RaftLogStorage<TypeConfig>> RaftLogStorage<TypeConfig> for Observed<L> {
    type LogReader = L::LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        self.store.get_log_state().await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.store.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        self.store.save_vote(vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        self.store.read_vote().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        self.store.save_committed(committed).await?;
        self.commit.set(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        let committed = self.store.read_committed().await?;
        self.commit.set(committed);
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        self.store.append(entries, callback).await
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        self.store.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        self.store.purge(log_id).await
    }
}
