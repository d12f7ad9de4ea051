//! Metrics through the `metrics` facade, exported as Prometheus text on `/metrics` (the
//! exporter and the HTTP metrics are `server_common::metrics`'s).
//!
//! - `raftkv_http_requests_total{route, method, status}`: requests answered;
//!   `raftkv_http_request_duration_seconds{route, method, status}`: their latency;
//!   `raftkv_http_errors_total{class}`; `raftkv_http_connections_*` and
//!   `raftkv_http_accept_errors_total`, from the server.
//! - `raftkv_write_duration_seconds{op, outcome}`: histogram of Raft writes (put, delete,
//!   incr), from the handler's call to the committed and applied answer (forwarding to the
//!   leader included); `outcome` is `ok` or the error code.
//! - `raftkv_raft_*` gauges (role, last log index, quorum), read from Raft at each scrape;
//!   datacake-raft's own metrics (`datacake_raft_*`: term, applied index, write latency,
//!   leader changes) and `datacake_rpc_server_*` beside them.

use std::time::Duration;

use datacake_raft::{RaftStatus, Role};
use metrics::{describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::PrometheusHandle;

/// The prefix of every metric's name.
pub(crate) const PREFIX: &str = "raftkv";

const WRITE_DURATION: &str = "raftkv_write_duration_seconds";

/// The roles, as the `role` label of `raftkv_raft_role`.
const ROLES: [(Role, &str); 5] = [
    (Role::Inactive, "inactive"),
    (Role::Learner, "learner"),
    (Role::Follower, "follower"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

/// The name of `role` in JSON and metrics.
pub(crate) fn role_name(role: Role) -> &'static str {
    ROLES
        .iter()
        .find(|(r, _)| *r == role)
        .map_or("inactive", |(_, name)| name)
}

/// Installs the process-wide Prometheus recorder (once, at start) and describes the Raft
/// metrics.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = server_common::metrics::install()?;
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Raft writes (put, delete, incr) from the request to the applied answer, by outcome."
    );
    describe_gauge!(
        "raftkv_raft_role",
        "1 for this node's Raft role, 0 for the others."
    );
    describe_gauge!(
        "raftkv_raft_last_log_index",
        "The last index in this node's log."
    );
    describe_gauge!(
        "raftkv_raft_has_quorum",
        "1 if this node leads and a quorum acknowledged it within the lease."
    );
    Ok(handle)
}

/// Records one Raft write of kind `op` that took `elapsed` and ended with `outcome`.
pub(crate) fn write(op: &'static str, outcome: &'static str, elapsed: Duration) {
    histogram!(WRITE_DURATION, "op" => op, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Sets the Raft gauges to `status` (call it before rendering the page).
pub(crate) fn raft(status: &RaftStatus, has_quorum: bool) {
    for (role, name) in ROLES {
        gauge!("raftkv_raft_role", "role" => name).set(f64::from(u8::from(status.role == role)));
    }
    // Gauges are f64: exact up to 2^53, far beyond any index reached. (The term and the
    // applied index are datacake-raft's own `datacake_raft_term`, `datacake_raft_applied_index`.)
    gauge!("raftkv_raft_last_log_index").set(status.last_log_index.unwrap_or(0) as f64);
    gauge!("raftkv_raft_has_quorum").set(f64::from(u8::from(has_quorum)));
}
