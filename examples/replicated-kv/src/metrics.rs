//! Metrics through the `metrics` facade, exported as Prometheus text on `/metrics` (the
//! exporter and the HTTP metrics are `server_common::metrics`'s).
//!
//! - `kv_http_requests_total{route, method, status}`, `kv_http_request_duration_seconds`
//!   (a histogram, same labels), `kv_http_errors_total{class}`, `kv_http_connections_open`,
//!   `kv_http_connections_refused_total`, `kv_http_accept_errors_total`: the HTTP server.
//! - `kv_http_unauthorized_total`: requests refused with 401.
//! - `kv_store_*_total` counters and `kv_store_replication_backlog`: the store's
//!   statistics; `kv_cluster_*_members` gauges: membership. Read at each scrape.

use datacake_eventual_consistency::StoreStatistics;
use datacake_node::ClusterStatistics;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusHandle;

/// The prefix of every metric's name.
pub(crate) const PREFIX: &str = "kv";

const UNAUTHORIZED: &str = "kv_http_unauthorized_total";
const BACKLOG: &str = "kv_store_replication_backlog";

/// The store's counters: name, help, value.
fn store_counters(store: &StoreStatistics) -> [(&'static str, &'static str, u64); 11] {
    [
        (
            "kv_store_writes_total",
            "Mutations written through this node.",
            store.writes,
        ),
        (
            "kv_store_replicated_total",
            "Mutations received from peers' write fan-out.",
            store.replicated,
        ),
        (
            "kv_store_repairs_run_total",
            "Anti-entropy repair rounds completed.",
            store.repairs_run,
        ),
        (
            "kv_store_keys_repaired_total",
            "Keys taken from peers by repair.",
            store.keys_repaired,
        ),
        (
            "kv_store_repair_bytes_received_total",
            "Bytes of repair replies received from peers.",
            store.repair_bytes_received,
        ),
        (
            "kv_store_replication_failures_total",
            "Failed replication batches and repair rounds.",
            store.failures,
        ),
        (
            "kv_store_consistency_failures_total",
            "Writes that did not meet their consistency level.",
            store.consistency_failures,
        ),
        (
            "kv_store_clock_skew_rejected_total",
            "Remote timestamps refused for being beyond the clock drift bound.",
            store.clock_skew_rejected,
        ),
        (
            "kv_store_read_repairs_total",
            "Stale versions repaired after reads at a consistency level.",
            store.read_repairs,
        ),
        (
            "kv_store_tombstones_purged_total",
            "Tombstones purged once every member had confirmed them.",
            store.tombstones_purged,
        ),
        (
            "kv_store_obsolete_forgotten_total",
            "Copies forgotten because peers had purged past them.",
            store.obsolete_forgotten,
        ),
    ]
}

/// The membership gauges: name, help, value.
fn cluster_gauges(cluster: &ClusterStatistics) -> [(&'static str, &'static str, usize); 3] {
    [
        (
            "kv_cluster_live_members",
            "Live cluster members, including this node.",
            cluster.live_members,
        ),
        (
            "kv_cluster_dead_members",
            "Members held dead by the failure detector.",
            cluster.dead_members,
        ),
        (
            "kv_cluster_left_members",
            "Members that left gracefully.",
            cluster.left_members,
        ),
    ]
}

/// Installs the process-wide Prometheus recorder (once, at start) and describes the store's
/// and cluster's metrics.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = server_common::metrics::install()?;
    describe_counter!(
        UNAUTHORIZED,
        "Requests refused with 401 for a missing or wrong bearer token."
    );
    for (name, help, _) in store_counters(&StoreStatistics::default()) {
        describe_counter!(name, help);
    }
    for (name, help, _) in cluster_gauges(&ClusterStatistics::default()) {
        describe_gauge!(name, help);
    }
    describe_gauge!(BACKLOG, "Mutations queued for peers and not yet sent.");
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

/// Sets the store's and cluster's metrics to their statistics now (call it before rendering
/// the page).
pub(crate) fn statistics(store: &StoreStatistics, cluster: &ClusterStatistics) {
    for (name, _, value) in store_counters(store) {
        counter!(name).absolute(value);
    }
    for (name, _, value) in cluster_gauges(cluster) {
        gauge!(name).set(value as f64);
    }
    gauge!(BACKLOG).set(store.replication_backlog as f64);
}
