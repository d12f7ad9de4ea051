//! The Raft workload over many seeds (see `common`), and its checkers against histories known
//! to be broken. A failing seed is listed with the command that replays it, and its history
//! is written to a file (named on stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use datacake_sim::raft::{Call, Cells, Command, Evidence, Reply, Request};

mod common;

#[test]
fn raft_keeps_its_guarantees_under_every_seeded_schedule() {
    common::run_seeds("raft");
}

/// A call invoked at `invoked` and returned at `returned`.
fn call(node: u32, request: Request, invoked: u64, returned: u64, reply: Reply) -> Call {
    Call {
        node,
        request,
        invoked,
        returned: Some(returned),
        reply,
        at: Duration::ZERO,
    }
}

fn cells(register: u64, counter: u64) -> Cells {
    Cells { register, counter }
}

/// A history that passes every checker: a write, an add, a read seeing both, agreeing nodes.
fn sound() -> Evidence {
    let calls = vec![
        call(
            1,
            Request::Write(Command::SetRegister(7)),
            0,
            1,
            Reply::Applied(7),
        ),
        call(
            2,
            Request::Write(Command::AddCounter(3)),
            2,
            3,
            Reply::Applied(3),
        ),
        call(3, Request::Read, 4, 5, Reply::Read(cells(7, 3))),
    ];
    Evidence {
        calls,
        leaders: BTreeMap::from([(1, BTreeSet::from([1])), (2, BTreeSet::from([2]))]),
        final_read: Some(cells(7, 3)),
        local_states: BTreeMap::from([(1, cells(7, 3)), (2, cells(7, 3)), (3, cells(7, 3))]),
    }
}

#[test]
fn a_sound_history_passes() {
    assert_eq!(sound().judge(), Vec::<String>::new());
}

#[test]
fn a_stale_read_is_caught() {
    let mut evidence = sound();
    // After the write of 7 returned, a read still sees the initial register.
    evidence
        .calls
        .push(call(1, Request::Read, 6, 7, Reply::Read(cells(0, 3))));
    let violations = evidence.judge();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("register history") && violations[0].contains("not linearizable"),
        "{violations:?}"
    );
}

#[test]
fn a_lost_add_is_caught() {
    let mut evidence = sound();
    // A second add was acknowledged, but the final read and every node miss it.
    evidence.calls.push(call(
        2,
        Request::Write(Command::AddCounter(5)),
        6,
        7,
        Reply::Applied(8),
    ));
    evidence
        .calls
        .push(call(3, Request::Read, 8, 9, Reply::Read(cells(7, 3))));
    let violations = evidence.judge();
    assert!(
        violations
            .iter()
            .any(|v| v.contains("counter history") && v.contains("not linearizable")),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.contains("acknowledged adds lost")),
        "{violations:?}"
    );
}

#[test]
fn unknown_writes_may_or_may_not_take_effect() {
    let mut evidence = sound();
    // A timed-out add that took effect, and a failed write that did not.
    evidence.calls.push(call(
        1,
        Request::Write(Command::AddCounter(4)),
        6,
        7,
        Reply::TimedOut,
    ));
    evidence.calls.push(call(
        2,
        Request::Write(Command::SetRegister(9)),
        8,
        9,
        Reply::Failed("quorum unavailable".into()),
    ));
    evidence
        .calls
        .push(call(3, Request::Read, 10, 11, Reply::Read(cells(7, 7))));
    evidence.final_read = Some(cells(7, 7));
    evidence.local_states = BTreeMap::from([(1, cells(7, 7)), (2, cells(7, 7))]);
    assert_eq!(evidence.judge(), Vec::<String>::new());
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    let mut evidence = sound();
    evidence.leaders.insert(3, BTreeSet::from([1, 3]));
    assert_eq!(
        evidence.judge(),
        vec!["term 3 had several leaders: nodes {1, 3}".to_string()]
    );
}

#[test]
fn diverging_nodes_are_caught() {
    let mut evidence = sound();
    evidence.local_states.insert(3, cells(7, 2));
    let violations = evidence.judge();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("states differ"), "{violations:?}");
}

#[test]
fn a_value_nobody_wrote_is_caught() {
    let mut evidence = sound();
    evidence.final_read = Some(cells(42, 3));
    let violations = evidence.judge();
    assert!(
        violations
            .iter()
            .any(|v| v.contains("which no client wrote")),
        "{violations:?}"
    );
}
