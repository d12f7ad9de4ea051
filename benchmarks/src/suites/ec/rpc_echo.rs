//! The raw RPC baseline of the read rows: a tiny echo service registered on a cluster node,
//! called over the node pool's own channel, so one call is one round trip of datacake-rpc
//! on the path a replica read takes, without the store around it.

use std::time::Duration;

use datacake_eventual_consistency::Storage;
use datacake_rpc::RpcClient;

use super::cluster::BenchNode;
use crate::echo::{rpc_sequential_of, EchoService};

/// Bytes echoed per call: an echo of this many bytes archives to exactly as many bytes as
/// the store's reply to a peer's read of one 32-byte document (pinned by a test below), so
/// the baseline's reply weighs what a replica's does. Its request is as large as its reply,
/// a little more than the read's request (a clock, the keyspace name and one id).
pub(super) const ECHO_BYTES: usize = 96;

pub(super) struct RpcEcho {
    client: RpcClient<EchoService>,
}

impl RpcEcho {
    /// Registers the service on `server` and connects `client` to it through the channel
    /// `client`'s store uses for `server`.
    pub(super) fn start<S: Storage>(client: &BenchNode<S>, server: &BenchNode<S>) -> Self {
        server.node.add_rpc_service(EchoService);
        let channel = client
            .node
            .handle()
            .network()
            .get_or_connect(server.node.me().public_addr);
        Self {
            client: RpcClient::new(channel),
        }
    }

    /// `calls` echoes one after the other, timed one by one, from a task on the harness's
    /// runtime (as the read cells' callers are; see [`cell`](super::cell::cell)).
    pub(super) async fn serial(&self, calls: usize) -> anyhow::Result<Vec<Duration>> {
        let client = self.client.clone();
        tokio::spawn(rpc_sequential_of(client, calls, ECHO_BYTES)).await?
    }
}

#[cfg(test)]
mod tests {
    use datacake_crdt::HLCTimestamp;
    use datacake_rpc::rkyv;

    use super::*;

    /// The store's `WireMutation`, field for field.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    #[rkyv(crate = datacake_rpc::rkyv)]
    struct WireMutation {
        key: u64,
        timestamp: HLCTimestamp,
        data: Option<Vec<u8>>,
    }

    /// The store's `ReadReply`, field for field.
    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
    #[rkyv(crate = datacake_rpc::rkyv)]
    struct ReadReply {
        clock: HLCTimestamp,
        entries: Vec<WireMutation>,
        served: u32,
    }

    fn archived_len<T>(value: &T) -> usize
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        rkyv::to_bytes::<rkyv::rancor::Error>(value)
            .expect("archives")
            .len()
    }

    #[test]
    fn the_echo_weighs_a_read_reply_of_one_small_document() {
        let now = HLCTimestamp::new(1_700_000_000_000, 0, 1);
        let reply = ReadReply {
            clock: now,
            entries: vec![WireMutation {
                key: 1 << 32,
                timestamp: now,
                data: Some(super::super::cell::DOC.to_vec()),
            }],
            served: 1,
        };
        let echo = crate::echo::Echo::new(ECHO_BYTES);
        assert_eq!(archived_len(&echo), archived_len(&reply));
    }
}
