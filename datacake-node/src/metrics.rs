//! What the node reports through the [`metrics`] facade (listed in the crate's README,
//! "Metrics"), recorded where a membership view is published (the first one at start
//! included), and where gossip is refused. The labels are `change` and `reason`, each of a few
//! fixed values; no member's id or address becomes a label value.

use crate::membership::MembershipView;

/// Live members, this node included.
pub(crate) const LIVE_MEMBERS: &str = "datacake_node_live_members";
/// Members the failure detector holds dead.
pub(crate) const DEAD_MEMBERS: &str = "datacake_node_dead_members";
/// Members that joined or left, by `change` (`joined`, `left`).
pub(crate) const MEMBERSHIP_CHANGES: &str = "datacake_node_membership_changes_total";

/// Gossip messages refused or dropped before chitchat took them, by `reason` (`invalid`: not
/// a message chitchat may be handed, see `gossip_check`; `table_full`: its digest lists more
/// new nodes than the gossip table has room for, and they were left out of it (or, rarely,
/// the message dropped); `queue_full`: the sender's share of the queues, the queues or their
/// byte bound were full).
pub(crate) const GOSSIP_REFUSED: &str = "datacake_node_gossip_refused_total";

/// Counts a gossip message refused or dropped for `reason` (one of [`GOSSIP_REFUSED`]'s).
pub(crate) fn gossip_refused(reason: &'static str) {
    metrics::counter!(GOSSIP_REFUSED, "reason" => reason).increment(1);
}

/// Records the view `new` that replaces `old`.
pub(crate) fn view_published(new: &MembershipView, old: &MembershipView) {
    let statistics = new.statistics();
    metrics::gauge!(LIVE_MEMBERS).set(statistics.live_members as f64);
    metrics::gauge!(DEAD_MEMBERS).set(statistics.dead_members as f64);
    let change = new.diff(old);
    for (label, n) in [("joined", change.joined.len()), ("left", change.left.len())] {
        if n > 0 {
            metrics::counter!(MEMBERSHIP_CHANGES, "change" => label).increment(n as u64);
        }
    }
}
