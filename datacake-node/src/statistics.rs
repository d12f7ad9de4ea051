//! Counts describing the cluster, as one node sees it.

/// Counts describing the cluster as this node sees it.
///
/// A snapshot: [`DatacakeHandle::statistics`](crate::DatacakeHandle::statistics) takes a new
/// one. The `num_*` methods are the accessors datacake 0.x had.
///
/// ```
/// use datacake_node::ClusterStatistics;
///
/// let stats = ClusterStatistics { live_members: 3, dead_members: 1, left_members: 0, data_centers: 2 };
/// assert_eq!(stats.num_live_members(), 3);
/// assert_eq!(stats.num_dead_members(), 1);
/// assert_eq!(stats.num_left_members(), 0);
/// assert_eq!(stats.num_data_centers(), 2);
/// ```
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

impl ClusterStatistics {
    /// Live members, including this node (the `live_members` field).
    pub fn num_live_members(&self) -> u64 {
        self.live_members as u64
    }

    /// Members held dead (the `dead_members` field).
    pub fn num_dead_members(&self) -> u64 {
        self.dead_members as u64
    }

    /// Members that left gracefully (the `left_members` field).
    pub fn num_left_members(&self) -> u64 {
        self.left_members as u64
    }

    /// Distinct data centres among the live members (the `data_centers` field).
    pub fn num_data_centers(&self) -> u64 {
        self.data_centers as u64
    }
}
