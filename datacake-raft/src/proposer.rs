//! Batching of client writes into log entries.
//!
//! openraft 0.9 appends each `client_write` as a log entry of its own and waits for the
//! leader's log to report it flushed before it handles the next message, so with a durable
//! log every entry costs the leader one fsync whatever the log store does. The [`Proposer`]
//! therefore puts many commands into one entry: it keeps at most [`MAX_IN_FLIGHT`] entry
//! proposed at a time, and every command that arrives while it is replicated, fsynced and
//! applied goes into the next entry ([`Batch`]), up to [`MAX_BATCH_COMMANDS`] commands and
//! [`MAX_BATCH_BYTES`]. One client waits only for its own entry; 256 clients share a few.
//!
//! Commands in an entry are applied in order and each gets its own response, so batching is
//! invisible to the state machine and to callers.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError as OpenraftError};
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::codec::Encoded;
use crate::replica::Outcome;
use crate::types::Raft;

/// The most entries proposed and not yet applied at a time. Measured on the `raft` suite
/// (1, 2, 3 and 4 tried, see the README): with one, every command that arrives while an
/// entry is replicated joins the next, and the batches are the largest; two measured about
/// the same, three and four lower (in runs with other builds running).
pub(crate) const MAX_IN_FLIGHT: usize = 1;

/// The most times the batching task yields, while commands keep arriving, before it takes
/// the queued ones into an entry.
const MAX_GATHER_YIELDS: usize = 8;

/// The most commands in one entry.
pub(crate) const MAX_BATCH_COMMANDS: usize = 1024;

/// An entry takes no more commands once it holds this many bytes of them (a single larger
/// command, up to [`MAX_COMMAND_BYTES`], goes in an entry of its own).
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 10;

/// The largest archived command a node proposes. With [`MAX_PAYLOAD_ENTRIES`] it bounds an
/// append-entries message below the RPC server's default body limit (64 MiB).
pub(crate) const MAX_COMMAND_BYTES: usize = 1 << 20;

/// The most entries openraft sends in one append-entries message. (A peer that refuses a
/// message as too large is sent fewer: see the network's `append_entries`.)
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = 32;

/// Commands waiting to be batched; a writer past this waits for room.
const QUEUE: usize = 4 * MAX_BATCH_COMMANDS;

/// The application data of one log entry: user commands, each archived once by the writer,
/// applied in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Batch(pub(crate) Vec<Encoded>);

/// Decodes at most [`MAX_BATCH_COMMANDS`] commands, the most a proposer puts in an entry: a
/// peer's append message cannot make this node hold millions of empty commands (a byte each
/// on the wire, an aligned buffer each in memory).
impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Commands;

        impl<'de> Visitor<'de> for Commands {
            type Value = Batch;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a batch of at most {MAX_BATCH_COMMANDS} commands")
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> Result<Batch, D::Error> {
                deserializer.deserialize_seq(self)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
                let announced = seq.size_hint().unwrap_or(0);
                if announced > MAX_BATCH_COMMANDS {
                    return Err(A::Error::invalid_length(announced, &self));
                }
                let mut commands = Vec::with_capacity(announced);
                while let Some(command) = seq.next_element()? {
                    if commands.len() == MAX_BATCH_COMMANDS {
                        return Err(A::Error::invalid_length(commands.len() + 1, &self));
                    }
                    commands.push(command);
                }
                Ok(Batch(commands))
            }
        }

        deserializer.deserialize_newtype_struct("Batch", Commands)
    }
}

/// A command waiting for its entry, and where its outcome goes.
struct Proposal {
    command: Encoded,
    outcome: oneshot::Sender<Outcome>,
}

/// Proposes this node's writes (its own and those forwarded to it), many commands per log
/// entry. Cheap to clone; the batching task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proposer").finish_non_exhaustive()
    }
}

impl Proposer {
    /// Starts the batching task for `raft` (needs a tokio runtime).
    pub(crate) fn start(raft: Raft) -> Self {
        let (queue, commands) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, commands));
        Self { queue }
    }

    /// Proposes `command` and waits until its entry is committed and applied on this node
    /// (the leader), or refused.
    pub(crate) async fn write(&self, command: Encoded) -> Outcome {
        if command.as_bytes().len() > MAX_COMMAND_BYTES {
            return Outcome::TooLarge {
                size: command.as_bytes().len() as u64,
                limit: MAX_COMMAND_BYTES as u64,
            };
        }
        let (outcome, answer) = oneshot::channel();
        if self
            .queue
            .send(Proposal { command, outcome })
            .await
            .is_err()
        {
            return Outcome::Stopped;
        }
        answer.await.unwrap_or(Outcome::Stopped)
    }
}

/// The batching task: waits for room for another entry, then takes every queued command (up
/// to the bounds) into it.
async fn run(raft: Raft, mut commands: mpsc::Receiver<Proposal>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Proposal> = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(proposal) => proposal,
            None => match commands.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        // Writers woken by the entry that just finished are about to queue their next
        // commands: let them, so they share this entry instead of each taking the next.
        // Yield again while the queue still grows (a lone writer costs one yield).
        let mut queued = commands.len();
        for _ in 0..MAX_GATHER_YIELDS {
            tokio::task::yield_now().await;
            let now = commands.len();
            if now == queued {
                break;
            }
            queued = now;
        }
        let mut batch = vec![first];
        let mut bytes = batch[0].command.as_bytes().len();
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = commands.try_recv() else {
                break;
            };
            let len = next.command.as_bytes().len();
            if bytes + len > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += len;
            batch.push(next);
        }
        // A writer that gave up (its deadline passed) before its entry was proposed is left
        // out: it was told the outcome is unknown, and it is now known never to happen.
        batch.retain(|proposal| !proposal.outcome.is_closed());
        if batch.is_empty() {
            continue;
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Proposes `batch` as one entry and hands each writer its outcome.
///
/// Waits no longer than some writer still waits: openraft 0.9 may never answer a
/// `client_write` (an entry a deposed leader proposed and then received only through a
/// snapshot is neither applied nor truncated on it), and the entry's permit, held until this
/// returns, is the only one: waiting on would stop every later write on this node. Once
/// every writer has given up (its deadline passed), the entry's outcome is unknown to all
/// who asked, and the next entry may go.
async fn propose(raft: &Raft, batch: Vec<Proposal>) {
    let (commands, mut writers): (Vec<Encoded>, Vec<oneshot::Sender<Outcome>>) = batch
        .into_iter()
        .map(|proposal| (proposal.command, proposal.outcome))
        .unzip();
    let all_gave_up = futures::future::join_all(writers.iter_mut().map(|w| w.closed()));
    let written = tokio::select! {
        written = raft.client_write(Batch(commands)) => written,
        _ = all_gave_up => {
            tracing::debug!("every writer of a proposed entry gave up; not waiting for it");
            return;
        }
    };
    match written {
        Ok(response) => {
            let mut replies = response.data.into_iter();
            for writer in writers {
                let outcome = match replies.next() {
                    Some(Ok(reply)) => Outcome::Done(reply.as_bytes().to_vec()),
                    Some(Err(reason)) => Outcome::Codec(reason),
                    None => Outcome::Codec("the entry's replies ran out".to_string()),
                };
                let _ = writer.send(outcome);
            }
        }
        Err(error) => {
            for writer in writers {
                let _ = writer.send(refused(&error));
            }
        }
    }
}

/// What a refused `client_write` means for each of its writers.
fn refused(error: &OpenraftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> Outcome {
    match error {
        OpenraftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            Outcome::not_leader(forward)
        }
        OpenraftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Outcome::Codec(e.to_string())
        }
        OpenraftError::Fatal(_) => Outcome::Stopped,
    }
}
