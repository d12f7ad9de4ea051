//! A fresh election delay for every campaign.
//!
//! openraft 0.9 draws a node's election timeout once, when Raft starts, and reuses it for
//! every campaign; it checks for an election on its tick (every 1.5 heartbeat intervals). Two
//! candidates whose draws come to the same tick, with their ticks in phase (nodes started or
//! restarted together), start every campaign at the same moment, each votes for itself and
//! refuses the other, and they do it again next term, and the next: the tie is a fixed
//! point, not bad luck that clears. With an even number of voters, or one voter down, no one
//! is elected while it lasts. (openraft resamples the timeout per campaign from its 0.10
//! line on: databendlabs/openraft#1838.) The whole-cluster simulation found it: a four-node
//! run in which two nodes restarted at the same instant stayed without a leader for the 30
//! simulated seconds it waited, in about one run of a hundred (raft seed 138).
//!
//! [`resample_campaigns`] breaks the tie from outside: a candidate whose campaign is still
//! under way after a fresh random draw from the election-timeout range starts the next
//! campaign itself. Each campaign then ends at the earlier of openraft's fixed delay and a
//! fresh one, and tied candidates drift apart within a few terms. A campaign that ends
//! normally (won within a round trip, or given up for a higher term) never waits that long.

use std::future::Future;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::types::ServerMetrics;

/// Watches this node's server metrics (role and vote: they change with elections, not with
/// every write, so this task is not woken per write) until Raft stops; each time a campaign
/// (the node a [`Candidate`](ServerState::Candidate) in some term) lasts a fresh random draw
/// from `range`, calls `elect` (start the next campaign now).
pub(crate) async fn resample_campaigns<F, Fut>(
    mut metrics: watch::Receiver<ServerMetrics>,
    range: (Duration, Duration),
    mut elect: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        // The next campaign.
        let term = loop {
            if let Some(term) = campaign(&mut metrics) {
                break term;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        };
        let deadline = Instant::now() + draw(range);
        let ended = loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break false,
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if campaign(&mut metrics) != Some(term) {
                        break true;
                    }
                }
            }
        };
        if !ended {
            elect().await;
            // Wait for the campaign it started (or whatever came instead) before the next
            // draw.
            while campaign(&mut metrics) == Some(term) {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The term this node campaigns in now, if it is a candidate.
fn campaign(metrics: &mut watch::Receiver<ServerMetrics>) -> Option<u64> {
    let m = metrics.borrow_and_update();
    (m.state == ServerState::Candidate).then_some(m.vote.leader_id().term)
}

/// A duration drawn uniformly from `[min, max)` at millisecond resolution (`min` if the range
/// is empty).
fn draw((min, max): (Duration, Duration)) -> Duration {
    let (min, max) = (min.as_millis() as u64, max.as_millis() as u64);
    if max <= min {
        return Duration::from_millis(min);
    }
    Duration::from_millis(rand::random_range(min..max))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn metrics(state: ServerState, term: u64) -> ServerMetrics {
        ServerMetrics {
            id: 1,
            vote: openraft::Vote::new(term, 1),
            state,
            ..ServerMetrics::default()
        }
    }

    /// A campaign that is still under way after a draw from the range is ended by starting
    /// the next one; a campaign that ends first (a leader elected, a higher term seen) is
    /// left to openraft. Before, nothing started a campaign but openraft's own fixed delay.
    #[tokio::test(start_paused = true)]
    async fn a_campaign_that_lasts_a_fresh_draw_is_followed_by_the_next() {
        // A range one millisecond wide: every draw is 500 ms, so the times below are exact.
        let range = (Duration::from_millis(500), Duration::from_millis(501));
        let (tx, rx) = watch::channel(metrics(ServerState::Follower, 1));
        let elections = Arc::new(AtomicUsize::new(0));
        let counted = elections.clone();
        // (Shared with the closure, and taken back to close the channel at the end.)
        let sender = Arc::new(parking_lot::Mutex::new(Some(tx)));
        let started = sender.clone();
        let task = tokio::spawn(resample_campaigns(rx, range, move || {
            counted.fetch_add(1, Ordering::SeqCst);
            // openraft's answer to a trigger: the next term's campaign.
            if let Some(tx) = started.lock().as_ref() {
                let next = tx.borrow().vote.leader_id().term + 1;
                tx.send_replace(metrics(ServerState::Candidate, next));
            }
            async {}
        }));
        let send = |m: ServerMetrics| {
            sender.lock().as_ref().expect("open").send_replace(m);
        };
        let term = || {
            let sender = sender.lock();
            let term = sender
                .as_ref()
                .expect("open")
                .borrow()
                .vote
                .leader_id()
                .term;
            term
        };
        // A follower: no campaign, nothing started however long it waits.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 0);

        // A campaign won at once.
        send(metrics(ServerState::Candidate, 2));
        tokio::time::sleep(Duration::from_millis(10)).await;
        send(metrics(ServerState::Leader, 2));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 0);

        // A campaign that goes nowhere: the next one starts after the draw, and again.
        send(metrics(ServerState::Candidate, 3));
        tokio::time::sleep(Duration::from_millis(499)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 0, "not before the draw");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 1);
        assert_eq!(term(), 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 2);
        assert_eq!(term(), 5);

        // A campaign that ends before its draw (a higher term seen) is not cut short.
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(metrics(ServerState::Follower, 9));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(elections.load(Ordering::SeqCst), 2);

        // Raft stopped (its metrics closed): the task ends.
        drop(sender.lock().take());
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ends with Raft")
            .unwrap();
    }

    /// Draws stay in `[min, max)`, differ from one campaign to the next, and an empty range
    /// gives its minimum.
    #[test]
    fn draws_are_fresh_and_within_the_range() {
        let range = (Duration::from_millis(500), Duration::from_millis(1_000));
        let draws: Vec<Duration> = (0..100).map(|_| draw(range)).collect();
        assert!(
            draws.iter().all(|d| range.0 <= *d && *d < range.1),
            "{draws:?}"
        );
        assert!(draws.iter().any(|d| *d != draws[0]), "100 equal draws");
        let empty = (Duration::from_millis(700), Duration::from_millis(700));
        assert_eq!(draw(empty), Duration::from_millis(700));
    }
}
