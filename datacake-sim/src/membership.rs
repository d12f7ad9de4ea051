//! The membership checker, and a workload of its own (nodes crash, restart, leave, rejoin and
//! join late with nothing but the node running).
//!
//! After the faults heal: every running node lists exactly the running nodes as live, each at
//! the address its host has (no node id claimed by another address); no node that left for
//! good is live anywhere; and the running nodes agree on each such node: if one reports it
//! as left, all do (gossip spreads the leave). A leave whose every witness crashed or left
//! too cannot be known by anyone (the only copies of that state are gone); then no running
//! node reports it, and none must.

use std::time::Duration;

use datacake_node::{DatacakeNode, NodeId};
use futures::future::BoxFuture;

use crate::report::Outcome;
use crate::schedule::{Schedule, ScheduleConfig};
use crate::world::{host_name, App, World, PORT};

/// How long membership gets to settle after the faults heal (simulated).
pub const SETTLE: Duration = Duration::from_secs(60);

/// What one running node gets wrong about the membership, if anything.
fn misjudged<A: App>(world: &World<'_, A>, id: NodeId) -> Option<String> {
    let Some((node, _)) = world.handles(id) else {
        return Some(format!("node {id} never finished starting"));
    };
    let up = world.up();
    let live: Vec<NodeId> = node.live_members().iter().map(|m| m.node_id).collect();
    if live != up {
        return Some(format!(
            "node {id} holds {live:?} live, the running nodes are {up:?}"
        ));
    }
    for member in node.live_members() {
        let host = world.sim.lookup(host_name(member.node_id));
        if member.public_addr.ip() != host || member.public_addr.port() != PORT {
            return Some(format!(
                "node {id} holds node {} at {}, its host is {host}",
                member.node_id, member.public_addr
            ));
        }
    }
    None
}

/// The departed nodes some running node reports as left but `id` does not.
fn unaware<A: App>(world: &World<'_, A>, id: NodeId, departed: &[NodeId]) -> Option<String> {
    let (node, _) = world.handles(id)?;
    let left = node.left_node_ids();
    let known_elsewhere: Vec<NodeId> = departed
        .iter()
        .copied()
        .filter(|d| !left.contains(d))
        .filter(|d| {
            world.up().iter().any(|other| {
                world
                    .handles(*other)
                    .is_some_and(|(n, _)| n.left_node_ids().contains(d))
            })
        })
        .collect();
    (!known_elsewhere.is_empty()).then(|| {
        format!(
            "node {id} does not report {known_elsewhere:?} as left, other nodes do (left: {left:?}, dead: {:?})",
            node.dead_node_ids()
        )
    })
}

/// Everything `id` gets wrong, if anything.
fn judge<A: App>(world: &World<'_, A>, id: NodeId, departed: &[NodeId]) -> Option<String> {
    misjudged(world, id).or_else(|| unaware(world, id, departed))
}

/// Waits (bounded) until every running node judges the membership right; the violations if
/// they do not by then.
pub fn settle_and_check<A: App>(world: &mut World<'_, A>) -> Vec<String> {
    let departed = world.schedule().departed();
    let settled = world.step_until("the membership to settle", SETTLE, |w| {
        w.up().iter().all(|id| judge(w, *id, &departed).is_none())
    });
    match settled {
        Ok(()) => Vec::new(),
        Err(error) => {
            let mut violations = vec![error.to_string()];
            violations.extend(
                world
                    .up()
                    .iter()
                    .filter_map(|id| judge(world, *id, &departed)),
            );
            violations
        }
    }
}

/// Nothing but the node.
struct Bare;

impl App for Bare {
    type Handle = ();

    fn attach<'a>(
        &'a self,
        _id: NodeId,
        _node: &'a DatacakeNode,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// The faults of the membership workload: more nodes than the others.
pub fn schedule_config() -> ScheduleConfig {
    ScheduleConfig {
        nodes: (3, 7),
        clock_steps: true,
        ..ScheduleConfig::default()
    }
}

/// Runs `seed` of the membership workload.
pub fn run(seed: u64) -> Outcome {
    let config = schedule_config();
    let schedule = Schedule::draw(seed, &config);
    let mut world = World::new(
        schedule,
        Bare,
        config.fault_phase + Duration::from_secs(300),
    );
    let mut outcome = Outcome {
        workload: "membership",
        seed,
        nodes: world.schedule().nodes.len(),
        faults: 0,
        operations: 0,
        violations: Vec::new(),
    };
    let ran = (|| {
        while !world.faults_done() || world.elapsed() < config.fault_phase {
            world.step()?;
        }
        world.heal();
        anyhow::Ok(())
    })();
    outcome.faults = world.faults_applied();
    match ran {
        Ok(()) => outcome.violations = settle_and_check(&mut world),
        Err(error) => outcome.violations.push(error.to_string()),
    }
    outcome
}
