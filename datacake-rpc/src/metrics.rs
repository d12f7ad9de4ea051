//! What servers and clients report through the [`metrics`] facade (listed in the crate's
//! README, "Metrics"). Every series is labelled only with names the code registered: the
//! service name of an `RpcService`, or [`UNKNOWN_SERVICE`] for a path no service serves, and
//! an [`ErrorCode`]'s fixed name. Nothing a peer sends becomes a label value.

use std::time::Instant;

use crate::{ErrorCode, Status};

/// The `service` label of a call to a path no registered service serves: the path itself
/// comes from the network, so it never becomes a label value.
pub(crate) const UNKNOWN_SERVICE: &str = "unknown";
/// The `code` label of a call abandoned before its outcome: on a server, the caller reset
/// its stream (e.g. its deadline passed) or the shutdown grace ran out before the handler
/// finished; on a client, the caller dropped the call's future before its reply.
pub(crate) const CANCELLED: &str = "cancelled";

/// The names of one side's series.
#[derive(Debug)]
pub(crate) struct Side {
    /// Calls, by `service`.
    pub(crate) calls: &'static str,
    /// Calls that ended in an error, by `service` and `code`.
    pub(crate) errors: &'static str,
    /// From a call's start to its outcome, by `service` (calls that were not cancelled).
    pub(crate) duration: &'static str,
}

/// Calls a server received: timed from their arrival to their handler's outcome.
pub(crate) const SERVER: Side = Side {
    calls: "datacake_rpc_server_calls_total",
    errors: "datacake_rpc_server_errors_total",
    duration: "datacake_rpc_server_call_duration_seconds",
};

/// Calls a client made: timed from `send` to the reply (or the error), deadline included.
pub(crate) const CLIENT: Side = Side {
    calls: "datacake_rpc_client_calls_total",
    errors: "datacake_rpc_client_errors_total",
    duration: "datacake_rpc_client_call_duration_seconds",
};

/// One call, from its start: counted at once, its outcome recorded by
/// [`finish`](Self::finish); dropped unfinished, it counts as [`CANCELLED`].
#[derive(Debug)]
pub(crate) struct CallMetrics {
    side: &'static Side,
    service: &'static str,
    duration: metrics::Histogram,
    started: Instant,
    finished: bool,
}

impl CallMetrics {
    fn started(side: &'static Side, service: &'static str, duration: metrics::Histogram) -> Self {
        Self {
            side,
            service,
            duration,
            started: Instant::now(),
            finished: false,
        }
    }

    /// Records the call's outcome: its latency, and its error code if it failed.
    pub(crate) fn finish<T>(mut self, result: &Result<T, Status>) {
        self.finished = true;
        self.duration.record(self.started.elapsed().as_secs_f64());
        if let Err(status) = result {
            self.error(code_label(status.code()));
        }
    }

    fn error(&self, code: &'static str) {
        metrics::counter!(self.side.errors, "service" => self.service, "code" => code).increment(1);
    }
}

/// One side's series for one service, registered once (with the recorder installed then) so
/// that a call costs no label lookup: a client registers them when it is made, a server when
/// the service is added (and its `unknown` series when it starts). Errors, rarer, are
/// registered when they happen.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    side: &'static Side,
    service: &'static str,
    calls: metrics::Counter,
    duration: metrics::Histogram,
}

impl Series {
    pub(crate) fn new(side: &'static Side, service: &'static str) -> Self {
        Self {
            side,
            service,
            calls: metrics::counter!(side.calls, "service" => service),
            duration: metrics::histogram!(side.duration, "service" => service),
        }
    }

    /// Counts a call starting now.
    pub(crate) fn start(&self) -> CallMetrics {
        self.calls.increment(1);
        CallMetrics::started(self.side, self.service, self.duration.clone())
    }
}

impl Drop for CallMetrics {
    fn drop(&mut self) {
        if !self.finished {
            self.error(CANCELLED);
        }
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
