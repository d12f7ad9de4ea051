//! The store's RPC service: replication batches, digest exchange, bucket listing and document
//! fetch.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use datacake_node::DatacakeHandle;
use datacake_rpc::{Handler, Request, RpcService, ServiceRegistry, Status};
use tracing::warn;

use crate::keyspace::Mutation;
use crate::messages::{
    Ack, BucketReply, BucketRequest, DigestReply, DigestRequest, FetchReply, FetchRequest,
    ReplicateBatch, WireDigest, WireEntry, WireMutation,
};
use crate::replica::{Change, Counters, Replica};
use crate::storage::Storage;

/// The name the service is registered under.
pub(crate) const SERVICE_NAME: &str = "datacake-eventual-consistency";

/// Serves a node's replica to its peers.
pub(crate) struct StoreService<S> {
    pub(crate) replica: Arc<Replica<S>>,
    pub(crate) node: DatacakeHandle,
}

impl<S> std::fmt::Debug for StoreService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService").finish_non_exhaustive()
    }
}

impl<S: Storage> StoreService<S> {
    fn register(&self, remote: datacake_crdt::HLCTimestamp) -> Result<(), Status> {
        self.node
            .clock()
            .register_ts(remote)
            .map(|_| ())
            .map_err(|e| Status::invalid_payload(format!("clock: {e}")))
    }

    fn ack(&self) -> Ack {
        Ack {
            clock: self.node.clock().get_time(),
        }
    }
}

/// Turns wire mutations into changes.
pub(crate) fn to_changes(mutations: Vec<WireMutation>) -> Vec<Change> {
    mutations
        .into_iter()
        .map(|m| match m.data {
            Some(data) => Change {
                mutation: Mutation::Put {
                    key: m.key,
                    timestamp: m.timestamp,
                },
                data: Some(Bytes::from(data)),
            },
            None => Change {
                mutation: Mutation::Delete {
                    key: m.key,
                    timestamp: m.timestamp,
                },
                data: None,
            },
        })
        .collect()
}

impl<S: Storage> RpcService for StoreService<S> {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<ReplicateBatch>();
        registry.add_handler::<DigestRequest>();
        registry.add_handler::<BucketRequest>();
        registry.add_handler::<FetchRequest>();
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<ReplicateBatch> for StoreService<S> {
    type Reply = Ack;

    fn path() -> &'static str {
        "replicate"
    }

    async fn on_message(&self, request: Request<ReplicateBatch>) -> Result<Ack, Status> {
        let batch = request.into_inner().deserialize_view()?;
        self.register(batch.clock)?;
        for keyspace in batch.keyspaces {
            let changes = to_changes(keyspace.mutations);
            match self.replica.apply(&keyspace.keyspace, changes).await {
                Ok(applied) => Counters::add(&self.replica.counters.replicated, applied.len()),
                Err(error) => {
                    warn!(keyspace = %keyspace.keyspace, error = %error, "replicated write failed");
                    return Err(Status::internal(format!("storage: {error}")));
                }
            }
        }
        Ok(self.ack())
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<DigestRequest> for StoreService<S> {
    type Reply = DigestReply;

    fn path() -> &'static str {
        "digest"
    }

    async fn on_message(&self, request: Request<DigestRequest>) -> Result<DigestReply, Status> {
        let request = request.into_inner().deserialize_view()?;
        self.register(request.clock)?;
        if let Some(synced) = request.synced {
            self.replica.record_peer_synced(request.node_id, synced);
        }
        // Taken before the digests: everything they cover is at or before it.
        let clock = self.node.clock().get_time();
        let theirs: HashMap<String, u64> = request.totals.into_iter().collect();
        let digests = self
            .replica
            .totals()
            .into_iter()
            // A keyspace the requester lacks counts as empty (total 0).
            .filter(|(name, total)| theirs.get(name).copied().unwrap_or(0) != *total)
            .filter_map(|(keyspace, _)| {
                let digest = self.replica.digest(&keyspace)?;
                Some(WireDigest {
                    keyspace,
                    buckets: digest.buckets().to_vec(),
                })
            })
            .collect();
        Ok(DigestReply { clock, digests })
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
        let entries = self
            .replica
            .bucket_entries(&request.keyspace, &request.buckets)
            .into_iter()
            .map(|e| WireEntry {
                key: e.key,
                timestamp: e.timestamp,
                tombstone: e.tombstone,
            })
            .collect();
        Ok(BucketReply { entries })
    }
}

#[async_trait::async_trait]
impl<S: Storage> Handler<FetchRequest> for StoreService<S> {
    type Reply = FetchReply;

    fn path() -> &'static str {
        "fetch"
    }

    async fn on_message(&self, request: Request<FetchRequest>) -> Result<FetchReply, Status> {
        let request = request.into_inner().deserialize_view()?;
        if crate::watermark::is_reserved(&request.keyspace) {
            return Ok(FetchReply {
                documents: Vec::new(),
            });
        }
        let documents = self
            .replica
            .storage
            .multi_get(&request.keyspace, request.keys)
            .await
            .map_err(|e| Status::internal(format!("storage: {e}")))?
            .into_iter()
            .map(|d| WireMutation {
                key: d.id,
                timestamp: d.last_updated,
                data: Some(d.data.to_vec()),
            })
            .collect();
        Ok(FetchReply { documents })
    }
}
