//! [`RaftConfig`] and [`LogStorage`].

// openraft's own error types (`StorageError`, `ConfigError`) are large; they are what its
// traits return, so helpers return them unboxed too (as openraft itself does).
#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::time::Duration;

/// Where a node keeps its Raft log, vote and snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogStorage {
    /// In memory: fast, forgotten on restart. For tests and throwaway clusters only — a node
    /// that restarts with an empty store must not rejoin under its old id.
    #[default]
    InMemory,
    /// In a directory: the log and vote in SQLite (fsynced before Raft is told they are
    /// saved), the latest snapshot in a file beside it. One Raft instance at a time uses a
    /// directory (its `LOCK` file is locked while the instance runs and until it has
    /// stopped); a second one fails to start with
    /// [`RaftError::DirectoryInUse`](crate::RaftError::DirectoryInUse).
    Durable(PathBuf),
}

/// How a node runs Raft.
///
/// **Bootstrap rule.** Every node of a new cluster is configured with the same
/// `bootstrap_expect = n`. Once a node sees `n` live members in gossip, it takes the `n`
/// lowest node ids among them; if it is the lowest of those, it probes the others, and only
/// if every one of them is in no cluster (nor about to initialise one) and sees the same `n`
/// lowest ids does it initialise the cluster with exactly those `n` voters. Every other node
/// waits to be added. A node that finds a member already in a cluster never initialises one.
/// (A node that restarts with an empty [`LogStorage::InMemory`] store is a new, pristine node:
/// do not reuse its id in a running cluster.)
///
/// ```
/// use std::time::Duration;
/// use datacake_raft::{LogStorage, RaftConfig};
///
/// let config = RaftConfig::new(3)
///     .with_election_timeout(Duration::from_millis(300), Duration::from_millis(600))
///     .with_heartbeat_interval(Duration::from_millis(100))
///     .with_forward_to_leader(true)
///     .with_storage(LogStorage::InMemory);
/// assert_eq!(config.bootstrap_expect(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub(crate) bootstrap_expect: usize,
    pub(crate) election_timeout: (Duration, Duration),
    pub(crate) heartbeat_interval: Duration,
    pub(crate) forward_to_leader: bool,
    pub(crate) rpc_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) snapshot_after_logs: u64,
    pub(crate) logs_kept_after_snapshot: u64,
    pub(crate) bootstrap_interval: Duration,
    pub(crate) storage: LogStorage,
    pub(crate) auto_membership: Option<(usize, Duration)>,
    pub(crate) max_snapshot_size: u64,
}

/// The default of [`RaftConfig::with_request_timeout`]: 10 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The default of [`RaftConfig::with_max_snapshot_size`]: 1 GiB.
pub const DEFAULT_MAX_SNAPSHOT_SIZE: u64 = 1 << 30;

impl RaftConfig {
    /// A configuration for a cluster bootstrapped with `bootstrap_expect` voters, with
    /// defaults: election timeout 1.5–3 s, heartbeat 500 ms, writes and linearizable reads
    /// forwarded to the leader, a snapshot every 5000 applied entries, snapshots of at most
    /// [`DEFAULT_MAX_SNAPSHOT_SIZE`] received, in-memory storage.
    pub fn new(bootstrap_expect: usize) -> Self {
        Self {
            bootstrap_expect,
            election_timeout: (Duration::from_millis(1500), Duration::from_millis(3000)),
            heartbeat_interval: Duration::from_millis(500),
            forward_to_leader: true,
            rpc_timeout: Duration::from_secs(5),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            snapshot_after_logs: 5000,
            logs_kept_after_snapshot: 1000,
            bootstrap_interval: Duration::from_millis(100),
            storage: LogStorage::InMemory,
            auto_membership: None,
            max_snapshot_size: DEFAULT_MAX_SNAPSHOT_SIZE,
        }
    }

    /// How many voters the cluster is bootstrapped with.
    pub fn bootstrap_expect(&self) -> usize {
        self.bootstrap_expect
    }

    /// A follower starts an election after hearing nothing from a leader for a random time
    /// in `[min, max)`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = datacake_raft::RaftConfig::new(3)
    ///     .with_election_timeout(Duration::from_millis(200), Duration::from_millis(400));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_election_timeout(mut self, min: Duration, max: Duration) -> Self {
        self.election_timeout = (min, max);
        self
    }

    /// How often the leader sends heartbeats (keep it well below the election timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = datacake_raft::RaftConfig::new(3).with_heartbeat_interval(Duration::from_millis(50));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Whether a follower forwards writes and linearizable reads to the leader (`true`), or
    /// fails them with [`RaftError::NotLeader`](crate::RaftError::NotLeader) (`false`).
    ///
    /// ```
    /// let config = datacake_raft::RaftConfig::new(3).with_forward_to_leader(false);
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_forward_to_leader(mut self, forward: bool) -> Self {
        self.forward_to_leader = forward;
        self
    }

    /// The deadline of one Raft RPC and of one forwarded call.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = datacake_raft::RaftConfig::new(3).with_rpc_timeout(Duration::from_secs(2));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// How long [`RaftHandle::write`](crate::RaftHandle::write) and
    /// [`read`](crate::RaftHandle::read) wait at most ([`DEFAULT_REQUEST_TIMEOUT`]), forwarding
    /// included; [`write_within`](crate::RaftHandle::write_within) and
    /// [`read_within`](crate::RaftHandle::read_within) set it per call. Past it the call fails
    /// with [`RaftError::QuorumUnavailable`](crate::RaftError::QuorumUnavailable) if this node
    /// leads without a quorum, else [`RaftError::Timeout`](crate::RaftError::Timeout).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = datacake_raft::RaftConfig::new(3).with_request_timeout(Duration::from_secs(2));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Take a snapshot every `logs` applied entries; after a snapshot, keep the last `keep`
    /// entries of the log and purge the rest.
    ///
    /// ```
    /// let config = datacake_raft::RaftConfig::new(3).with_snapshot_policy(100, 10);
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_snapshot_policy(mut self, logs: u64, keep: u64) -> Self {
        self.snapshot_after_logs = logs;
        self.logs_kept_after_snapshot = keep;
        self
    }

    /// Where the log, the vote and snapshots are kept.
    ///
    /// ```
    /// use datacake_raft::{LogStorage, RaftConfig};
    /// let config = RaftConfig::new(3).with_storage(LogStorage::Durable("/var/lib/app/raft".into()));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_storage(mut self, storage: LogStorage) -> Self {
        self.storage = storage;
        self
    }

    /// Turns on the automatic membership policy (off by default: membership changes only
    /// through the handle). The leader then adds every live gossip member as a learner,
    /// promotes caught-up learners while there are fewer than `max_voters` voters, and removes
    /// a member gone from gossip for `grace` or longer — a voter only while the live voters
    /// left stay a majority. Members that flap within `grace` are never removed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = datacake_raft::RaftConfig::new(3).with_auto_membership(5, Duration::from_secs(30));
    /// # let _ = config;
    /// ```
    #[must_use]
    pub fn with_auto_membership(mut self, max_voters: usize, grace: Duration) -> Self {
        self.auto_membership = Some((max_voters, grace));
        self
    }

    /// The largest snapshot, in bytes, this node accepts from a leader (default
    /// [`DEFAULT_MAX_SNAPSHOT_SIZE`], 1 GiB; must be at least 1).
    ///
    /// A received snapshot is buffered whole in memory before it is restored, and any peer
    /// that reaches the RPC port can send one, so this bounds the memory a peer can make the
    /// node spend on it. The default is far above what an in-memory [`StateMachine`] usually
    /// snapshots (the state, its snapshot and the received copy all live in memory at once)
    /// while keeping that buffer well below a typical node's memory. Give every node the same
    /// limit, at least the size of the largest snapshot your state machine produces: a
    /// follower refuses a larger snapshot, so a lagging follower or a new learner could not
    /// catch up once the log before the snapshot is purged. The leader warns when it builds
    /// a snapshot above its own limit.
    ///
    /// ```
    /// let config = datacake_raft::RaftConfig::new(3).with_max_snapshot_size(256 << 20);
    /// # let _ = config;
    /// ```
    ///
    /// [`StateMachine`]: crate::StateMachine
    #[must_use]
    pub fn with_max_snapshot_size(mut self, bytes: u64) -> Self {
        self.max_snapshot_size = bytes;
        self
    }

    /// Checks the settings openraft does not check itself.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_snapshot_size == 0 {
            return Err("max_snapshot_size must be at least 1 byte".to_string());
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be longer than zero".to_string());
        }
        Ok(())
    }

    /// The openraft configuration this maps to.
    pub(crate) fn to_openraft(&self) -> Result<openraft::Config, openraft::ConfigError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "datacake".to_string(),
            election_timeout_min: millis(self.election_timeout.0),
            election_timeout_max: millis(self.election_timeout.1),
            heartbeat_interval: millis(self.heartbeat_interval),
            install_snapshot_timeout: millis(self.rpc_timeout),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_logs),
            max_in_snapshot_log_to_keep: self.logs_kept_after_snapshot,
            // Receivers refuse larger chunks (`guard::SNAPSHOT_CHUNK`).
            snapshot_max_chunk_size: crate::guard::SNAPSHOT_CHUNK,
            // With the size bound on a command, keeps an append-entries message below the
            // RPC body limit.
            max_payload_entries: crate::proposer::MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_max_snapshot_size_is_rejected() {
        assert_eq!(RaftConfig::new(3).validate(), Ok(()));
        assert_eq!(
            RaftConfig::new(3).max_snapshot_size,
            DEFAULT_MAX_SNAPSHOT_SIZE
        );
        assert!(RaftConfig::new(3)
            .with_max_snapshot_size(0)
            .validate()
            .is_err());
        assert_eq!(
            RaftConfig::new(3).with_max_snapshot_size(1).validate(),
            Ok(())
        );
    }
}
