//! Levels that cannot be met, and what rogue peers send: typed errors, never a hang or a
//! panic.

use std::time::Duration;

use counter_extension::messages::{
    Entry, Fetch, Merge, MergeAck, MAX_ENTRIES_PER_MESSAGE, MAX_NAME_LEN,
};
use counter_extension::{CounterError, CounterExtension, SERVICE_NAME};
use datacake_node::{Consistency, ConsistencyError, HLCTimestamp};
use datacake_rpc::{async_trait, ErrorCode, Handler, Request, RpcService, ServiceRegistry, Status};

use test_helper::wait_for;

use crate::fixtures::{cluster, rogue_client, start, start_stand_in, start_with, DEADLINE};

fn entry(name: &str, node: u32, total: u64) -> Entry {
    Entry {
        name: name.to_owned(),
        node,
        total,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_level_with_too_few_live_peers_is_refused() {
    let nodes = cluster(3).await;
    let error = nodes[0]
        .counter
        .incr("hits", 1, Consistency::Three)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CounterError::Consistency(ConsistencyError::NotEnoughNodes {
                live: 2,
                required: 3
            })
        ),
        "{error}"
    );
    // Refused as a level, but applied here, and it still spreads to the live peers.
    assert_eq!(nodes[0].counter.get("hits"), 1);
    for n in &nodes[1..] {
        wait_for("the increment spreads anyway", DEADLINE, || async {
            n.counter.get("hits") == 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_increment_fails_naming_a_peer_whose_counter_stopped() {
    let mut nodes = cluster(3).await;
    // Node 3 stays a live member, but its counter is gone: its service answers Unavailable.
    let third = nodes.pop().unwrap();
    let (node3, counter3) = (third.node, third.counter);
    drop(counter3);
    let error = nodes[0]
        .counter
        .incr("hits", 1, Consistency::All)
        .await
        .unwrap_err();
    match error {
        CounterError::PeerFailed {
            node_id, status, ..
        } => {
            assert_eq!(node_id, 3);
            assert_eq!(status.code(), ErrorCode::Unavailable);
        }
        other => panic!("expected PeerFailed for node 3, got {other}"),
    }
    // The increment stays applied here and reached node 2.
    assert_eq!(nodes[0].counter.get("hits"), 1);
    assert_eq!(nodes[1].counter.get("hits"), 1, "node 2 acknowledged it");
    assert!(nodes[0].counter.statistics().peer_failures >= 1);
    node3.shutdown().await;
}

/// Stands in for the counter service on a peer: takes every merge and never answers.
struct Silent;

impl RpcService for Silent {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Merge>();
    }
}

#[async_trait]
impl Handler<Merge> for Silent {
    type Reply = MergeAck;

    fn path() -> &'static str {
        "merge"
    }

    async fn on_message(&self, _request: Request<Merge>) -> Result<MergeAck, Status> {
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_fails_the_increment_at_the_deadline() {
    let timeout = Duration::from_millis(300);
    let first = start_with(
        1,
        Vec::new(),
        CounterExtension::new().with_rpc_timeout(timeout),
    )
    .await;
    let silent = start_stand_in(2, vec![first.addr().to_string()], Silent).await;
    first.node.wait_for_nodes([1, 2], DEADLINE).await.unwrap();

    let incr = first.counter.incr("hits", 1, Consistency::One);
    let error = tokio::time::timeout(DEADLINE, incr)
        .await
        .expect("the increment returns instead of hanging")
        .unwrap_err();
    match error {
        CounterError::PeerTimedOut {
            node_id,
            timeout: t,
            ..
        } => {
            assert_eq!(node_id, 2);
            assert_eq!(t, timeout);
        }
        other => panic!("expected PeerTimedOut for node 2, got {other}"),
    }
    silent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_get_typed_errors() {
    let node = start(1, Vec::new()).await;
    node.counter
        .incr("hits", 5, Consistency::None)
        .await
        .unwrap();
    let client = rogue_client(node.addr());
    let clock = node.node.clock().get_time();
    let merge = |entries| Merge {
        from: 9,
        clock,
        entries,
    };

    let too_many = (0..=MAX_ENTRIES_PER_MESSAGE as u32)
        .map(|n| entry("hits", n, 1_000))
        .collect();
    let long_name = "x".repeat(MAX_NAME_LEN + 1);
    let refusals = [
        client.send(&merge(too_many)).await.map(|_| ()),
        client
            .send(&merge(vec![entry(&long_name, 9, 1)]))
            .await
            .map(|_| ()),
        client.send(&merge(vec![entry("", 9, 1)])).await.map(|_| ()),
        client
            .send(&Fetch {
                from: 9,
                clock,
                name: long_name.clone(),
            })
            .await
            .map(|_| ()),
    ];
    for refusal in refusals {
        assert_eq!(refusal.unwrap_err().code(), ErrorCode::InvalidPayload);
    }
    assert_eq!(node.counter.statistics().messages_refused, 4);

    // Bytes that are no `Merge` archive at all, sent to the merge handler.
    let garbage = client.new_client::<Garbage>();
    let status = garbage
        .send(&Junk {
            bytes: vec![0xff; 7],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), ErrorCode::InvalidPayload);

    assert_eq!(node.counter.get("hits"), 5, "nothing refused was applied");
    assert_eq!(node.counter.statistics().merges_received, 0);
    node.node.shutdown().await;
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Junk {
    bytes: Vec<u8>,
}

/// Sends `Junk` to the path of the counter's merge handler.
struct Garbage;

impl RpcService for Garbage {
    fn service_name() -> &'static str {
        SERVICE_NAME
    }

    fn register_handlers(registry: &mut ServiceRegistry<Self>) {
        registry.add_handler::<Junk>();
    }
}

#[async_trait]
impl Handler<Junk> for Garbage {
    type Reply = MergeAck;

    fn path() -> &'static str {
        "merge"
    }

    async fn on_message(&self, _request: Request<Junk>) -> Result<MergeAck, Status> {
        unreachable!("only used as a client")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stamp_too_far_ahead_is_refused_and_counted() {
    let node = start(1, Vec::new()).await;
    let now = node.node.clock().get_time();
    let hour_ahead = HLCTimestamp::new(now.millis() + 3_600_000, 0, 9);
    let status = rogue_client(node.addr())
        .send(&Merge {
            from: 9,
            clock: hour_ahead,
            entries: vec![entry("hits", 9, 1)],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), ErrorCode::InvalidPayload);
    assert!(status.message().contains("clock"), "{status}");
    assert_eq!(node.counter.statistics().clock_rejections, 1);
    assert_eq!(
        node.counter.get("hits"),
        0,
        "a refused merge is not applied"
    );
    assert!(
        node.node.clock().get_time().millis() < hour_ahead.millis(),
        "our clock did not jump ahead"
    );
    node.node.shutdown().await;
}
