//! Counts describing the cluster, as one node sees it.

/// Counts describing the cluster as this node sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterStatistics {
    /// Live members, including this node.
    pub live_members: usize,
    /// Members the failure detector holds dead (crashed or unreachable, not left gracefully).
    pub dead_members: usize,
    /// Members that left gracefully and have not come back.
    pub left_members: usize,
    /// Distinct data centres among the live members.
    pub data_centers: usize,
}
