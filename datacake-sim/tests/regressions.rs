//! Seeds that found bugs, run again with the setup that found them.

use std::time::Duration;

use datacake_sim::ec::{self, EcConfig};

/// The EC workload as these seeds ran when they found their bugs: before the schedules had
/// clock steps (which add events to a seed's schedule).
fn as_found() -> EcConfig {
    let default = EcConfig::default();
    EcConfig {
        schedule: datacake_sim::schedule::ScheduleConfig {
            clock_steps: false,
            ..default.schedule
        },
        ..default
    }
}

/// Seed 79 (3 nodes, lossy and slow links, a node leaving): a moment of message loss stalled
/// an RPC connection, and every call on it timed out until the keep-alive noticed, 10-20 s
/// later. Two nodes that could not gossip held each other down past the 5 s tombstone grace
/// this seed ran with, purged without each other, and forgot each other's acknowledged
/// `None` writes as obsolete copies. Fixed in `datacake-rpc`: a timed-out call makes the
/// channel ping its connection at once and replace it if the ping goes unanswered.
#[test]
fn seed_79_a_stalled_connection_no_longer_cuts_nodes_apart_for_longer_than_a_short_grace() {
    let config = EcConfig {
        tombstone_grace: Duration::from_secs(5),
        ..as_found()
    };
    let outcome = ec::run_with(79, &config);
    assert!(outcome.passed(), "{outcome}");
}

/// Seed 477 (3 nodes; node 1's messages to node 2 dropped from 0.1 s, before node 2 ever
/// heard from it): node 2 started alone, knew no member, and met `Quorum` writes by itself,
/// so a `Quorum` read on node 1 (which knew node 2) missed one. Fixed in the store: a node
/// given seeds that has seen no member meets no level but `None` (`ConsistencyError::NotJoined`).
#[test]
fn seed_477_a_node_that_never_heard_from_its_seeds_meets_no_quorum_alone() {
    let outcome = ec::run_with(477, &as_found());
    assert!(outcome.passed(), "{outcome}");
}
