//! The store's error type, [`StoreError`].

use std::error::Error;
use std::net::SocketAddr;

use datacake_node::ConsistencyError;
use datacake_rpc::Status;

use crate::storage::BulkMutationError;

/// Why a store operation failed. `E` is the [`Storage`](crate::Storage)'s error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// The local storage failed.
    #[error("storage error")]
    Storage(#[source] E),
    /// A bulk storage call failed part-way (the error names the ids that were applied).
    #[error("storage error in a bulk call")]
    BulkStorage(#[source] BulkMutationError<E>),
    /// The consistency level could not be met (too few live nodes, or too few
    /// acknowledgements before the deadline). The local write is kept in the second case and
    /// replication continues in the background.
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    /// The keyspace name is reserved for the store's own bookkeeping (it starts with
    /// [`RESERVED_KEYSPACE_PREFIX`](crate::RESERVED_KEYSPACE_PREFIX)).
    #[error("keyspace {keyspace:?} is reserved for the store")]
    ReservedKeyspace {
        /// The refused name.
        keyspace: String,
    },
    /// A persisted purge watermark could not be decoded on start-up; starting without it
    /// could let purged deletes resurrect, so the store refuses to start.
    #[error("malformed purge watermark document {id} in the storage")]
    CorruptPurgeWatermark {
        /// The id of the document in
        /// [`PURGE_WATERMARK_KEYSPACE`](crate::PURGE_WATERMARK_KEYSPACE).
        id: u64,
    },
    /// A call to a peer failed.
    #[error("rpc to {peer} failed")]
    Transport {
        /// The peer's address.
        peer: SocketAddr,
        /// What went wrong.
        #[source]
        source: Status,
    },
}

impl<E> StoreError<E>
where
    E: Error + Send + Sync + 'static,
{
    /// `Err(ReservedKeyspace)` if `keyspace` is reserved for the store.
    pub(crate) fn check_keyspace(keyspace: &str) -> Result<(), Self> {
        if crate::watermark::is_reserved(keyspace) {
            return Err(Self::ReservedKeyspace {
                keyspace: keyspace.to_owned(),
            });
        }
        Ok(())
    }
}
