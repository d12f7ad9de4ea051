//! [`RaftExtension`]: starts Raft on a node.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use datacake_node::{ClusterExtension, DatacakeHandle, DatacakeNode, ExtensionGuard};
use futures::StreamExt;
use tracing::{info, warn};

use crate::bootstrap;
use crate::campaign;
use crate::committed::{CommitIndex, Observed};
use crate::config::{LogStorage, RaftConfig};
use crate::dir_lock::{DirLock, LOCK_WAIT};
use crate::early;
use crate::error::RaftError;
use crate::format;
use crate::handle::{HandleInner, RaftHandle};
use crate::log_store::MemLogStore;
use crate::machine::{self, StateMachine};
use crate::machine_store::StateMachineStore;
use crate::network::{Network, RaftService, SERVICE_NAME};
use crate::policy;
use crate::proposer::Proposer;
use crate::sqlite_log::SqliteLogStore;
use crate::types::{Raft, RaftNodeId};

/// The SQLite file inside a durable storage directory.
const LOG_FILE: &str = "raft-log.sqlite";

/// Runs a Raft group replicating the state machine `S` on a node; see
/// [`RaftConfig`] for the bootstrap rule. A node runs one Raft group (its RPC service has one
/// fixed name).
///
/// ```no_run
/// # use datacake_raft::{RaftConfig, RaftExtension, ReadConsistency, StateMachine};
/// # #[derive(Default)] struct Counter(i64);
/// # impl StateMachine for Counter {
/// #     type Command = i64; type Response = i64; type Query = (); type Answer = i64;
/// #     fn apply(&mut self, d: i64) -> i64 { self.0 += d; self.0 }
/// #     fn read(&self, _: ()) -> i64 { self.0 }
/// #     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
/// #     fn restore(&mut self, b: &[u8]) { self.0 = i64::from_le_bytes(b.try_into().unwrap()) }
/// # }
/// # async fn demo(node: &datacake_node::DatacakeNode) -> Result<(), datacake_raft::RaftError> {
/// let raft = node.add_extension(RaftExtension::new(Counter::default(), RaftConfig::new(3))).await?;
/// raft.write(5).await?;
/// assert_eq!(raft.read((), ReadConsistency::Linearizable).await?, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RaftExtension<S> {
    machine: S,
    config: RaftConfig,
}

impl<S: StateMachine> RaftExtension<S> {
    /// Raft over `machine`, run per `config`.
    pub fn new(machine: S, config: RaftConfig) -> Self {
        Self { machine, config }
    }
}

#[async_trait]
impl<S: StateMachine> ClusterExtension for RaftExtension<S> {
    type Output = RaftHandle<S>;
    type Error = RaftError;

    async fn init_extension(self, node: &DatacakeNode) -> Result<RaftHandle<S>, RaftError> {
        let config = self.config;
        config.validate().map_err(|reason| RaftError::Config {
            reason,
            source: None,
        })?;
        let raft_config = config.to_openraft().map_err(|e| RaftError::Config {
            reason: "openraft refused the timings or limits".to_string(),
            source: Some(e.into()),
        })?;
        let id = RaftNodeId::from(node.me().node_id);
        let machine = machine::share(self.machine);
        // The durable directory is locked before anything in it is read: one instance at a
        // time (see `dir_lock`).
        let durable: Option<(PathBuf, DirLock)> = match &config.storage {
            LogStorage::InMemory => None,
            LogStorage::Durable(dir) => {
                Some((dir.clone(), DirLock::acquire(dir, LOCK_WAIT).await?))
            }
        };
        let dir = durable.as_ref().map(|(dir, _)| dir.clone());
        let state_machine = StateMachineStore::open_off_runtime(machine.clone(), dir.clone())
            .await?
            .with_size_limit(config.max_snapshot_size);
        let network = Network::new(node.handle(), config.election_timeout.0);
        let raft_config = Arc::new(raft_config);
        // The durable log (openraft owns it), to take and send early copies (see `early`).
        let mut early_log = None;
        let commit = Arc::new(CommitIndex::default());
        let raft: Raft = match &durable {
            None => {
                let log = Observed::new(MemLogStore::default(), commit.clone());
                Raft::new(id, raft_config, network, log, state_machine).await
            }
            Some((dir, lock)) => {
                let path = dir.join(LOG_FILE);
                // A log of another format version is refused before it is read.
                format::check_log(&path)?;
                let log = SqliteLogStore::open_locked(
                    &path,
                    lock.clone(),
                    state_machine.snapshot_on_disk(),
                )
                .map_err(|e| RaftError::storage(path.display().to_string(), e))?;
                early_log = Some(log.downgrade());
                let log = Observed::new(log, commit.clone());
                Raft::new(id, raft_config, network, log, state_machine).await
            }
        }
        // openraft reads the log, vote and snapshot as it starts.
        .map_err(|e| RaftError::storage("starting raft on the stored state", e))?;
        let bootstrapping = Arc::new(AtomicBool::new(false));
        let proposer = Proposer::start(raft.clone());
        // Stops Raft on this node (service, tasks, openraft) with the last handle.
        let guard = ExtensionGuard::new(node.handle(), SERVICE_NAME);
        let tasks = guard.tasks();
        if let Some(log) = early_log.as_ref().and_then(|log| log.upgrade()) {
            log.send_early_copies(early::start(
                raft.clone(),
                node.handle(),
                config.rpc_timeout,
                &tasks,
            ));
        }
        node.add_rpc_service(RaftService::new(
            raft.clone(),
            proposer.clone(),
            machine.clone(),
            node.handle(),
            bootstrapping.clone(),
            config.max_snapshot_size,
            early_log,
        ));

        // Raft stops with the node (shut down or dropped), with the last handle, or once the
        // cluster lists a newer incarnation of this node's id.
        let mut signal = node.shutdown_signal();
        let (stopping, stopped, fence) = (raft.clone(), tasks.clone(), node.handle());
        tokio::spawn(async move {
            // The directory stays locked until openraft has stopped (the log's writer thread
            // holds it too, until its last commit).
            let _lock = durable.map(|(_, lock)| lock);
            tokio::select! {
                () = signal.wait() => {}
                () = stopped.stopped() => {}
                newer = superseded(&fence) => warn!(
                    node_id = fence.me().node_id,
                    %newer,
                    "this node id was started again elsewhere: raft stops in this process"
                ),
            }
            let _ = stopping.shutdown().await;
        });
        tasks.spawn(crate::metrics::report(raft.metrics(), commit.clone()));
        let electing = raft.clone();
        tasks.spawn(campaign::resample_campaigns(
            raft.server_metrics(),
            config.election_timeout,
            move || {
                let raft = electing.clone();
                async move {
                    // (Fails only once Raft stopped, which ends this task too.)
                    let _ = raft.trigger().elect().await;
                }
            },
        ));
        tasks.spawn(bootstrap::run(
            raft.clone(),
            node.handle(),
            config.bootstrap_expect,
            config.bootstrap_interval,
            config.rpc_timeout,
            bootstrapping,
        ));
        if let Some((max_voters, grace)) = config.auto_membership {
            tasks.spawn(policy::run(
                raft.clone(),
                node.handle(),
                max_voters,
                grace,
                config.heartbeat_interval,
            ));
        }
        info!(
            node_id = node.me().node_id,
            expect = config.bootstrap_expect,
            "raft started"
        );
        Ok(RaftHandle::new(HandleInner {
            raft,
            commit,
            proposer,
            machine,
            node: node.handle(),
            forward: config.forward_to_leader,
            rpc_timeout: config.rpc_timeout,
            request_timeout: config.request_timeout,
            lease: config.election_timeout.0,
            _guard: guard,
        }))
    }
}

/// Resolves with the address of a newer incarnation of `node`'s id once the cluster lists it
/// instead of this process (never, if the membership stream ends first: the node stopped).
/// Two processes under one id could vote twice in a term, so the older one's Raft must stop.
async fn superseded(node: &DatacakeHandle) -> std::net::SocketAddr {
    let mut changes = node.membership_changes();
    loop {
        if let Some(newer) = node.superseded_by() {
            return newer;
        }
        if changes.next().await.is_none() {
            return std::future::pending().await;
        }
    }
}
