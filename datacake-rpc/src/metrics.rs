//! What the server reports through the [`metrics`] facade (listed in the crate's README,
//! "Metrics"). Every series is labelled only with names the code registered: the service
//! name of an `RpcService`, or [`UNKNOWN_SERVICE`] for a path no service serves, and an
//! [`ErrorCode`]'s fixed name. Nothing a peer sends becomes a label value.

use std::time::Instant;

use crate::{Body, ErrorCode, Status};

/// Calls that reached the server, by `service`.
pub(crate) const CALLS: &str = "datacake_rpc_server_calls_total";
/// Calls that ended in an error, by `service` and `code`.
pub(crate) const ERRORS: &str = "datacake_rpc_server_errors_total";
/// From a call's arrival to its handler's outcome, by `service`.
pub(crate) const DURATION: &str = "datacake_rpc_server_call_duration_seconds";

/// The `service` label of a call to a path no registered service serves: the path itself
/// comes from the network, so it never becomes a label value.
pub(crate) const UNKNOWN_SERVICE: &str = "unknown";
/// The `code` label of a call abandoned before its handler finished: the caller reset its
/// stream (e.g. its deadline passed) or the server's shutdown grace ran out.
pub(crate) const CANCELLED: &str = "cancelled";

/// One call, from its arrival: counted at once, its outcome recorded by [`finish`](Self::finish)
/// or [`cancel`](Self::cancel).
#[derive(Debug)]
pub(crate) struct CallMetrics {
    service: &'static str,
    started: Instant,
}

impl CallMetrics {
    /// Counts a call to `service` arriving now.
    pub(crate) fn start(service: &'static str) -> Self {
        metrics::counter!(CALLS, "service" => service).increment(1);
        Self {
            service,
            started: Instant::now(),
        }
    }

    /// Records the handler's outcome: its latency, and its error code if it failed.
    pub(crate) fn finish(self, result: &Result<Body, Status>) {
        metrics::histogram!(DURATION, "service" => self.service)
            .record(self.started.elapsed().as_secs_f64());
        if let Err(status) = result {
            metrics::counter!(ERRORS, "service" => self.service, "code" => code_label(status.code))
                .increment(1);
        }
    }

    /// Records a call abandoned before its handler finished.
    pub(crate) fn cancel(self) {
        metrics::counter!(ERRORS, "service" => self.service, "code" => CANCELLED).increment(1);
    }
}

/// The `code` label of an error: a fixed name per [`ErrorCode`] variant (every custom code
/// is `custom`, so the application's codes do not multiply the series).
pub(crate) fn code_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::Internal => "internal",
        ErrorCode::InvalidPayload => "invalid_payload",
        ErrorCode::PayloadTooLarge => "payload_too_large",
        ErrorCode::Connection => "connection",
        ErrorCode::Timeout => "timeout",
        ErrorCode::Custom(_) => "custom",
        ErrorCode::PermissionDenied => "permission_denied",
        ErrorCode::ResourceExhausted => "resource_exhausted",
    }
}
