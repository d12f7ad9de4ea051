//! Request counters and the Prometheus text exposition of `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datacake_eventual_consistency::StoreStatistics;
use datacake_node::ClusterStatistics;
use http::{Method, StatusCode};
use server_common::ConnectionStats;

/// Methods counted separately; anything else is `other`.
const METHODS: [&str; 4] = ["GET", "PUT", "DELETE", "other"];

/// HTTP counters, updated once per response; the server counts connections and failed
/// accepts in [`connections`](Self::connections).
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: [AtomicU64; 4],
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    unauthorized: AtomicU64,
    connections: Arc<ConnectionStats>,
}

impl HttpMetrics {
    /// Counts a request refused for lacking the bearer token (also counted by `record`).
    pub(crate) fn unauthorized(&self) {
        self.unauthorized.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection counters, for the server to keep.
    pub(crate) fn connections(&self) -> Arc<ConnectionStats> {
        self.connections.clone()
    }

    /// Counts one request answered with `status`.
    pub(crate) fn record(&self, method: &Method, status: StatusCode) {
        let idx = match *method {
            Method::GET => 0,
            Method::PUT => 1,
            Method::DELETE => 2,
            _ => 3,
        };
        self.requests[idx].fetch_add(1, Ordering::Relaxed);
        if status.is_client_error() {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        } else if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text format of these counters plus the store's and cluster's.
    pub(crate) fn render(&self, store: &StoreStatistics, cluster: &ClusterStatistics) -> String {
        let mut out = String::new();
        out.push_str("# HELP kv_http_requests_total HTTP requests served, by method.\n");
        out.push_str("# TYPE kv_http_requests_total counter\n");
        for (method, count) in METHODS.iter().zip(&self.requests) {
            let _ = writeln!(
                out,
                "kv_http_requests_total{{method=\"{method}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP kv_http_errors_total HTTP responses with an error status, by class.\n",
        );
        out.push_str("# TYPE kv_http_errors_total counter\n");
        let _ = writeln!(
            out,
            "kv_http_errors_total{{class=\"4xx\"}} {}",
            self.client_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "kv_http_errors_total{{class=\"5xx\"}} {}",
            self.server_errors.load(Ordering::Relaxed)
        );
        let connections = self.connections.counts();
        let http = [
            (
                "kv_http_unauthorized_total",
                "counter",
                "Requests refused with 401 for a missing or wrong bearer token.",
                self.unauthorized.load(Ordering::Relaxed),
            ),
            (
                "kv_http_connections_open",
                "gauge",
                "HTTP connections open now.",
                connections.open,
            ),
            (
                "kv_http_connections_refused_total",
                "counter",
                "Connections closed at once for being over --max-connections.",
                connections.refused,
            ),
            (
                "kv_http_accept_errors_total",
                "counter",
                "Failed accepts of HTTP connections (e.g. out of file descriptors).",
                connections.accept_errors,
            ),
        ];
        for (name, kind, help, value) in http {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        let counters = [
            (
                "writes",
                "Mutations written through this node.",
                store.writes,
            ),
            (
                "replicated",
                "Mutations received from peers' write fan-out.",
                store.replicated,
            ),
            (
                "repairs_run",
                "Anti-entropy repair rounds completed.",
                store.repairs_run,
            ),
            (
                "keys_repaired",
                "Keys taken from peers by repair.",
                store.keys_repaired,
            ),
            (
                "repair_bytes_received",
                "Bytes of repair replies received from peers.",
                store.repair_bytes_received,
            ),
            (
                "replication_failures",
                "Failed replication batches and repair rounds.",
                store.failures,
            ),
            (
                "consistency_failures",
                "Writes that did not meet their consistency level.",
                store.consistency_failures,
            ),
            (
                "clock_skew_rejected",
                "Remote timestamps refused for being beyond the clock drift bound.",
                store.clock_skew_rejected,
            ),
            (
                "read_repairs",
                "Stale versions repaired after reads at a consistency level.",
                store.read_repairs,
            ),
            (
                "tombstones_purged",
                "Tombstones purged once every member had confirmed them.",
                store.tombstones_purged,
            ),
            (
                "obsolete_forgotten",
                "Copies forgotten because peers had purged past them.",
                store.obsolete_forgotten,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP kv_store_{name}_total {help}");
            let _ = writeln!(out, "# TYPE kv_store_{name}_total counter");
            let _ = writeln!(out, "kv_store_{name}_total {value}");
        }
        let gauges = [
            (
                "live_members",
                "Live cluster members, including this node.",
                cluster.live_members,
            ),
            (
                "dead_members",
                "Members held dead by the failure detector.",
                cluster.dead_members,
            ),
            (
                "left_members",
                "Members that left gracefully.",
                cluster.left_members,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP kv_cluster_{name} {help}");
            let _ = writeln!(out, "# TYPE kv_cluster_{name} gauge");
            let _ = writeln!(out, "kv_cluster_{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP kv_store_replication_backlog Mutations queued for peers and not yet sent."
        );
        let _ = writeln!(out, "# TYPE kv_store_replication_backlog gauge");
        let _ = writeln!(
            out,
            "kv_store_replication_backlog {}",
            store.replication_backlog
        );
        out
    }
}
