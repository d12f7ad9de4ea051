//! Metrics through the `metrics` facade, exported as Prometheus text on `/metrics` (the
//! exporter and the HTTP metrics are `server_common::metrics`'s).
//!
//! - `kv_http_requests_total{route, method, status}`, `kv_http_request_duration_seconds`
//!   (a histogram, same labels), `kv_http_errors_total{class}`, `kv_http_connections_open`,
//!   `kv_http_connections_refused_total`, `kv_http_accept_errors_total`: the HTTP server.
//! - `kv_http_unauthorized_total`: requests refused with 401.
//! - `kv_cluster_left_members`: members that left gracefully, read at each scrape.
//! - The libraries' own metrics (`datacake_store_*`, `datacake_node_*`, `datacake_rpc_*`),
//!   recorded where they happen; see their READMEs.

use datacake_node::ClusterStatistics;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

/// The prefix of every metric's name.
pub(crate) const PREFIX: &str = "kv";

const UNAUTHORIZED: &str = "kv_http_unauthorized_total";

const LEFT: &str = "kv_cluster_left_members";

/// Installs the process-wide Prometheus recorder (once, at start) and describes this server's
/// own metrics.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = server_common::metrics::install()?;
    describe_counter!(
        UNAUTHORIZED,
        "Requests refused with 401 for a missing or wrong bearer token."
    );
    describe_gauge!(LEFT, "Members that left gracefully.");
    unauthorized_counter().absolute(0);
    Ok(handle)
}

fn unauthorized_counter() -> metrics::Counter {
    counter!(UNAUTHORIZED)
}

/// Counts a request refused for lacking the bearer token.
pub(crate) fn unauthorized() {
    unauthorized_counter().increment(1);
}

/// Sets the metrics read from statistics to their values now (call it before rendering the
/// page).
pub(crate) fn statistics(cluster: &ClusterStatistics) {
    gauge!(LEFT).set(cluster.left_members as f64);
}
