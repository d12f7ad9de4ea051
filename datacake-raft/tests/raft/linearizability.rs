//! A history checker: concurrent clients write and read one register through every node
//! while the leader crashes; the recorded history must be linearizable.
//!
//! The history is judged by the shared checker, [`test_helper::linearizability`]: writes whose
//! outcome is unknown (the call failed or timed out) may or may not have taken effect; failed
//! reads are dropped.

use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeNode, NodeId};
use datacake_raft::{RaftExtension, RaftHandle, ReadConsistency, StateMachine};
use parking_lot::Mutex;
use test_helper::linearizability::{check, Entry, Register as RegisterModel, RegisterOp, Verdict};
use tokio::time::Instant;

use crate::fixtures::{config, start_node, wait_for_leader_of, CONVERGE};

/// One register holding a number (initially 0).
#[derive(Debug, Default)]
struct Register(u64);

impl StateMachine for Register {
    type Command = u64;
    type Response = ();
    type Query = ();
    type Answer = u64;

    fn apply(&mut self, value: u64) {
        self.0 = value;
    }
    fn read(&self, _query: ()) -> u64 {
        self.0
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = u64::from_le_bytes(snapshot.try_into().expect("8 bytes"));
    }
}

async fn start(id: NodeId, seeds: &[String]) -> (DatacakeNode, RaftHandle<Register>) {
    let node = start_node(id, seeds).await;
    let raft = node
        .add_extension(RaftExtension::new(Register::default(), config(3)))
        .await
        .expect("raft starts");
    (node, raft)
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const SEED: u64 = 0x5eed_da7a_ca4e;
const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_see_a_linearizable_register_across_a_leader_crash() {
    let (n1, r1) = start(1, &[]).await;
    let seed = n1.me().public_addr.to_string();
    let (n2, r2) = start(2, std::slice::from_ref(&seed)).await;
    let (n3, r3) = start(3, std::slice::from_ref(&seed)).await;
    let leader = wait_for_leader_of(&[&r1, &r2, &r3]).await;

    let handles = Arc::new(Mutex::new(vec![r1, r2, r3]));
    let mut nodes = vec![Some(n1), Some(n2), Some(n3)];
    let history = Arc::new(Mutex::new(Vec::new()));
    let epoch = Instant::now();
    let stamp = move || u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let handles = handles.clone();
        let history = history.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng(SEED + client);
            for op in 0..OPS_PER_CLIENT {
                let raft = {
                    let handles = handles.lock();
                    handles[(rng.next() % handles.len() as u64) as usize].clone()
                };
                let call = stamp();
                let ok;
                if rng.next().is_multiple_of(2) {
                    let value = (client + 1) * 1_000 + op; // unique per write
                    let result =
                        tokio::time::timeout(Duration::from_secs(5), raft.write(value)).await;
                    let ret = matches!(result, Ok(Ok(()))).then(stamp);
                    ok = ret.is_some();
                    history.lock().push(Entry {
                        call,
                        ret,
                        op: RegisterOp::Write(value),
                    });
                } else {
                    let result = tokio::time::timeout(
                        Duration::from_secs(5),
                        raft.read((), ReadConsistency::Linearizable),
                    )
                    .await;
                    ok = matches!(result, Ok(Ok(_)));
                    if let Ok(Ok(value)) = result {
                        history.lock().push(Entry {
                            call,
                            ret: Some(stamp()),
                            op: RegisterOp::Read(value),
                        });
                    }
                }
                if !ok {
                    // The leader is gone: wait (bounded) until a live node leads again.
                    test_helper::wait_for("a live leader", CONVERGE, || async {
                        let handles = handles.lock().clone();
                        let live = |id| handles.iter().any(|h| h.node_id() == id);
                        handles.iter().all(|h| h.leader().is_some_and(live))
                    })
                    .await;
                }
            }
        }));
    }

    // Crash the leader once the clients are under way.
    test_helper::wait_for("clients to complete some operations", CONVERGE, || async {
        history.lock().len() >= 20
    })
    .await;
    let index = (leader - 1) as usize;
    handles.lock().retain(|h| h.node_id() != leader);
    drop(nodes[index].take());

    for client in clients {
        client.await.expect("client finishes");
    }
    let history = history.lock().clone();
    let completed = history.iter().filter(|op| op.ret.is_some()).count();
    println!("{} operations, {completed} completed", history.len());
    assert!(
        completed > (CLIENTS * OPS_PER_CLIENT / 2) as usize,
        "most operations complete"
    );
    assert_eq!(
        check(&RegisterModel, 0, &history),
        Verdict::Linearizable,
        "history: {history:?}"
    );
    drop(nodes);
}
