//! Metrics through the `metrics` facade, exported as Prometheus text on `/metrics` by
//! `metrics-exporter-prometheus`.
//!
//! - `raftkv_http_requests_total{route, method, status}`: requests answered.
//! - `raftkv_write_duration_seconds{op, outcome}`: histogram of Raft writes (put, delete,
//!   incr), from the handler's call to the committed and applied answer (forwarding to the
//!   leader included); `outcome` is `ok` or the error code.
//! - `raftkv_raft_*` gauges (role, term, indexes, quorum), read from Raft at each scrape.
//! - `raftkv_http_connections_*` and `raftkv_http_accept_errors_total`, from the server.

use std::time::Duration;

use datacake_raft::{RaftStatus, Role};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use server_common::ConnectionCounts;

const WRITE_DURATION: &str = "raftkv_write_duration_seconds";

/// Upper bounds of the write latency buckets, in seconds.
const WRITE_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

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

/// Installs the process-wide Prometheus recorder (once, at start) and describes the metrics.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(WRITE_DURATION.to_owned()), &WRITE_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    describe_counter!(
        "raftkv_http_requests_total",
        "HTTP requests answered, by route, method and status."
    );
    describe_histogram!(
        WRITE_DURATION,
        Unit::Seconds,
        "Raft writes (put, delete, incr) from the request to the applied answer, by outcome."
    );
    describe_gauge!(
        "raftkv_raft_role",
        "1 for this node's Raft role, 0 for the others."
    );
    describe_gauge!("raftkv_raft_term", "The current Raft term.");
    describe_gauge!(
        "raftkv_raft_applied_index",
        "The last log index applied to the state machine."
    );
    describe_gauge!(
        "raftkv_raft_last_log_index",
        "The last index in this node's log."
    );
    describe_gauge!(
        "raftkv_raft_has_quorum",
        "1 if this node leads and a quorum acknowledged it within the lease."
    );
    describe_gauge!("raftkv_http_connections_open", "HTTP connections open now.");
    describe_counter!(
        "raftkv_http_connections_refused_total",
        "Connections closed at once for being over max_connections."
    );
    describe_counter!(
        "raftkv_http_accept_errors_total",
        "Failed accepts of HTTP connections (e.g. out of file descriptors)."
    );
    Ok(handle)
}

/// Keeps the recorder's histograms drained (the exporter needs it every so often).
pub(crate) async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// Counts one answered request.
pub(crate) fn request(route: &'static str, method: &http::Method, status: http::StatusCode) {
    let method = match *method {
        http::Method::GET => "GET",
        http::Method::PUT => "PUT",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        _ => "other",
    };
    counter!(
        "raftkv_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
}

/// Records one Raft write of kind `op` that took `elapsed` and ended with `outcome`.
pub(crate) fn write(op: &'static str, outcome: &'static str, elapsed: Duration) {
    histogram!(WRITE_DURATION, "op" => op, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// The Prometheus page, with the Raft gauges and connection counters as they are now.
pub(crate) fn render(
    handle: &PrometheusHandle,
    status: &RaftStatus,
    has_quorum: bool,
    connections: ConnectionCounts,
) -> String {
    for (role, name) in ROLES {
        gauge!("raftkv_raft_role", "role" => name).set(f64::from(u8::from(status.role == role)));
    }
    // Gauges are f64: exact up to 2^53, far beyond any term or index reached.
    gauge!("raftkv_raft_term").set(status.term as f64);
    gauge!("raftkv_raft_applied_index").set(status.applied_index.unwrap_or(0) as f64);
    gauge!("raftkv_raft_last_log_index").set(status.last_log_index.unwrap_or(0) as f64);
    gauge!("raftkv_raft_has_quorum").set(f64::from(u8::from(has_quorum)));
    gauge!("raftkv_http_connections_open").set(connections.open as f64);
    counter!("raftkv_http_connections_refused_total").absolute(connections.refused);
    counter!("raftkv_http_accept_errors_total").absolute(connections.accept_errors);
    handle.render()
}
