//! A history checker: concurrent clients write and read one register through every node
//! while the leader crashes; the recorded history must be linearizable.
//!
//! The checker is a Wing & Gong style search (with memoisation on the set of linearized
//! operations and the register value): an operation may be linearized next if it was invoked
//! before every other pending operation returned. Writes whose outcome is unknown (the call
//! failed or timed out) may or may not have taken effect; failed reads are dropped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datacake_node::{DatacakeNode, NodeId};
use datacake_raft::{RaftExtension, RaftHandle, ReadConsistency, StateMachine};
use parking_lot::Mutex;
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

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Write(u64),
    Read(u64),
}

/// One operation of the history: invoked at `call`, returned at `ret` (`None`: unknown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Op {
    pub(crate) call: u64,
    pub(crate) ret: Option<u64>,
    pub(crate) kind: Kind,
}

/// `true` if `history` is linearizable for a register starting at `initial`.
pub(crate) fn linearizable(history: &[Op], initial: u64) -> bool {
    let mut done = vec![false; history.len()];
    let mut seen = HashSet::new();
    search(history, &mut done, initial, &mut seen)
}

fn search(
    history: &[Op],
    done: &mut [bool],
    value: u64,
    seen: &mut HashSet<(Vec<bool>, u64)>,
) -> bool {
    let pending: Vec<usize> = (0..history.len()).filter(|i| !done[*i]).collect();
    if pending.iter().all(|i| history[*i].ret.is_none()) {
        return true; // Every completed operation is linearized; the rest may never have run.
    }
    if !seen.insert((done.to_vec(), value)) {
        return false;
    }
    let first_return = pending
        .iter()
        .filter_map(|i| history[*i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for &i in &pending {
        let op = history[i];
        if op.call > first_return {
            continue;
        }
        let next = match op.kind {
            Kind::Write(v) => v,
            Kind::Read(v) if v == value => value,
            Kind::Read(_) => continue,
        };
        done[i] = true;
        if search(history, done, next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
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
                    history.lock().push(Op {
                        call,
                        ret,
                        kind: Kind::Write(value),
                    });
                } else {
                    let result = tokio::time::timeout(
                        Duration::from_secs(5),
                        raft.read((), ReadConsistency::Linearizable),
                    )
                    .await;
                    ok = matches!(result, Ok(Ok(_)));
                    if let Ok(Ok(value)) = result {
                        history.lock().push(Op {
                            call,
                            ret: Some(stamp()),
                            kind: Kind::Read(value),
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
    assert!(
        linearizable(&history, 0),
        "history is not linearizable: {history:?}"
    );
    drop(nodes);
}

#[test]
fn the_checker_accepts_a_linearizable_history() {
    let history = [
        Op {
            call: 0,
            ret: Some(10),
            kind: Kind::Write(1),
        },
        Op {
            call: 5,
            ret: Some(15),
            kind: Kind::Read(0),
        }, // overlaps the write
        Op {
            call: 20,
            ret: Some(30),
            kind: Kind::Read(1),
        },
        Op {
            call: 25,
            ret: None,
            kind: Kind::Write(2),
        }, // unknown outcome, never observed
        Op {
            call: 40,
            ret: Some(50),
            kind: Kind::Read(1),
        },
    ];
    assert!(linearizable(&history, 0));
}

#[test]
fn the_checker_rejects_a_stale_read() {
    let history = [
        Op {
            call: 0,
            ret: Some(10),
            kind: Kind::Write(1),
        },
        Op {
            call: 20,
            ret: Some(30),
            kind: Kind::Read(0),
        }, // after the write returned
    ];
    assert!(!linearizable(&history, 0));
}

#[test]
fn the_checker_rejects_reads_going_back_in_time() {
    let history = [
        Op {
            call: 0,
            ret: Some(100),
            kind: Kind::Write(1),
        },
        Op {
            call: 10,
            ret: Some(20),
            kind: Kind::Read(1),
        },
        Op {
            call: 30,
            ret: Some(40),
            kind: Kind::Read(0),
        }, // 1 was already visible
    ];
    assert!(!linearizable(&history, 0));
}
