//! Choosing which peers an operation goes to for a [`Consistency`] level.
//!
//! A [`NodeSelector`] is a plain synchronous state machine: it gets the local member and the
//! live peers and returns the peers to contact. [`DCAwareSelector`] is the default.

use std::collections::{BTreeMap, HashMap};

use crate::consistency::{majority, Consistency, ConsistencyError};
use crate::membership::ClusterMember;

/// Picks the peers an operation must reach to meet a [`Consistency`] level.
///
/// Implement this to plug your own placement policy into
/// [`DatacakeNodeBuilder::with_node_selector`](crate::DatacakeNodeBuilder::with_node_selector).
///
/// ```
/// use datacake_node::{ClusterMember, Consistency, ConsistencyError, NodeSelector};
///
/// /// Always picks the peers with the lowest ids.
/// #[derive(Debug, Default)]
/// struct LowestIds;
///
/// impl NodeSelector for LowestIds {
///     fn select_nodes(
///         &mut self,
///         _local: &ClusterMember,
///         peers: &[ClusterMember],
///         consistency: Consistency,
///     ) -> Result<Vec<ClusterMember>, ConsistencyError> {
///         let wanted = match consistency {
///             Consistency::None => 0,
///             Consistency::One => 1,
///             _ => peers.len(),
///         };
///         if peers.len() < wanted {
///             return Err(ConsistencyError::NotEnoughNodes { live: peers.len(), required: wanted });
///         }
///         let mut peers = peers.to_vec();
///         peers.sort_by_key(|m| m.node_id);
///         peers.truncate(wanted);
///         Ok(peers)
///     }
/// }
/// ```
pub trait NodeSelector: Send + 'static {
    /// Returns the peers to contact for `consistency`.
    ///
    /// `local` is this node; `peers` are the other live members (never containing `local`).
    /// The result must not contain the local node.
    fn select_nodes(
        &mut self,
        local: &ClusterMember,
        peers: &[ClusterMember],
        consistency: Consistency,
    ) -> Result<Vec<ClusterMember>, ConsistencyError>;
}

/// The default selector: aware of data centres, never picks the local node.
///
/// - `One`, `Two`, `Three`: that many peers, spread across data centres (round-robin over the
///   data centres, starting from a rotating one), rotating within each data centre so that load
///   is shared; [`ConsistencyError::NotEnoughNodes`] if there are fewer peers.
/// - `Quorum`: a majority of the whole live cluster counting the local node, minus the local
///   node, spread across data centres.
/// - `LocalQuorum`: a majority of the local data centre minus the local node.
/// - `EachQuorum`: a majority of every data centre (the local one counting the local node).
/// - `All`: every peer. `None`: nobody.
///
/// Data centres are computed from the live peers on every call, so a data centre whose nodes
/// all left disappears.
#[derive(Debug, Default)]
pub struct DCAwareSelector {
    /// Rotation cursor per data centre.
    cursors: HashMap<String, usize>,
    /// Rotation cursor over data centres.
    dc_cursor: usize,
}

impl DCAwareSelector {
    /// Takes `count` peers from one data centre's members, rotating its cursor.
    fn take_from_dc(
        &mut self,
        dc: &str,
        members: &[&ClusterMember],
        count: usize,
    ) -> Vec<ClusterMember> {
        if members.is_empty() || count == 0 {
            return Vec::new();
        }
        // Look up before inserting: an insert would allocate the key on every call.
        if !self.cursors.contains_key(dc) {
            self.cursors.insert(dc.to_string(), 0);
        }
        let cursor = self.cursors.get_mut(dc).expect("inserted above");
        let start = *cursor % members.len();
        *cursor = cursor.wrapping_add(count);
        (0..count.min(members.len()))
            .map(|i| members[(start + i) % members.len()].clone())
            .collect()
    }

    /// Takes `count` peers spread round-robin across the data centres.
    fn spread(
        &mut self,
        by_dc: &BTreeMap<&str, Vec<&ClusterMember>>,
        count: usize,
    ) -> Vec<ClusterMember> {
        let dcs: Vec<&str> = by_dc.keys().copied().collect();
        if dcs.is_empty() || count == 0 {
            return Vec::new();
        }
        // How many to take from each data centre: deal `count` out round-robin, starting from
        // a rotating data centre, skipping the ones that are exhausted.
        let mut quota: Vec<usize> = vec![0; dcs.len()];
        let first = self.dc_cursor % dcs.len();
        self.dc_cursor = self.dc_cursor.wrapping_add(1);
        let mut left = count;
        while left > 0 {
            let mut progressed = false;
            for i in 0..dcs.len() {
                let idx = (first + i) % dcs.len();
                if left > 0 && quota[idx] < by_dc[dcs[idx]].len() {
                    quota[idx] += 1;
                    left -= 1;
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        let mut out = Vec::with_capacity(count);
        for (idx, dc) in dcs.iter().enumerate() {
            out.extend(self.take_from_dc(dc, &by_dc[dc], quota[idx]));
        }
        out
    }
}

impl NodeSelector for DCAwareSelector {
    fn select_nodes(
        &mut self,
        local: &ClusterMember,
        peers: &[ClusterMember],
        consistency: Consistency,
    ) -> Result<Vec<ClusterMember>, ConsistencyError> {
        let others = peers.iter().filter(|p| p.node_id != local.node_id);
        let spread_over_dcs = match consistency {
            // The two levels that need no data-centre map (and the most common per write).
            Consistency::None => return Ok(Vec::new()),
            Consistency::All => return Ok(others.cloned().collect()),
            Consistency::One => Some(1),
            Consistency::Two => Some(2),
            Consistency::Three => Some(3),
            Consistency::Quorum | Consistency::LocalQuorum | Consistency::EachQuorum => None,
        };
        let mut by_dc: BTreeMap<&str, Vec<&ClusterMember>> = BTreeMap::new();
        for peer in others {
            by_dc.entry(&*peer.data_center).or_default().push(peer);
        }
        for members in by_dc.values_mut() {
            members.sort_by_key(|m| m.node_id);
        }
        // Forget the rotation of data centres that are gone.
        self.cursors.retain(|dc, _| by_dc.contains_key(dc.as_str()));
        let live: usize = by_dc.values().map(Vec::len).sum();

        if let Some(required) = spread_over_dcs {
            if live < required {
                return Err(ConsistencyError::NotEnoughNodes { live, required });
            }
            return Ok(self.spread(&by_dc, required));
        }
        let selected = match consistency {
            Consistency::LocalQuorum => {
                let local_dc = &*local.data_center;
                match by_dc.get(local_dc) {
                    Some(members) => {
                        let count = majority(members.len() + 1) - 1;
                        self.take_from_dc(local_dc, members, count)
                    }
                    None => Vec::new(),
                }
            }
            Consistency::EachQuorum => {
                let mut out = Vec::new();
                for (dc, members) in &by_dc {
                    let count = if *dc == &*local.data_center {
                        majority(members.len() + 1) - 1
                    } else {
                        majority(members.len())
                    };
                    out.extend(self.take_from_dc(dc, members, count));
                }
                out
            }
            // Quorum (the rest were answered above).
            _ => self.spread(&by_dc, majority(live + 1) - 1),
        };
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn member(id: u32, dc: &str) -> ClusterMember {
        ClusterMember::new(id, ([127, 0, 0, 1], 10_000 + id as u16).into(), dc)
    }

    /// Node 1 is local; the other `n - 1` members of `dcs[i]` follow.
    fn cluster(dcs: &[(&str, usize)]) -> (ClusterMember, Vec<ClusterMember>) {
        let mut all = Vec::new();
        let mut id = 1;
        for (dc, n) in dcs {
            for _ in 0..*n {
                all.push(member(id, dc));
                id += 1;
            }
        }
        let local = all.remove(0);
        (local, all)
    }

    fn count(sel: &mut DCAwareSelector, dcs: &[(&str, usize)], c: Consistency) -> usize {
        let (local, peers) = cluster(dcs);
        let picked = sel.select_nodes(&local, &peers, c).unwrap();
        assert!(
            picked.iter().all(|m| m.node_id != local.node_id),
            "picked the local node"
        );
        let unique: HashSet<u32> = picked.iter().map(|m| m.node_id).collect();
        assert_eq!(unique.len(), picked.len(), "picked a node twice");
        picked.len()
    }

    #[test]
    fn one_data_centre_of_three() {
        let mut sel = DCAwareSelector::default();
        let dc = [("dc-a", 3)];
        assert_eq!(count(&mut sel, &dc, Consistency::None), 0);
        assert_eq!(count(&mut sel, &dc, Consistency::One), 1);
        assert_eq!(count(&mut sel, &dc, Consistency::Two), 2);
        assert_eq!(count(&mut sel, &dc, Consistency::All), 2);
        assert_eq!(count(&mut sel, &dc, Consistency::Quorum), 1);
        assert_eq!(count(&mut sel, &dc, Consistency::LocalQuorum), 1);
        assert_eq!(count(&mut sel, &dc, Consistency::EachQuorum), 1);
        let (local, peers) = cluster(&dc);
        assert_eq!(
            sel.select_nodes(&local, &peers, Consistency::Three),
            Err(ConsistencyError::NotEnoughNodes {
                live: 2,
                required: 3
            })
        );
    }

    #[test]
    fn quorum_by_cluster_size() {
        let mut sel = DCAwareSelector::default();
        let counts: Vec<usize> = [1, 2, 4, 5]
            .iter()
            .map(|&n| count(&mut sel, &[("dc-a", n)], Consistency::Quorum))
            .collect();
        assert_eq!(counts, vec![0, 1, 2, 2]);
    }

    #[test]
    fn two_data_centres_of_three() {
        let mut sel = DCAwareSelector::default();
        let dcs = [("dc-a", 3), ("dc-b", 3)];
        assert_eq!(count(&mut sel, &dcs, Consistency::LocalQuorum), 1);
        assert_eq!(count(&mut sel, &dcs, Consistency::EachQuorum), 3);
        let (local, peers) = cluster(&dcs);
        let local_quorum = sel
            .select_nodes(&local, &peers, Consistency::LocalQuorum)
            .unwrap();
        assert!(local_quorum.iter().all(|m| &*m.data_center == "dc-a"));
        let each = sel
            .select_nodes(&local, &peers, Consistency::EachQuorum)
            .unwrap();
        assert_eq!(each.iter().filter(|m| &*m.data_center == "dc-a").count(), 1);
        assert_eq!(each.iter().filter(|m| &*m.data_center == "dc-b").count(), 2);
    }

    #[test]
    fn spreads_across_data_centres() {
        let mut sel = DCAwareSelector::default();
        let (local, peers) = cluster(&[("dc-a", 3), ("dc-b", 3)]);
        for _ in 0..4 {
            let two = sel.select_nodes(&local, &peers, Consistency::Two).unwrap();
            let dcs: HashSet<&str> = two.iter().map(|m| &*m.data_center).collect();
            assert_eq!(
                dcs.len(),
                2,
                "two picks should land in both data centres: {two:?}"
            );
        }
    }

    #[test]
    fn rotates_within_a_data_centre() {
        let mut sel = DCAwareSelector::default();
        let (local, peers) = cluster(&[("dc-a", 5)]);
        let picked: HashSet<u32> = (0..4)
            .map(|_| sel.select_nodes(&local, &peers, Consistency::One).unwrap()[0].node_id)
            .collect();
        assert_eq!(
            picked.len(),
            4,
            "four calls should rotate over the four peers"
        );
    }

    #[test]
    fn never_picks_local_even_if_listed() {
        let mut sel = DCAwareSelector::default();
        let (local, mut peers) = cluster(&[("dc-a", 3)]);
        peers.push(local.clone());
        let all = sel.select_nodes(&local, &peers, Consistency::All).unwrap();
        assert_eq!(all.len(), 2);
        assert!(all.iter().all(|m| m.node_id != local.node_id));
    }

    #[test]
    fn data_centre_whose_nodes_left_disappears() {
        let mut sel = DCAwareSelector::default();
        let (local, peers) = cluster(&[("dc-a", 3), ("dc-b", 3)]);
        assert_eq!(
            sel.select_nodes(&local, &peers, Consistency::EachQuorum)
                .unwrap()
                .len(),
            3
        );
        let remaining: Vec<ClusterMember> = peers
            .into_iter()
            .filter(|m| &*m.data_center != "dc-b")
            .collect();
        let each = sel
            .select_nodes(&local, &remaining, Consistency::EachQuorum)
            .unwrap();
        assert_eq!(each.len(), 1);
        assert!(each.iter().all(|m| &*m.data_center == "dc-a"));
        assert!(!sel.cursors.contains_key("dc-b"));
    }
}
