//! Where a node listens, what it advertises, whom it contacts first — and its timings.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::NodeError;

/// The shortest gossip interval accepted: 1 ms.
pub(crate) const MIN_GOSSIP_INTERVAL: Duration = Duration::from_millis(1);
/// The longest gossip interval accepted: one hour. Timeouts derived from it (up to twenty
/// intervals) then stay far from overflowing.
pub(crate) const MAX_GOSSIP_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// The longest minimum failure timeout, join timeout and leave timeout accepted: one day.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest dead-node grace period accepted: thirty days.
pub(crate) const MAX_DEAD_NODE_GRACE_PERIOD: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Addresses of a node: where it binds, where peers reach it, and the seeds it gossips with
/// to join.
///
/// ```
/// use datacake_node::ConnectionConfig;
///
/// // Bind every interface, advertise a routable address, join through two seeds.
/// let config = ConnectionConfig::new(
///     "0.0.0.0:8000".parse().unwrap(),
///     "10.0.0.7:8000".parse().unwrap(),
///     ["db-1.internal:8000", "10.0.0.5:8000"],
/// );
/// assert_eq!(config.seeds.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The address the RPC server (which also carries gossip) binds. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address peers reach this node at. Its IP must be reachable (not `0.0.0.0`); port 0
    /// means "the port actually bound", handy with a `listen_addr` on port 0.
    pub public_addr: SocketAddr,
    /// Seeds as `host:port` strings. Host names are resolved (DNS) when gossiping, so a seed
    /// that is not up yet, or not resolvable yet, is retried rather than fatal.
    pub seeds: Vec<String>,
}

impl ConnectionConfig {
    /// A configuration from its three parts.
    pub fn new(
        listen_addr: SocketAddr,
        public_addr: SocketAddr,
        seeds: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            listen_addr,
            public_addr,
            seeds: seeds.into_iter().map(Into::into).collect(),
        }
    }
}

/// Gossip and failure-detection timings. The defaults suit a LAN with a 100 ms gossip
/// interval: a crashed node is held dead after roughly one to two seconds.
///
/// The builder stores what it is given; [`validate`](Self::validate) checks the bounds before
/// anything starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timings {
    /// How often each node gossips with up to three peers.
    pub(crate) gossip_interval: Duration,
    /// The phi-accrual threshold above which a silent node is held dead.
    pub(crate) phi_threshold: f64,
    /// A node is never held dead before its heartbeat has stood still this long (`None`: ten
    /// gossip intervals).
    pub(crate) min_failure_timeout: Option<Duration>,
    /// How long a dead node's state is kept before it is forgotten.
    pub(crate) dead_node_grace_period: Duration,
    /// How long `connect` waits for a first exchange with the seeds.
    pub(crate) join_timeout: Duration,
    /// How long `shutdown` waits for peers to hear of the leave.
    pub(crate) leave_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            gossip_interval: Duration::from_millis(100),
            phi_threshold: 10.0,
            min_failure_timeout: None,
            dead_node_grace_period: Duration::from_secs(60 * 60),
            join_timeout: Duration::from_secs(2),
            leave_timeout: Duration::from_millis(500),
        }
    }
}

impl Timings {
    /// Checks every timing against its documented bounds, naming the first bad one.
    ///
    /// * `gossip_interval`: [`MIN_GOSSIP_INTERVAL`] to [`MAX_GOSSIP_INTERVAL`]. Below a
    ///   millisecond the gossip and membership loops would spin, and a tokio interval panics
    ///   on a zero period (the membership loop ticks every half interval); beyond an hour the
    ///   derived timeouts are meaningless and, near `Duration::MAX`, overflow.
    /// * `phi_threshold`: finite and above zero. Phi is a ratio of non-negative times and a
    ///   peer is live while phi is at most the threshold: at or below zero, or NaN, would hold
    ///   every peer dead; infinity, never dead.
    /// * `min_failure_timeout`, `join_timeout`, `leave_timeout`: at most [`MAX_TIMEOUT`]. Zero
    ///   is allowed (see the builder's setters for what it means).
    /// * `dead_node_grace_period`: at most [`MAX_DEAD_NODE_GRACE_PERIOD`]; zero is allowed.
    ///
    /// The upper bounds keep every deadline computed from a timing (`Instant::now() + t`)
    /// representable, so a typo such as `Duration::MAX` is an error instead of a panic later.
    pub(crate) fn validate(&self) -> Result<(), NodeError> {
        if self.gossip_interval < MIN_GOSSIP_INTERVAL {
            return Err(invalid(
                "gossip_interval",
                format!(
                    "{:?} is shorter than the minimum of {MIN_GOSSIP_INTERVAL:?}",
                    self.gossip_interval
                ),
            ));
        }
        at_most("gossip_interval", self.gossip_interval, MAX_GOSSIP_INTERVAL)?;
        if !self.phi_threshold.is_finite() || self.phi_threshold <= 0.0 {
            return Err(invalid(
                "phi_threshold",
                format!("{} is not a finite number above 0", self.phi_threshold),
            ));
        }
        if let Some(timeout) = self.min_failure_timeout {
            at_most("min_failure_timeout", timeout, MAX_TIMEOUT)?;
        }
        at_most(
            "dead_node_grace_period",
            self.dead_node_grace_period,
            MAX_DEAD_NODE_GRACE_PERIOD,
        )?;
        at_most("join_timeout", self.join_timeout, MAX_TIMEOUT)?;
        at_most("leave_timeout", self.leave_timeout, MAX_TIMEOUT)?;
        Ok(())
    }

    /// The minimum time a node's heartbeat must stand still before it is held dead.
    pub(crate) fn min_failure_timeout(&self) -> Duration {
        self.min_failure_timeout
            .unwrap_or(self.gossip_interval.saturating_mul(10))
    }

    /// chitchat's failure-detector configuration for these timings.
    pub(crate) fn failure_detector(&self) -> chitchat::FailureDetectorConfig {
        chitchat::FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: 1_000,
            // Heartbeat gaps longer than this are not learnt as "normal" (a paused peer must
            // not teach the detector to wait forever).
            max_interval: self.gossip_interval.saturating_mul(20),
            // Before any sample the detector assumes heartbeats arrive every gossip interval.
            initial_interval: self.gossip_interval,
            dead_node_grace_period: self.dead_node_grace_period,
        }
    }
}

fn invalid(setting: &'static str, reason: String) -> NodeError {
    NodeError::InvalidConfig { setting, reason }
}

fn at_most(setting: &'static str, value: Duration, max: Duration) -> Result<(), NodeError> {
    if value > max {
        return Err(invalid(
            setting,
            format!("{value:?} is longer than the maximum of {max:?}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(timings: &Timings) -> Option<&'static str> {
        match timings.validate() {
            Ok(()) => None,
            Err(NodeError::InvalidConfig { setting, .. }) => Some(setting),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn defaults_and_bounds_are_accepted() {
        assert_eq!(setting_of(&Timings::default()), None);
        let largest = Timings {
            gossip_interval: MAX_GOSSIP_INTERVAL,
            phi_threshold: f64::MAX,
            min_failure_timeout: Some(MAX_TIMEOUT),
            dead_node_grace_period: MAX_DEAD_NODE_GRACE_PERIOD,
            join_timeout: MAX_TIMEOUT,
            leave_timeout: MAX_TIMEOUT,
        };
        assert_eq!(setting_of(&largest), None);
        let smallest = Timings {
            gossip_interval: MIN_GOSSIP_INTERVAL,
            phi_threshold: f64::MIN_POSITIVE,
            min_failure_timeout: Some(Duration::ZERO),
            dead_node_grace_period: Duration::ZERO,
            join_timeout: Duration::ZERO,
            leave_timeout: Duration::ZERO,
        };
        assert_eq!(setting_of(&smallest), None);
        // The derived timings of the largest interval do not overflow.
        assert_eq!(
            largest.failure_detector().max_interval,
            MAX_GOSSIP_INTERVAL * 20
        );
        let unbounded = Timings {
            min_failure_timeout: None,
            ..largest
        };
        assert_eq!(unbounded.min_failure_timeout(), MAX_GOSSIP_INTERVAL * 10);
    }

    #[test]
    fn each_bad_timing_is_named() {
        let cases: Vec<(&str, Timings)> = vec![
            (
                "gossip_interval",
                Timings {
                    gossip_interval: Duration::ZERO,
                    ..Timings::default()
                },
            ),
            (
                "gossip_interval",
                Timings {
                    gossip_interval: Duration::from_micros(999),
                    ..Timings::default()
                },
            ),
            (
                "gossip_interval",
                Timings {
                    gossip_interval: MAX_GOSSIP_INTERVAL + Duration::from_nanos(1),
                    ..Timings::default()
                },
            ),
            (
                "gossip_interval",
                Timings {
                    gossip_interval: Duration::MAX,
                    ..Timings::default()
                },
            ),
            (
                "phi_threshold",
                Timings {
                    phi_threshold: 0.0,
                    ..Timings::default()
                },
            ),
            (
                "phi_threshold",
                Timings {
                    phi_threshold: -1.0,
                    ..Timings::default()
                },
            ),
            (
                "phi_threshold",
                Timings {
                    phi_threshold: f64::NAN,
                    ..Timings::default()
                },
            ),
            (
                "phi_threshold",
                Timings {
                    phi_threshold: f64::INFINITY,
                    ..Timings::default()
                },
            ),
            (
                "min_failure_timeout",
                Timings {
                    min_failure_timeout: Some(Duration::MAX),
                    ..Timings::default()
                },
            ),
            (
                "dead_node_grace_period",
                Timings {
                    dead_node_grace_period: Duration::MAX,
                    ..Timings::default()
                },
            ),
            (
                "join_timeout",
                Timings {
                    join_timeout: MAX_TIMEOUT + Duration::from_secs(1),
                    ..Timings::default()
                },
            ),
            (
                "leave_timeout",
                Timings {
                    leave_timeout: Duration::MAX,
                    ..Timings::default()
                },
            ),
        ];
        for (expected, timings) in cases {
            assert_eq!(setting_of(&timings), Some(expected), "{timings:?}");
        }
    }

    #[test]
    fn derived_timings_saturate_instead_of_panicking() {
        let huge = Timings {
            gossip_interval: Duration::MAX,
            ..Timings::default()
        };
        assert_eq!(huge.min_failure_timeout(), Duration::MAX);
        assert_eq!(huge.failure_detector().max_interval, Duration::MAX);
    }
}
