//! Metrics through the `metrics` facade, exported as Prometheus text by
//! `metrics-exporter-prometheus`: installing the exporter, and the HTTP metrics every server
//! records.
//!
//! For a server whose metrics start with `p` (`kv`, `raftkv`), [`HttpMetrics`] records:
//! - `p_http_requests_total{route, method, status}`: requests answered;
//! - `p_http_request_duration_seconds{route, method, status}`: a histogram of the time from
//!   the request's head to its answer;
//! - `p_http_errors_total{class}`: answers with a 4xx or 5xx status;
//! - `p_http_connections_open`, `p_http_connections_refused_total`,
//!   `p_http_connections_evicted_total`, `p_http_accept_errors_total`: from the server's
//!   [`ConnectionStats`](crate::ConnectionStats).
//!
//! Every histogram whose name ends in `_seconds` gets the buckets of [`LATENCY_BUCKETS`].

use std::time::Duration;

use http::{Method, StatusCode};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::server::ConnectionCounts;

/// Upper bounds of the latency histograms' buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// How often the exporter's histograms are drained.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide Prometheus recorder (once, from within the runtime) and keeps it
/// drained; the handle renders the `/metrics` page.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The HTTP metrics of one server, named with its prefix.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: String,
    duration: String,
    errors: String,
    open: String,
    refused: String,
    evicted: String,
    accept_errors: String,
}

impl HttpMetrics {
    /// The metrics named `{prefix}_http_...`, described to the recorder.
    pub fn new(prefix: &str) -> Self {
        let name = |suffix: &str| format!("{prefix}_http_{suffix}");
        let metrics = Self {
            requests: name("requests_total"),
            duration: name("request_duration_seconds"),
            errors: name("errors_total"),
            open: name("connections_open"),
            refused: name("connections_refused_total"),
            evicted: name("connections_evicted_total"),
            accept_errors: name("accept_errors_total"),
        };
        describe_counter!(
            metrics.requests.clone(),
            "HTTP requests answered, by route, method and status."
        );
        describe_histogram!(
            metrics.duration.clone(),
            metrics::Unit::Seconds,
            "Time from a request's head to its answer, by route, method and status."
        );
        describe_counter!(
            metrics.errors.clone(),
            "HTTP answers with an error status, by class (4xx, 5xx)."
        );
        describe_gauge!(metrics.open.clone(), "HTTP connections open now.");
        describe_counter!(
            metrics.refused.clone(),
            "Connections closed at once for being over max_connections, every connection busy."
        );
        describe_counter!(
            metrics.evicted.clone(),
            "Idle connections closed to make room for a new one at max_connections."
        );
        describe_counter!(
            metrics.accept_errors.clone(),
            "Failed accepts of HTTP connections (e.g. out of file descriptors)."
        );
        metrics
    }

    /// Records one request to `route` answered with `status` after `elapsed`.
    pub fn record(
        &self,
        route: &'static str,
        method: &Method,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = match *method {
            Method::GET => "GET",
            Method::PUT => "PUT",
            Method::POST => "POST",
            Method::DELETE => "DELETE",
            _ => "other",
        };
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        counter!(self.requests.clone(), &labels).increment(1);
        histogram!(self.duration.clone(), &labels).record(elapsed.as_secs_f64());
        let class = if status.is_client_error() {
            "4xx"
        } else if status.is_server_error() {
            "5xx"
        } else {
            return;
        };
        counter!(self.errors.clone(), "class" => class).increment(1);
    }

    /// Sets the connection metrics to `counts` (call it before rendering the page).
    pub fn connections(&self, counts: ConnectionCounts) {
        // Gauges are f64: exact up to 2^53.
        gauge!(self.open.clone()).set(counts.open as f64);
        counter!(self.refused.clone()).absolute(counts.refused);
        counter!(self.evicted.clone()).absolute(counts.evicted);
        counter!(self.accept_errors.clone()).absolute(counts.accept_errors);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    #[test]
    fn requests_are_counted_and_timed_by_route_and_status() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let http = HttpMetrics::new("test");
            http.record(
                "kv",
                &Method::PUT,
                StatusCode::NO_CONTENT,
                Duration::from_millis(3),
            );
            http.record(
                "kv",
                &Method::GET,
                StatusCode::NOT_FOUND,
                Duration::from_millis(1),
            );
            http.connections(ConnectionCounts {
                open: 2,
                refused: 1,
                evicted: 3,
                accept_errors: 0,
            });
        });
        let page = handle.render();
        for line in [
            r#"test_http_requests_total{route="kv",method="PUT",status="204"} 1"#,
            r#"test_http_request_duration_seconds_bucket{route="kv",method="PUT",status="204",le="0.005"} 1"#,
            r#"test_http_request_duration_seconds_bucket{route="kv",method="PUT",status="204",le="0.002"} 0"#,
            r#"test_http_errors_total{class="4xx"} 1"#,
            "test_http_connections_open 2",
            "test_http_connections_refused_total 1",
            "test_http_connections_evicted_total 3",
            "# TYPE test_http_request_duration_seconds histogram",
        ] {
            assert!(page.contains(line), "no {line:?} in\n{page}");
        }
    }
}
