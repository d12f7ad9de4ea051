//! Fixtures of the crate's own unit tests.

use std::time::Duration;

/// How long unit tests wait on observable state.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A node with id `id` on loopback joining `seeds`.
pub(crate) use test_helper::node::start as node;
